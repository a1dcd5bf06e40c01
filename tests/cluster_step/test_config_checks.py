"""Start-up checks for the traps of a non-Fashion-MNIST run: Fashion-MNIST extraction
transforms on other data, ASSIGN_TEST on the Fashion-MNIST preset's test split, a
cluster head whose input does not match the trunk (N_cf and DeepCluster)."""

import types

import pytest
import torch

import vissl_clusterfit  # noqa: F401
from vissl_clusterfit.cluster_step import ClusterFitParams, DeepClusterParams
from vissl_clusterfit.cluster_step.training import check_head_input, trunk_output_dim
from vissl_clusterfit.config import compose_config
from vissl_clusterfit.hooks.clusterfit_hook import ClusterFitHook
from vissl_clusterfit.hooks.deepcluster_hook import DeepClusterHook


@pytest.fixture
def npre_file(tmp_path):
    # from_config checks only that the checkpoint exists; the head check must fire
    # before anything reads it
    path = tmp_path / "npre.torch"
    path.write_bytes(b"not read")
    return str(path)


def compose(tmp_path, *overrides):
    _, cfg = compose_config(
        [*overrides, f"config.CHECKPOINT.DIR={tmp_path}"], dump_config=False
    )
    return cfg


def test_fashion_mnist_transforms_refused_on_a_folder(tmp_path, npre_file):
    # the user's first try: VISSL's RotNet config, the plugin's keys, the hook on
    cfg = compose(
        tmp_path,
        "config=pretrain/rotnet/rotnet_8gpu_resnet",
        "+vissl_clusterfit_defaults=plugin",
        "config.VCF.CLUSTERFIT.ENABLED=true",
        f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre_file}",
    )
    with pytest.raises(ValueError, match=r"config\.VCF\.CLUSTERFIT\.TRANSFORMS") as e:
        ClusterFitParams.from_config(cfg)
    assert "disk_folder" in str(e.value) and "28" in str(e.value), e.value


def test_ncf_option_sets_imagenet_transforms(tmp_path, npre_file):
    cfg = compose(
        tmp_path,
        "config=pretrain/rotnet/rotnet_8gpu_resnet",
        "+vissl_clusterfit_defaults=ncf",
        f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre_file}",
    )
    params = ClusterFitParams.from_config(cfg)
    assert params.transforms[0] == {"name": "Resize", "size": 256}, params.transforms
    assert params.num_clusters == 16000 and params.niter == 50


def test_fashion_mnist_configs_pass(tmp_path, npre_file):
    cfg = compose(
        tmp_path,
        "config=vissl_clusterfit/clusterfit/ncf_rotnet_fmnist_cpu",
        f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre_file}",
    )
    assert ClusterFitParams.from_config(cfg).transforms[0]["size"] == 28
    DeepClusterParams.from_config(
        compose(tmp_path, "config=vissl_clusterfit/deepcluster/deepcluster_fmnist_cpu")
    )


def test_deepcluster_fashion_mnist_transforms_refused(tmp_path):
    cfg = compose(
        tmp_path,
        "config=vissl_clusterfit/deepcluster/deepcluster_fmnist_cpu",
        "config.DATA.TRAIN.DATA_SOURCES=[disk_folder]",
        "config.DATA.TRAIN.DATASET_NAMES=[imagenet1k_folder]",
    )
    with pytest.raises(ValueError, match=r"config\.VCF\.DEEPCLUSTER\.TRANSFORMS"):
        DeepClusterParams.from_config(cfg)


FMNIST_TEST = [
    "config.DATA.TEST.DATA_SOURCES=[vcf_fashion_mnist]",
    "config.DATA.TEST.DATASET_NAMES=[fashion_mnist]",
    "config.DATA.TEST.DATA_PATHS=[/usr/share/datasets/fashion-mnist]",
]


def test_assign_test_refuses_the_fashion_mnist_preset(tmp_path, npre_file):
    # train on the user's folder, DATA.TEST still the Fashion-MNIST preset's
    cfg = compose(
        tmp_path,
        "config=vissl_clusterfit/clusterfit/ncf_rotnet_resnet50_in1k_gpu",
        f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre_file}",
        *FMNIST_TEST,
    )
    with pytest.raises(ValueError, match="Fashion-MNIST preset") as e:
        ClusterFitParams.from_config(cfg)
    assert "ASSIGN_TEST" in str(e.value) and "disk_folder" in str(e.value)
    # the shipped config assigns the val split of the same catalog entry
    ok = compose(
        tmp_path,
        "config=vissl_clusterfit/clusterfit/ncf_rotnet_resnet50_in1k_gpu",
        f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre_file}",
    )
    assert ClusterFitParams.from_config(ok).assign_test
    # without ASSIGN_TEST the preset's test split is not read: no error
    off = compose(
        tmp_path,
        "config=vissl_clusterfit/clusterfit/ncf_rotnet_resnet50_in1k_gpu",
        f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre_file}",
        "config.VCF.CLUSTERFIT.ASSIGN_TEST=false",
        *FMNIST_TEST,
    )
    assert not ClusterFitParams.from_config(off).assign_test


def _task(cfg):
    from vissl.models import build_model

    model = build_model(cfg.MODEL, cfg.OPTIMIZER)
    return types.SimpleNamespace(
        base_model=model, device=torch.device("cpu"), checkpoint=None
    )


def test_ncf_head_input_checked_before_the_cluster_step(tmp_path, npre_file):
    cfg = compose(
        tmp_path,
        "config=vissl_clusterfit/clusterfit/ncf_rotnet_resnet50_in1k_gpu",
        f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre_file}",
        "config.VCF.CLUSTERFIT.NUM_CLUSTERS=10",
    )
    cfg.MODEL.HEAD.PARAMS = [["mlp", {"dims": [128, 10]}]]  # the user's fmnist head
    task = _task(cfg)
    model = task.base_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"MODEL\.HEAD\.PARAMS") as e:
        # npre_file is not a checkpoint: reaching the cluster step would fail otherwise
        ClusterFitHook(cfg).on_start(task)
    assert "2048" in str(e.value) and "128" in str(e.value), e.value
    assert "MODEL.TRUNK.NAME=resnet" in str(e.value), e.value
    # the check's forward pass left the model as it was (eval-mode pass, no BN update)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training


def test_deepcluster_head_input_checked_at_start(tmp_path):
    cfg = compose(
        tmp_path, "config=vissl_clusterfit/deepcluster/deepcluster_fmnist_cpu"
    )
    cfg.MODEL.HEAD.PARAMS = [["mlp", {"dims": [2048, 100]}]]  # a ResNet-50 head
    with pytest.raises(ValueError, match=r"MODEL\.HEAD\.PARAMS.*outputs 128-d"):
        DeepClusterHook(cfg).on_start(_task(cfg))


def test_matching_heads_pass(tmp_path):
    for config in (
        "vissl_clusterfit/deepcluster/deepcluster_resnet50_in1k_gpu",
        "vissl_clusterfit/deepcluster/deepercluster_fmnist_cpu",
        "vissl_clusterfit/clusterfit/ncf_rotnet_fmnist_cpu",
    ):
        cfg = compose(tmp_path, f"config={config}")
        check_head_input(_task(cfg))


def test_trunk_output_dim_skips_size_dependent_trunks():
    class FlattenTrunk(torch.nn.Module):  # output size follows the image size
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3, stride=2)

        def forward(self, x, names=None):
            return [self.conv(x).flatten(1)]

    assert trunk_output_dim(FlattenTrunk()) is None
