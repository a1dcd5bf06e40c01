"""Every shipped YAML composes through VISSL's compose, builds its model, and runs a
forward pass on a batch of the size its data gives (a broken config fails CI)."""

import glob
import os

import pytest
import torch

import vissl_clusterfit
from vissl_clusterfit.config import add_plugin_defaults, compose_config, plugin_defaults
from vissl_clusterfit.experiments.pipeline.settings import ncf_seed


CONFIG_ROOT = os.path.join(
    os.path.dirname(vissl_clusterfit.__file__), "configs", "config"
)
CONFIGS = sorted(
    os.path.relpath(p, CONFIG_ROOT)[: -len(".yaml")]
    for p in glob.glob(
        os.path.join(CONFIG_ROOT, "vissl_clusterfit", "**", "*.yaml"), recursive=True
    )
)


def test_configs_are_found():
    assert len(CONFIGS) >= 14, CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_composes_and_builds(name, tmp_path):
    from vissl.models import build_model

    _, cfg = compose_config(
        [f"config={name}", f"config.CHECKPOINT.DIR={tmp_path}"], dump_config=False
    )
    assert cfg.VCF.CLUSTERFIT.NAME  # plugin defaults present
    assert cfg.MACHINE.DEVICE == ("gpu" if name.endswith("_gpu") else "cpu")
    # cuDNN autotuning: gpu.yaml turns it on, the plugin's default leaves it off
    assert cfg.VCF.TRAINING.CUDNN_BENCHMARK is name.endswith("_gpu"), name
    model = build_model(cfg.MODEL, cfg.OPTIMIZER).eval()
    jigsaw = "jigsaw" in name and "/pretrain/" in name
    x = torch.randn(
        2 * (9 if jigsaw else 1), 3, 8 if jigsaw else 28, 8 if jigsaw else 28
    )
    with torch.no_grad():
        out = model(x)
    if "/clusterfit/ncf" in name:
        assert out[0].shape[-1] == cfg.VCF.CLUSTERFIT.NUM_CLUSTERS
    if "/clusterfit/" in name:  # N_cf, distillation: not N_pre's initial weights
        assert cfg.SEED_VALUE == ncf_seed(0) != 0, name
    if "/pretrain/" in name:
        assert cfg.SEED_VALUE == 0, name
    if "/benchmark/" in name:  # a linear probe per layer, one output per class
        tops = "vcf_fashion_mnist_tops" in cfg.DATA.TRAIN.DATA_SOURCES
        classes = 4 if tops else 10
        assert len(out) == 5 and all(o.shape == (2, classes) for o in out), name
    deeper = cfg.VCF.DEEPCLUSTER.DEEPER
    if cfg.VCF.DEEPCLUSTER.ENABLED:
        # the measured settings: DeepCluster pre-activation (deepcluster_preactivation
        # benchmark), DeeperCluster post-ReLU
        assert cfg.VCF.DEEPCLUSTER.PREACTIVATION is (not deeper.ENABLED), name
    if cfg.VCF.DEEPCLUSTER.ENABLED and deeper.ENABLED:
        # head, loss and collator must agree with the two-level k-means (DeeperCluster Eq. 5)
        head = cfg.MODEL.HEAD.PARAMS[0][1]
        loss = cfg.LOSS.vcf_hierarchical_loss
        assert (
            head["num_super_classes"] == loss.num_super_classes == 4 * deeper.NUM_GROUPS
        ), name
        assert head["num_sub_classes"] == loss.num_sub_classes == deeper.NUM_SUB, name
        assert (
            cfg.DATA.TRAIN.COLLATE_FUNCTION_PARAMS.num_sub_classes == deeper.NUM_SUB
        ), name
        assert out[0].shape[-1] == 4 * deeper.NUM_GROUPS * (1 + deeper.NUM_SUB), name


def test_head_follows_num_clusters_override(tmp_path):
    _, cfg = compose_config(
        [
            "config=vissl_clusterfit/clusterfit/ncf_fmnist_cpu",
            "config.VCF.CLUSTERFIT.NUM_CLUSTERS=37",
            f"config.CHECKPOINT.DIR={tmp_path}",
        ],
        dump_config=False,
    )
    assert cfg.MODEL.HEAD.PARAMS[0][1]["dims"] == [128, 37]


def test_add_plugin_defaults_fills_only_missing_keys():
    from vissl.config import AttrDict

    cfg = AttrDict({"VCF": {"CLUSTERFIT": {"NUM_CLUSTERS": 7}}, "MODEL": {"TRUNK": {}}})
    add_plugin_defaults(cfg)
    assert cfg.VCF.CLUSTERFIT.NUM_CLUSTERS == 7
    assert (
        cfg.VCF.CLUSTERFIT.FEATURE_LAYER
        == plugin_defaults()["VCF"]["CLUSTERFIT"]["FEATURE_LAYER"]
    )
    assert cfg.MODEL.TRUNK.VCF_RESNET.DEPTH == 18
