"""TrainingSettingsHook: config.VCF.TRAINING.CUDNN_BENCHMARK sets
torch.backends.cudnn.benchmark when training starts, with any train step."""

import pytest
import torch
from vissl.config import AttrDict

from vissl_clusterfit.config import compose_config
from vissl_clusterfit.hooks import hook_generator
from vissl_clusterfit.hooks.training_settings_hook import (
    TrainingSettings,
    TrainingSettingsHook,
)


@pytest.fixture
def restore_cudnn_benchmark():
    before = torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.benchmark = before


@pytest.mark.parametrize("value", [True, False])
def test_on_start_sets_cudnn_benchmark(value, restore_cudnn_benchmark):
    torch.backends.cudnn.benchmark = not value
    hook = TrainingSettingsHook(TrainingSettings(cudnn_benchmark=value))
    hook.on_start(task=None)
    assert torch.backends.cudnn.benchmark is value


def test_a_value_that_is_not_a_bool_is_refused():
    cfg = AttrDict({"VCF": {"TRAINING": {"CUDNN_BENCHMARK": "yes"}}})
    with pytest.raises(ValueError, match="CUDNN_BENCHMARK='yes'"):
        TrainingSettings.from_config(cfg)


@pytest.mark.parametrize(
    "name, expected",
    [("pretrain/rotnet_fmnist_cpu", False), ("pretrain/rotnet_fmnist_gpu", True)],
)
def test_hook_generator_applies_the_config_first(name, expected):
    cfg = compose_config(
        [f"config=vissl_clusterfit/{name}", "config.CHECKPOINT.DIR=/tmp/vcf_unused"],
        dump_config=False,
    )[1]
    hooks = hook_generator(cfg)
    # first: its on_start runs before the ClusterFit / DeepCluster hooks extract
    assert isinstance(hooks[0], TrainingSettingsHook), hooks
    assert hooks[0].params.cudnn_benchmark is expected
