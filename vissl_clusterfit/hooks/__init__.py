"""Hooks and the hook generator that adds them to VISSL's defaults.

VISSL has no hook registry: ``launch_distributed`` takes a ``hook_generator(cfg)``.
Ours returns VISSL's ``default_hook_generator(cfg)`` plus the plugin's hooks that the
config enables, and for every run ``RngStateHook`` (resumes bit-identical to an
uninterrupted run). The hook generator is a module-level function so that VISSL's
``torch.multiprocessing.spawn`` can pickle it; unpickling imports this package in each
worker, which registers every component there too.
"""

from typing import List

from classy_vision.hooks import ClassyHook
from vissl.hooks import default_hook_generator

from vissl_clusterfit.config import add_plugin_defaults
from vissl_clusterfit.hooks.clusterfit_hook import ClusterFitHook
from vissl_clusterfit.hooks.deepcluster_hook import DeepClusterHook
from vissl_clusterfit.hooks.phase_timer_hook import PhaseTimerHook
from vissl_clusterfit.hooks.rng_state_hook import RngStateHook
from vissl_clusterfit.hooks.training_settings_hook import (
    TrainingSettings,
    TrainingSettingsHook,
)
from vissl_clusterfit.optim.schedule_length import check_schedules
from vissl_clusterfit.train_steps.precision_train_step import check_precision_config


def hook_generator(cfg) -> List[ClassyHook]:
    # configs that reach us through VISSL's own launcher may lack the plugin's keys
    add_plugin_defaults(cfg)
    check_precision_config(cfg)
    check_schedules(cfg)  # a step schedule longer than the run: refused before any work
    settings = TrainingSettings.from_config(cfg)  # a bad value: refused before any work
    # RngStateHook before VISSL's: its on_phase_end must run before the checkpoint hook
    # writes; TrainingSettingsHook first: its on_start precedes any extraction
    hooks = [
        TrainingSettingsHook(settings),
        RngStateHook(),
        *default_hook_generator(cfg),
    ]
    if cfg.VCF.CLUSTERFIT.ENABLED:
        hooks.append(ClusterFitHook(cfg))
    if cfg.VCF.DEEPCLUSTER.ENABLED:
        hooks.append(DeepClusterHook(cfg))
    # last: its phase times exclude the other hooks' work (checkpoints, clustering)
    hooks.append(PhaseTimerHook())
    return hooks
