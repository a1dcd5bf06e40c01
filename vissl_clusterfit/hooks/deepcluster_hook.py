"""``DeepClusterHook``: DeepCluster / DeeperCluster re-clustering inside VISSL training.

DeepCluster (Caron 2018, KTH thesis Ch. 3-4) and DeeperCluster (Caron et al. ICCV 2019,
Sec. 4). At the start of every T-th epoch the hook runs one round
(``cluster_step.recluster``: extract, cluster, log metrics), installs the labels in the
train dataset (with a loader sampling uniformly over clusters, thesis Sec. 3.3) and
re-initialises the cluster head with its optimizer state (Sec. 3.4).

Resume: the labels of the current round are part of the hook's classy state, which
VISSL saves in every checkpoint; whether a phase resumes them or re-clusters is decided
by ``cluster_step.deepcluster_state``.

Config params: ``config.VCF.DEEPCLUSTER`` (configs/vissl_clusterfit_defaults/plugin.yaml).
"""

import copy
import logging
from typing import Any, Dict

import numpy as np

from vissl_clusterfit.cluster_step import DeepClusterParams
from vissl_clusterfit.cluster_step.bad_images import name_failing_images
from vissl_clusterfit.cluster_step.deepcluster_state import (
    KEY,
    initial_state,
    next_round,
    resumed_targets,
)
from vissl_clusterfit.cluster_step.extraction import extraction_dataset
from vissl_clusterfit.cluster_step.param_checks import transforms_list
from vissl_clusterfit.cluster_step.runtime_checks import (
    check_resume_head,
    check_transforms_fit,
)
from vissl_clusterfit.cluster_step.training import (
    check_head_input,
    install_labels,
    reset_head,
)
from vissl_clusterfit.hooks.base import VcfHook


class DeepClusterHook(VcfHook):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg, DeepClusterParams.from_config(cfg))
        if not self.params.deeper:  # the trainer loads the checkpoint before on_start
            check_resume_head(cfg, self.params.head_classes, f"{KEY}.NUM_CLUSTERS")
        self.state: Dict[str, Any] = initial_state()
        self._dataset = None
        self._installed_epoch = None

    def get_classy_state(self) -> Dict[str, Any]:
        return copy.copy(self.state)

    def set_classy_state(self, state: Dict[str, Any]) -> None:
        self.state = dict(state)
        self._installed_epoch = None

    def on_start(self, task: Any) -> None:
        check_head_input(task)  # before the first re-clustering
        check_transforms_fit(task.datasets["train"], "config.DATA.TRAIN.TRANSFORMS")
        name_failing_images(task.datasets["train"])  # a broken image names its file
        saved = self.checkpointed_state(task)
        if saved:
            self.set_classy_state(saved)
            logging.info(f"[vcf] DeepCluster: restored round {saved['round']}")

    def on_phase_start(self, task: Any) -> None:
        if not task.train:
            return
        epoch = task.train_phase_idx
        labels = resumed_targets(
            self.params,
            self.state,
            epoch,
            task.datasets["train"],
            first_install=self._installed_epoch is None,
        )
        if labels is not None:
            self._install(task, labels, epoch, reset=False)
            return
        if self._dataset is None:
            self._dataset = extraction_dataset(
                self.cfg,
                transforms_list(self.params.transforms),
                "TRAIN",
                f"{KEY}.TRANSFORMS",
            )
            name_failing_images(self._dataset)
        trunk = task.base_model.trunk
        self.state = next_round(
            self.params, self.state, trunk, self._dataset, task.device, epoch
        )
        self._install(task, self.state["labels"], epoch, reset=self.params.reset_head)

    def _install(self, task: Any, labels: np.ndarray, epoch: int, reset: bool) -> None:
        install_labels(task, self.cfg, labels, epoch, self.params.uniform_sampling)
        if reset:
            reset_head(task, self.params.seed + 1000 + self.state["round"])
        self._installed_epoch = epoch
