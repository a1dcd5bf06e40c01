"""The GPU settings of issue 21 in the shipped configs: forked workers, the warm-up,
and the one-GPU variant of VISSL's ResNet-50 configs."""

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


@pytest.mark.parametrize(
    "name",
    [
        "pretrain/rotnet_fmnist_gpu",
        "pretrain/supervised_fmnist_gpu",
        "clusterfit/ncf_fmnist_gpu",
        "clusterfit/distill_supervised_fmnist_gpu",
    ],
)
def test_lr_04_configs_warm_up(name):
    lr = _compose(f"config=vissl_clusterfit/{name}").OPTIMIZER.param_schedulers.lr
    sched = build_param_scheduler(dict(lr))
    values = [round(sched(w), 5) for w in (0.0, 0.025, 0.05, 0.999)]
    # linear from the final value to the peak over the first 5%, then the cosine
    assert values[0] == lr.end_value < 0.001, values
    assert values[1] == pytest.approx((lr.end_value + 0.4) / 2, abs=1e-4), values
    assert values[2] == 0.4 and values[3] < 0.001, values


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
