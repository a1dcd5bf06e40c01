"""``ClusterFitHook``: ClusterFit's cluster step at the start of an N_cf training run.

ClusterFit (Yan et al., CVPR 2020, Sec. 3.1). On ``on_start`` (also on resume, where
matching label files are reused) the hook runs ``cluster_step.run_cluster_step`` and
hands the labels to the train dataset. Everything else lives in
``vissl_clusterfit.cluster_step``.

Config params: ``config.VCF.CLUSTERFIT`` (configs/vissl_clusterfit_defaults/plugin.yaml).
"""

import logging
from typing import Any

from vissl_clusterfit.cluster_step import ClusterFitParams, run_cluster_step
from vissl_clusterfit.cluster_step.runtime_checks import (
    check_resume_head,
    check_transforms_fit,
)
from vissl_clusterfit.cluster_step.training import check_head, check_head_input
from vissl_clusterfit.data.label_sources import CLUSTER_LABEL_SOURCE, reload_labels
from vissl_clusterfit.hooks.base import VcfHook


NUM_CLUSTERS_KEY = "config.VCF.CLUSTERFIT.NUM_CLUSTERS"


class ClusterFitHook(VcfHook):
    def __init__(self, cfg: Any) -> None:
        # every key is validated here, before VISSL builds anything
        super().__init__(cfg, ClusterFitParams.from_config(cfg))
        # the trainer loads the checkpoint to resume before on_start
        check_resume_head(cfg, self.params.num_clusters, NUM_CLUSTERS_KEY)

    def on_start(self, task: Any) -> None:
        check_head_input(task)  # before the (long) cluster step
        dataset = task.datasets.get("train") if hasattr(task, "datasets") else None
        if dataset is not None:
            check_transforms_fit(dataset, "config.DATA.TRAIN.TRANSFORMS")
        meta = run_cluster_step(self.cfg, self.params, device=task.device)
        if dataset is None:
            return
        if CLUSTER_LABEL_SOURCE in dataset.label_sources:
            check_head(task, int(meta["num_clusters"]), NUM_CLUSTERS_KEY)
            reload_labels(dataset)
        elif not self.params.distill:
            logging.warning(
                "[vcf] DATA.TRAIN.LABEL_SOURCES does not contain vcf_cluster_labels: "
                "the cluster labels were written but training does not use them"
            )
