"""End to end through VISSL's launcher: two processes when one of them gets no
extraction batch (fewer images than BATCHSIZE x (processes - 1)). The labels must be
those of one process, for ClusterFit's two k-means routes and for DeepCluster."""

import os

import numpy as np
import pytest
import torch

from tests.cluster_step.test_step import save_untrained_npre
from tests.conftest import data_overrides, run_tool
from tests.test_e2e import final_ckpt


FEW = 64  # images, fewer than one extraction batch (BATCHSIZE 256 by default)


@pytest.fixture(scope="module")
def npre(tmp_path_factory):
    return save_untrained_npre(str(tmp_path_factory.mktemp("npre")))


def cluster_labels(idx_dir, npre, out, procs, *extra):
    proc = run_tool(
        [
            "engine_name=vcf_cluster",
            "config=vissl_clusterfit/clusterfit/ncf_rotnet_fmnist_cpu",
            f"config.CHECKPOINT.DIR={out}",
            f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre}",
            "config.VCF.CLUSTERFIT.NUM_CLUSTERS=10",
            f"config.DATA.TRAIN.DATA_LIMIT={FEW}",
            f"config.DISTRIBUTED.NUM_PROC_PER_NODE={procs}",
            *data_overrides(idx_dir, train_labels=False),
            *extra,
        ]
    )
    labels = np.load(os.path.join(out, "clusterfit", "clusterfit_rotnet_labels.npy"))
    return labels, proc.stdout + proc.stderr  # every rank's log lines


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", [[], ["config.VCF.CLUSTERFIT.KMEANS_BACKEND=distributed"]]
)
def test_vcf_cluster_two_processes_with_fewer_images_than_a_batch(
    idx_dir, npre, tmp_path, backend
):
    one, _ = cluster_labels(idx_dir, npre, str(tmp_path / "one"), 1, *backend)
    two, log = cluster_labels(idx_dir, npre, str(tmp_path / "two"), 2, *backend)
    assert one.shape == (FEW,) and len(np.unique(one)) == 10
    np.testing.assert_array_equal(one, two)
    # one rank really had nothing to extract
    assert "extracted 0 x 0 features" in log, log[-3000:]


def deepcluster_labels(idx_dir, out, procs):
    run_tool(
        [
            "config=vissl_clusterfit/deepcluster/deepcluster_fmnist_cpu",
            f"config.CHECKPOINT.DIR={out}",
            "config.VCF.DEEPCLUSTER.NUM_CLUSTERS=8",
            "config.VCF.DEEPCLUSTER.BATCHSIZE=1000",
            f"config.DATA.TRAIN.DATA_LIMIT={FEW}",
            "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16",
            "config.OPTIMIZER.num_epochs=1",
            f"config.DISTRIBUTED.NUM_PROC_PER_NODE={procs}",
            *data_overrides(idx_dir, train_labels=False),
        ]
    )
    checkpoint = torch.load(final_ckpt(out), map_location="cpu", weights_only=False)
    return np.asarray(
        checkpoint["classy_state_dict"]["hooks"]["DeepClusterHook"]["labels"]
    )


@pytest.mark.slow
def test_deepcluster_two_processes_with_fewer_images_than_a_batch(idx_dir, tmp_path):
    one = deepcluster_labels(idx_dir, str(tmp_path / "one"), 1)
    two = deepcluster_labels(idx_dir, str(tmp_path / "two"), 2)
    assert one.shape == (FEW,) and one.max() < 8
    # round 0 clusters the initial network: the same on 1 and 2 processes
    np.testing.assert_array_equal(one, two)
