"""DeepCluster's targets across rounds and resumes (Caron 2018, KTH thesis Sec. 3.3:
re-cluster every T epochs; DeeperCluster, Caron et al. ICCV 2019, Sec. 4).

The state (``round``, ``clustered_epoch``, ``labels``, ``dataset_identity``) is the
DeepCluster hook's classy state, saved by VISSL in every checkpoint: a resumed run
trains on the targets of its round instead of re-clustering from another model, and
never on targets of other images (``deepcluster_images.txt``).
"""

import logging
from typing import Any, Dict, Optional

import numpy as np
import torch

from vissl_clusterfit.cluster_step.deepcluster import recluster
from vissl_clusterfit.cluster_step.deepcluster_params import DeepClusterParams
from vissl_clusterfit.data.dataset_identity import record_images, resumed_images_match


KEY = "config.VCF.DEEPCLUSTER"


def initial_state() -> Dict[str, Any]:
    return {"round": -1, "clustered_epoch": -1, "labels": None}


def due_epoch(params: DeepClusterParams, epoch: int) -> int:
    """The epoch whose round's targets ``epoch`` trains on (every RECLUSTER_EVERY)."""
    return epoch - epoch % params.recluster_every


def resumed_targets(
    params: DeepClusterParams,
    state: Dict[str, Any],
    epoch: int,
    dataset: Any,
    first_install: bool,
) -> Optional[np.ndarray]:
    """The targets to train on at ``epoch`` without clustering, or None when a round
    is due: ``state`` holds the targets of this epoch's round and, at the first install
    of a run (a resume), the training images are the recorded ones (else
    ``ON_DATASET_CHANGE``: an error, or None to re-cluster)."""
    due = due_epoch(params, epoch)
    if state["clustered_epoch"] != due or state["labels"] is None:
        return None
    if first_install:
        if not resumed_images_match(
            dataset,
            state.get("dataset_identity"),
            params.images_file,
            params.on_dataset_change,
            f"{KEY}.ON_DATASET_CHANGE",
        ):
            return None
        logging.info(f"[vcf] DeepCluster: resuming with the targets of epoch {due}")
    return np.asarray(state["labels"])


def next_round(
    params: DeepClusterParams,
    state: Dict[str, Any],
    trunk: torch.nn.Module,
    dataset: Any,
    device: torch.device,
    epoch: int,
) -> Dict[str, Any]:
    """The state after clustering ``dataset`` with ``trunk`` at ``epoch`` (one round
    of :func:`.deepcluster.recluster`; the images' identity recorded with it)."""
    previous = state["labels"]
    labels = recluster(
        params,
        trunk,
        dataset,
        device,
        epoch,
        state["round"] + 1,
        np.asarray(previous) if previous is not None else None,
    )
    identity = record_images(dataset, state.get("dataset_identity"), params.images_file)
    return dict(
        state,
        round=state["round"] + 1,
        clustered_epoch=due_epoch(params, epoch),
        labels=labels,
        dataset_identity=identity,
    )
