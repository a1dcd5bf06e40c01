"""``DeepClusterHook``: DeepCluster / DeeperCluster re-clustering inside VISSL training.

DeepCluster (Caron 2018, KTH thesis Ch. 3-4) and DeeperCluster (Caron et al. ICCV 2019,
Sec. 4). At the start of every T-th epoch the hook runs one round
(``cluster_step.recluster``: extract, cluster, log metrics), installs the labels in the
train dataset (with a loader sampling uniformly over clusters, thesis Sec. 3.3) and
re-initialises the cluster head with its optimizer state (Sec. 3.4).

Resume: the labels of the current round are part of the hook's classy state, which
VISSL saves in every checkpoint, so a resumed run trains on the same targets instead of
re-clustering from a different model; with the identity of the images they belong to
(``deepcluster_images.txt``), so targets of other images are never resumed.

Config params: ``config.VCF.DEEPCLUSTER`` (configs/vissl_clusterfit_defaults/plugin.yaml).
"""

import copy
import logging
from typing import Any, Dict

import numpy as np

from vissl_clusterfit.cluster_step import DeepClusterParams, recluster
from vissl_clusterfit.cluster_step.bad_images import name_failing_images
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
from vissl_clusterfit.data.dataset_identity import record_images, resumed_images_match
from vissl_clusterfit.hooks.base import VcfHook


KEY = "config.VCF.DEEPCLUSTER"


class DeepClusterHook(VcfHook):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg, DeepClusterParams.from_config(cfg))
        if not self.params.deeper:  # the trainer loads the checkpoint before on_start
            check_resume_head(cfg, self.params.head_classes, f"{KEY}.NUM_CLUSTERS")
        self.state: Dict[str, Any] = {
            "round": -1,
            "clustered_epoch": -1,
            "labels": None,
        }
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
        p, epoch = self.params, task.train_phase_idx
        due = epoch - epoch % p.recluster_every
        restored = (
            self.state["clustered_epoch"] == due and self.state["labels"] is not None
        )
        if restored and self._installed_epoch is None:
            restored = resumed_images_match(
                task.datasets["train"],
                self.state.get("dataset_identity"),
                p.images_file,
                p.on_dataset_change,
                f"{KEY}.ON_DATASET_CHANGE",
            )
        if restored:
            if self._installed_epoch is None:
                logging.info(
                    f"[vcf] DeepCluster: resuming with the targets of epoch {due}"
                )
            self._install(task, np.asarray(self.state["labels"]), epoch, reset=False)
            return
        if self._dataset is None:
            self._dataset = extraction_dataset(
                self.cfg, transforms_list(p.transforms), "TRAIN", f"{KEY}.TRANSFORMS"
            )
            name_failing_images(self._dataset)
        previous = self.state["labels"]
        labels = recluster(
            p,
            task.base_model.trunk,
            self._dataset,
            task.device,
            epoch,
            self.state["round"] + 1,
            np.asarray(previous) if previous is not None else None,
        )
        self.state.update(
            round=self.state["round"] + 1,
            clustered_epoch=due,
            labels=labels,
            dataset_identity=record_images(
                self._dataset, self.state.get("dataset_identity"), p.images_file
            ),
        )
        self._install(task, labels, epoch, reset=p.reset_head)

    def _install(self, task: Any, labels: np.ndarray, epoch: int, reset: bool) -> None:
        install_labels(task, self.cfg, labels, epoch, self.params.uniform_sampling)
        if reset:
            reset_head(task, self.params.seed + 1000 + self.state["round"])
        self._installed_epoch = epoch
