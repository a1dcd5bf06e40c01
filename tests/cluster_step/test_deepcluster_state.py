"""DeepCluster's resume decision (cluster_step/deepcluster_state.py): which targets a
phase trains on without clustering, and when a round is due."""

from types import SimpleNamespace

import numpy as np
import pytest

from tests.cluster_step.test_step import ncf_cfg
from vissl_clusterfit.cluster_step.deepcluster_state import (
    initial_state,
    resumed_targets,
)
from vissl_clusterfit.cluster_step.extraction import extraction_dataset
from vissl_clusterfit.data.dataset_identity import DatasetChangedError


def _params(tmp_path, on_change="error"):
    return SimpleNamespace(
        recluster_every=2,
        images_file=str(tmp_path / "deepcluster_images.txt"),
        on_dataset_change=on_change,
    )


def _state(clustered_epoch, **extra):
    return dict(initial_state(), round=0, clustered_epoch=clustered_epoch, **extra)


@pytest.mark.parametrize("first_install", [True, False])
def test_targets_of_this_round_are_trained_on_others_are_not(tmp_path, first_install):
    p, labels = _params(tmp_path), [2, 0, 1]
    state = _state(4, labels=labels)
    for epoch in (4, 5):  # RECLUSTER_EVERY=2: epochs 4 and 5 train on epoch 4's round
        got = resumed_targets(p, state, epoch, None, first_install)
        np.testing.assert_array_equal(got, labels, err_msg=f"epoch {epoch}")
    assert resumed_targets(p, state, 6, None, first_install) is None  # a round is due
    assert resumed_targets(p, _state(2, labels=labels), 4, None, first_install) is None
    assert resumed_targets(p, initial_state(), 0, None, first_install) is None


def test_a_resume_on_other_images_reclusters_or_stops(idx_dir, tmp_path):
    cfg = ncf_cfg(idx_dir, tmp_path, "", "config.DATA.TRAIN.DATA_LIMIT=20")
    dataset = extraction_dataset(cfg, [{"name": "ToTensor"}])
    other = {"sha256": "0" * 64, "num_samples": 20, "file": "deepcluster_images.txt"}
    state = _state(0, labels=[0] * 20, dataset_identity=other)
    # the first install after a resume checks the images; later ones do not
    assert resumed_targets(_params(tmp_path), state, 1, dataset, False) is not None
    with pytest.raises(DatasetChangedError, match="ON_DATASET_CHANGE=recluster"):
        resumed_targets(_params(tmp_path), state, 1, dataset, True)
    recluster = _params(tmp_path, "recluster")
    assert resumed_targets(recluster, state, 1, dataset, True) is None
