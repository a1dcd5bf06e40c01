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
from vissl_clusterfit.cluster_step.training import check_head
from vissl_clusterfit.data.label_sources import CLUSTER_LABEL_SOURCE, reload_labels
from vissl_clusterfit.hooks.base import VcfHook


class ClusterFitHook(VcfHook):
    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        # every key is validated here, before VISSL builds anything
        self.params = ClusterFitParams.from_config(cfg)

    def on_start(self, task: Any) -> None:
        meta = run_cluster_step(self.cfg, self.params, device=task.device)
        dataset = task.datasets.get("train") if hasattr(task, "datasets") else None
        if dataset is None:
            return
        if CLUSTER_LABEL_SOURCE in dataset.label_sources:
            check_head(
                task, int(meta["num_clusters"]), "config.VCF.CLUSTERFIT.NUM_CLUSTERS"
            )
            reload_labels(dataset)
        elif not self.params.distill:
            logging.warning(
                "[vcf] DATA.TRAIN.LABEL_SOURCES does not contain vcf_cluster_labels: "
                "the cluster labels were written but training does not use them"
            )
