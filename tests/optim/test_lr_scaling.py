"""The ${vcf_linear_lr:...} resolver (VISSL's linear rule with the warm-up kept), and
why the plugin does not use VISSL's own auto_lr_scaling for it."""

import pytest
from omegaconf import OmegaConf

import vissl_clusterfit  # noqa: F401  registers the resolver
from vissl_clusterfit.config import compose_config
from vissl_clusterfit.optim.lr_scaling import linear_scaled_lr


def test_linear_rule_by_hand():
    # 0.1 per 256 images: one GPU x 128, 8 GPUs x 128, 2 nodes x 8 GPUs x 128
    assert linear_scaled_lr(0.1, 256, 128, 1, 1) == 0.05
    assert linear_scaled_lr(0.1, 256, 128, 8, 1) == 0.4
    assert linear_scaled_lr(0.1, 256, 128, 8, 2) == 0.8
    assert linear_scaled_lr(0.05, 256, 32, 8, 1) == 0.05


@pytest.mark.parametrize(
    "args, key",
    [
        ((0.1, 256, 0, 1, 1), "DATA.TRAIN.BATCHSIZE_PER_REPLICA=0"),
        ((0.1, 256, 128, 1.5, 1), "DISTRIBUTED.NUM_PROC_PER_NODE=1.5"),
        ((0.1, 0, 128, 1, 1), "auto_lr_scaling.base_lr_batch_size=0"),
    ],
)
def test_bad_sizes_are_refused_naming_the_key(args, key):
    with pytest.raises(ValueError, match=key):
        linear_scaled_lr(*args)


def test_resolver_reads_the_config_being_composed():
    cfg = OmegaConf.create(
        {
            "config": {
                "DATA": {"TRAIN": {"BATCHSIZE_PER_REPLICA": 64}},
                "DISTRIBUTED": {"NUM_PROC_PER_NODE": 2, "NUM_NODES": 1},
                "OPTIMIZER": {
                    "param_schedulers": {
                        "lr": {"auto_lr_scaling": {"base_lr_batch_size": 256}}
                    }
                },
                "peak": "${vcf_linear_lr:0.2}",
            }
        }
    )
    assert cfg.config.peak == 0.1  # 0.2 x 128 / 256
    cfg.config.DISTRIBUTED.NUM_NODES = 4
    assert cfg.config.peak == 0.4
    with pytest.raises(Exception, match="outside a VISSL config"):
        OmegaConf.create({"peak": "${vcf_linear_lr:0.1}"}).peak


@pytest.mark.parametrize("procs", [1, 8])
def test_vissl_auto_scale_deletes_the_warm_up_on_one_node(procs):
    """Why the resolver: VISSL's own rule (resolve_linear_schedule) gives the same peak
    but turns the warm-up + cosine into a plain cosine on one node, 1 or 8 GPUs."""
    lr = compose_config(
        [
            "config=vissl_clusterfit/pretrain/rotnet_fmnist_gpu",
            f"config.DISTRIBUTED.NUM_PROC_PER_NODE={procs}",
            "config.OPTIMIZER.param_schedulers.lr.auto_lr_scaling.auto_scale=True",
            "config.CHECKPOINT.DIR=/tmp/vcf_unused",
        ],
        dump_config=False,
    )[1].OPTIMIZER.param_schedulers.lr
    assert lr.name == "cosine", lr
    assert lr.start_value == pytest.approx(0.1 * 128 * procs / 256), lr
