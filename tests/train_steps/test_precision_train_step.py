"""vcf_precision_train_step (bf16 autocast, channels_last) through VISSL's real trainer
on a CPU, with forked DataLoader workers, the PhaseTimerHook's lines it logs and the
TrainingSettingsHook's cuDNN setting."""

import glob
import math
import os
import re

import pytest
import torch
from vissl.config import AttrDict

from tests.conftest import data_overrides, run_tool
from vissl_clusterfit.runtime.log_lines import PHASE_LINE, PHASE_START_LINE, parse_lines
from vissl_clusterfit.train_steps import precision_train_step
from vissl_clusterfit.train_steps.precision_train_step import (
    STEP_NAME,
    check_precision_config,
)


def _cfg(autocast="", channels_last=False, step="standard_train_step", amp=False):
    return AttrDict(
        {
            "VCF": {"TRAINING": {"AUTOCAST": autocast, "CHANNELS_LAST": channels_last}},
            "TRAINER": {"TRAIN_STEP_NAME": step},
            "MODEL": {"AMP_PARAMS": {"USE_AMP": amp}},
        }
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"autocast": "bfloat16"}, "TRAIN_STEP_NAME=vcf_precision_train_step"),
        ({"channels_last": True}, "TRAIN_STEP_NAME=vcf_precision_train_step"),
        ({"autocast": "float16", "step": STEP_NAME}, "AUTOCAST='float16'"),
        ({"autocast": "bfloat16", "step": STEP_NAME, "amp": True}, "USE_AMP=False"),
    ],
)
def test_precision_settings_that_would_be_ignored_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_precision_config(_cfg(**kwargs))
    check_precision_config(_cfg())  # the defaults pass


class _CountingConfig(AttrDict):
    """A config that counts how often the step reads its VCF section."""

    reads = 0

    def __getattr__(self, name):
        if name == "VCF":
            type(self).reads += 1
        return super().__getattr__(name)


class _Task:
    def __init__(self, cfg) -> None:
        self.config = cfg
        self.device = torch.device("cpu")
        self.base_model = torch.nn.Conv2d(3, 4, 3)


def test_settings_are_read_once_per_run_and_the_task_is_left_alone(monkeypatch):
    """Three steps: the settings are read and the model converted to channels_last at
    the first; every step runs VISSL's step under bf16 autocast; no attribute is set
    on VISSL's task."""
    seen = []

    def standard_step(task):
        on = torch.is_autocast_enabled("cpu")
        seen.append(torch.get_autocast_dtype("cpu") if on else None)

    monkeypatch.setattr(precision_train_step, "standard_train_step", standard_step)
    task = _Task(_CountingConfig(_cfg("bfloat16", True, STEP_NAME)))
    before = set(vars(task))
    for _ in range(3):
        precision_train_step.vcf_precision_train_step(task)
    assert seen == [torch.bfloat16] * 3, seen
    assert _CountingConfig.reads == 1, _CountingConfig.reads
    assert task.base_model.weight.is_contiguous(memory_format=torch.channels_last)
    assert set(vars(task)) == before, set(vars(task)) - before


@pytest.mark.slow
def test_bf16_channels_last_training_with_forked_workers(idx_dir, tmp_path):
    out = str(tmp_path)
    run_tool(
        [
            "config=vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
            f"config.CHECKPOINT.DIR={out}",
            "config.DATA.TRAIN.DATA_LIMIT=64",
            "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16",
            "config.OPTIMIZER.num_epochs=1",
            "config.LOG_FREQUENCY=1",
            "config.DATA.NUM_DATALOADER_WORKERS=2",
            "config.MULTI_PROCESSING_METHOD=fork",
            f"config.TRAINER.TRAIN_STEP_NAME={STEP_NAME}",
            "config.VCF.TRAINING.AUTOCAST=bfloat16",
            "config.VCF.TRAINING.CHANNELS_LAST=True",
            "config.VCF.TRAINING.CUDNN_BENCHMARK=True",
            *data_overrides(idx_dir),
        ]
    )
    assert glob.glob(os.path.join(out, "model_final_checkpoint_phase*.torch"))
    text = open(os.path.join(out, "log.txt")).read()
    losses = [float(x) for x in re.findall(r"loss: ([^;]+);", text)]
    assert losses and all(math.isfinite(x) for x in losses), losses
    # TrainingSettingsHook.on_start ran in the training process
    assert "[vcf] torch.backends.cudnn.benchmark = True" in text
    phases = parse_lines(PHASE_LINE, text)
    assert [p["kind"] for p in phases][:1] == ["train"], phases
    assert phases[0]["steps"] == 4 and phases[0]["images"] == 3 * 16, phases
    # the first batch arrives before the first step (forward + backward) is done
    assert 0 <= phases[0]["first_batch"] <= phases[0]["first_step"], phases
    # the advance split at the iterator's time stamps: the parts add up, no
    # gc.collect (the plugin's default), the workers forked by this first phase
    (start,) = parse_lines(PHASE_START_LINE, text)
    parts = sum(start[k] for k in ("before", "release", "gc", "create", "after"))
    assert abs(parts - start["advance"]) <= 0.03, start
    assert start["advance"] == phases[0]["advance"], (start, phases)
    assert start["gc"] == 0 and start["workers"] == "started", start
