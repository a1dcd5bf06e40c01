"""The GPU settings of issue 21 in the shipped configs: forked workers, the learning
rate scaled by the global batch after a warm-up, cuDNN autotuning, and the one-GPU
variant of VISSL's ResNet-50 configs."""

import pytest
from classy_vision.optim.param_scheduler import build_param_scheduler

from tests.test_configs import CONFIGS
from vissl_clusterfit.config import compose_config


def _compose(*overrides):
    return compose_config(
        [*overrides, "config.CHECKPOINT.DIR=/tmp/vcf_unused"], dump_config=False
    )[1]


@pytest.mark.parametrize("name", [c for c in CONFIGS if c.endswith("_gpu")])
def test_gpu_configs_fork_their_workers_and_keep_them(name):
    cfg = _compose(f"config={name}", *PRESET_GROUPS.get(name, ()))
    assert cfg.MULTI_PROCESSING_METHOD == "fork"
    assert cfg.VCF.DATA.PERSISTENT_WORKERS is True
    assert cfg.VCF.DATA.GC_EACH_PHASE is False


# the in1k N_cf configs sit on VISSL's own GPU configs: the pipeline's presets add
# these groups (experiments/pipeline/settings.py)
PRESET_GROUPS = {
    c: ("+vissl_clusterfit_defaults=[plugin,fork_workers,one_gpu]",)
    for c in CONFIGS
    if c.startswith("vissl_clusterfit/clusterfit/ncf_") and "resnet50_in1k" in c
}


@pytest.mark.parametrize("name", [c for c in CONFIGS if c.endswith("fmnist_cpu")])
def test_cpu_configs_start_no_workers(name):
    cfg = _compose(f"config={name}")
    assert cfg.DATA.NUM_DATALOADER_WORKERS == 0  # so nothing to keep between phases
    assert cfg.VCF.DATA.GC_EACH_PHASE is False


# learning rate at base_lr_batch_size images, base_lr_batch_size: the linear rule's
# inputs per *_gpu training config (issue 21: 0.1 per 256 for the Fashion-MNIST ones;
# the ResNet-50 ones keep their paper's rate at their 8-GPU batch)
LR_RULES = {
    **{
        f"vissl_clusterfit/{n}": (0.1, 256)
        for n in [
            "pretrain/rotnet_fmnist_gpu",
            "pretrain/jigsaw_fmnist_gpu",
            "pretrain/supervised_fmnist_gpu",
            "pretrain/supervised_coarse_fmnist_gpu",
            "clusterfit/ncf_fmnist_gpu",
            "clusterfit/ncf_rotnet_fmnist_gpu",
            "clusterfit/ncf_jigsaw_fmnist_gpu",
            "clusterfit/distill_supervised_fmnist_gpu",
            "deepcluster/deepcluster_fmnist_gpu",
            "deepcluster/deepercluster_fmnist_gpu",
            "clusterfit/ncf_rotnet_resnet50_in1k_gpu",
            "clusterfit/ncf_jigsaw_resnet50_in1k_gpu",
        ]
    },
    "vissl_clusterfit/deepcluster/deepcluster_resnet50_in1k_gpu": (0.05, 256),
    "vissl_clusterfit/deepcluster/deepercluster_resnet50_in1k_gpu": (0.1, 384),
}


def test_every_gpu_training_config_has_its_lr_rule():
    training = {c for c in CONFIGS if c.endswith("_gpu") and "/benchmark/" not in c}
    assert training == set(LR_RULES), training ^ set(LR_RULES)


def _lr_curve(cfg, points=4000):
    lr = dict(cfg.OPTIMIZER.param_schedulers.lr)
    sched = build_param_scheduler(dict(lr, num_epochs=cfg.OPTIMIZER.num_epochs))
    return [float(sched(i / points)) for i in range(points)]


@pytest.mark.parametrize("name", sorted(LR_RULES))
@pytest.mark.parametrize("procs, nodes", [(1, 1), (8, 1), (8, 2)])
def test_gpu_configs_scale_the_lr_by_the_global_batch_after_a_warm_up(
    name, procs, nodes
):
    cfg = _compose(
        f"config={name}",
        f"config.DISTRIBUTED.NUM_PROC_PER_NODE={procs}",
        f"config.DISTRIBUTED.NUM_NODES={nodes}",
    )
    base_value, base_batch = LR_RULES[name]
    global_batch = cfg.DATA.TRAIN.BATCHSIZE_PER_REPLICA * procs * nodes
    peak = base_value * global_batch / base_batch
    # VISSL's own scaling would delete the warm-up on one node (tests/optim/test_lr_scaling.py)
    assert not cfg.OPTIMIZER.param_schedulers.lr.auto_lr_scaling.auto_scale
    curve = _lr_curve(cfg)
    top = curve.index(max(curve))
    assert max(curve) == pytest.approx(peak, rel=1e-6), (name, max(curve), peak)
    # a linear warm-up: iteration 0 well below the peak, rising to it within 5 %
    assert curve[0] < 0.3 * peak, (name, curve[0], peak)
    assert 0 < top <= 0.05 * len(curve), (name, top)
    assert all(a <= b for a, b in zip(curve[:top], curve[1 : top + 1])), name


def test_one_gpu_preset_keeps_the_lr_rule():
    """pipeline.preset=resnet50_in1k_1gpu: one process x 256 = the 8 GPUs' global
    batch, so N_pre (VISSL's RotNet) and N_cf (ours) train at 0.1 x 256 / 256."""
    options = "+vissl_clusterfit_defaults=[plugin,fork_workers,one_gpu]"
    one = "config.DISTRIBUTED.NUM_PROC_PER_NODE=1"
    npre = _compose("config=pretrain/rotnet/rotnet_8gpu_resnet", options, one)
    assert npre.OPTIMIZER.param_schedulers.lr["values"][0] == pytest.approx(0.1)
    ncf = _compose(
        "config=vissl_clusterfit/clusterfit/ncf_rotnet_resnet50_in1k_gpu", options, one
    )
    curve = _lr_curve(ncf)
    assert max(curve) == pytest.approx(0.1) and curve[0] == pytest.approx(0.025)
    for cfg in (npre, ncf):
        assert cfg.DATA.TRAIN.BATCHSIZE_PER_REPLICA == 256
        assert cfg.VCF.TRAINING.CUDNN_BENCHMARK is True


def test_one_gpu_variant_of_vissl_resnet50_config():
    cfg = _compose(
        "config=pretrain/rotnet/rotnet_8gpu_resnet",
        "+vissl_clusterfit_defaults=[plugin,fork_workers,one_gpu]",
    )
    assert cfg.DISTRIBUTED.NUM_PROC_PER_NODE == 1
    assert cfg.MULTI_PROCESSING_METHOD == "fork"
    assert cfg.VCF.DATA.PERSISTENT_WORKERS is True
    assert cfg.TRAINER.TRAIN_STEP_NAME == "vcf_precision_train_step"
    assert (cfg.VCF.TRAINING.AUTOCAST, cfg.VCF.TRAINING.CHANNELS_LAST) == (
        "bfloat16",
        True,
    )
    # VISSL's rule lr = base_value x global batch / base_lr_batch_size: the one
    # process holds the 8 GPUs' global batch, so the 8-GPU learning rate is kept
    scaling = cfg.OPTIMIZER.param_schedulers.lr.auto_lr_scaling
    assert scaling.auto_scale and scaling.base_lr_batch_size == 256
    assert cfg.DATA.TRAIN.BATCHSIZE_PER_REPLICA == 256
