"""The one place the benchmarks import vissl_clusterfit's internals.

Everything the benchmarks need from the package comes through this module, so when the
package is reorganised (as when the cluster step moved from ``hooks/`` to
``cluster_step/``) only these imports are retargeted. ``LAYERS`` is the package's one
definition of the probed layers (``vissl_clusterfit.experiments.pipeline.report``). Where a public, config-driven contract exists the benchmarks use
it instead: the cluster step's label files and its meta file
``<OUTPUT_DIR>/<NAME>_meta.json`` (with ``"time_s": {"extract", "cluster"}``).

Importing this module imports vissl_clusterfit, which registers the plugin's components
with VISSL and applies its compat patches (``checkpoint_load`` captures classy-vision's
upstream ``broadcast_object`` before importing it).
"""

import contextlib
import json
import logging
import re
import time
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch

import vissl_clusterfit  # noqa: F401  registers the plugin, applies the compat patches
from vissl_clusterfit import clustering  # noqa: F401  (pure k-means, PCA, metrics)
from vissl_clusterfit.cluster_step import (  # disk_route, feature_store: scale
    ClusterFitParams,
    disk_route,
    feature_store,
    run_cluster_step as _run_cluster_step,
)
from vissl_clusterfit.cluster_step.extraction import (
    extract_features,
    extraction_dataset as _extraction_dataset,
)
from vissl_clusterfit.cluster_step.extraction_trunks import pool_features
from vissl_clusterfit.cluster_step.npre import build_npre_trunk
from vissl_clusterfit.compat.patches import (
    shutdown_process_group,  # train_loop: VISSL's trainer run in the benchmark's process
)
from vissl_clusterfit.compat.patches import (  # checkpoint_load compares it
    fast_broadcast_object as patched_broadcast_object,
)
from vissl_clusterfit.config import compose_config
from vissl_clusterfit.data import dataset_identity  # the label sets' sample lists
from vissl_clusterfit.data.cluster_labels import label_paths, write_label_files
from vissl_clusterfit.data.fashion_mnist import DEFAULT_PATH as FMNIST_PATH
from vissl_clusterfit.experiments.checkpoints import save_untrained_trunk
from vissl_clusterfit.experiments.cli import split_argv  # control.* vs config.*
from vissl_clusterfit.experiments.control import (  # paired CIs, K chosen on validation
    report as control_report,
)
from vissl_clusterfit.experiments.control.driver import main as control_main
from vissl_clusterfit.experiments.control.probe import (
    cached_probe,  # res5 probe with validation
)
from vissl_clusterfit.experiments.control.settings import ControlSettings, ints, names
from vissl_clusterfit.experiments.pipeline.driver import Pipeline, main as pipeline_main
from vissl_clusterfit.experiments.pipeline.report import LAYERS, accuracy_table
from vissl_clusterfit.experiments.pipeline.settings import PRESETS, PipelineSettings
from vissl_clusterfit.experiments.stats import (  # seed comparisons
    Difference,
    paired_interval,
)
from vissl_clusterfit.hooks import hook_generator  # train_loop: the stages' hooks
from vissl_clusterfit.hooks.base import VcfHook  # every ClassyHook event a no-op
from vissl_clusterfit.io import atomic_write  # stage_archive's copies
from vissl_clusterfit.runtime.log_lines import (  # the run logs' timing lines
    EXTRACTION_LINE,
    PHASE_LINE,
    PHASE_START_LINE,
    parse_lines,
)
from vissl_clusterfit.train_steps.precision_train_step import (
    STEP_NAME as PRECISION_STEP_NAME,
)


__all__ = [
    "Difference",
    "VcfHook",
    "ControlSettings",
    "EXTRACTION_LINE",
    "PHASE_LINE",
    "PHASE_START_LINE",
    "PRECISION_STEP_NAME",
    "PRESETS",
    "FMNIST_PATH",
    "LAYERS",
    "Pipeline",
    "PipelineSettings",
    "accuracy_table",
    "atomic_write",
    "build_npre_trunk",
    "cached_probe",
    "clustering",
    "disk_route",
    "compose_config",
    "control_main",
    "control_report",
    "dataset_identity",
    "dataset_labels",
    "extract_features",
    "extraction_dataset",
    "feature_store",
    "hook_generator",
    "ints",
    "marked_clustering_start",
    "names",
    "paired_interval",
    "parse_lines",
    "patched_broadcast_object",
    "pipeline_main",
    "pool_features",
    "read_step_meta",
    "run_cluster_step",
    "save_untrained_trunk",
    "shutdown_process_group",
    "split_argv",
    "step_features",
    "step_labels",
    "write_label_files",
]


# --------------------------------------------------------------------------- cluster step


def run_cluster_step(cfg: Any, device: torch.device) -> Dict[str, Any]:
    """The ClusterFit extract-and-cluster step for ``cfg`` (an N_cf config), in this
    process, as the hook runs it at the start of N_cf training; returns its meta dict.
    """
    return _run_cluster_step(cfg, ClusterFitParams.from_config(cfg), device)


def _label_prefix(cfg: Any) -> Tuple[str, str]:
    params = ClusterFitParams.from_config(cfg)
    return params.output_dir, params.name


def read_step_meta(cfg: Any) -> Dict[str, Any]:
    """The meta file the cluster step wrote (``<OUTPUT_DIR>/<NAME>_meta.json``): K,
    settings, metrics and its phase times ``time_s: {extract, cluster}`` in seconds."""
    with open(label_paths(*_label_prefix(cfg))["meta"]) as f:
        return json.load(f)


def step_labels(cfg: Any) -> np.ndarray:
    """The cluster ids the step wrote (``<OUTPUT_DIR>/<NAME>_labels.npy``)."""
    return np.load(label_paths(*_label_prefix(cfg))["labels"])


# The INFO record the cluster step logs when its features are extracted and N_pre is
# freed, right before pre-processing and k-means (both the faiss and the distributed
# route log it).
CLUSTERING_START = re.compile(r"^\[vcf\] clustering ")


class _FirstRecord(logging.Handler):
    def __init__(self, pattern: "re.Pattern[str]", callback: Callable[[], None]):
        super().__init__(logging.INFO)
        self.pattern, self.callback = pattern, callback
        self.t: Optional[float] = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.t is None and self.pattern.match(record.getMessage()):
            self.t = time.perf_counter()
            self.callback()


@contextlib.contextmanager
def marked_clustering_start(callback: Callable[[], None]) -> Iterator[_FirstRecord]:
    """Call ``callback()`` once when the cluster step starts clustering (its log record
    ``CLUSTERING_START``), e.g. to split a memory measurement into extraction and
    clustering. A logging handler on the root logger, which is set to INFO meanwhile;
    the step's code is not touched. ``handler.t``: perf_counter at that moment, None
    when the record never came (then the split is unavailable)."""
    root = logging.getLogger()
    handler = _FirstRecord(CLUSTERING_START, callback)
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# --------------------------------------------------------------------------- features


def extraction_dataset(cfg: Any, split: str = "TRAIN") -> Any:
    """The split's VISSL dataset with the cluster step's deterministic extraction
    transforms (``VCF.CLUSTERFIT.TRANSFORMS``) and no labels."""
    transforms = [dict(t) for t in cfg.VCF.CLUSTERFIT.TRANSFORMS]
    return _extraction_dataset(cfg, transforms, split)


def step_features(
    cfg: Any, checkpoint: str, layer: str, pooling: str, device: torch.device
) -> np.ndarray:
    """The features the cluster step clusters, by its public extraction functions
    (N_pre's trunk from ``checkpoint``, the step's dataset, batch and loader workers),
    before any pre-processing."""
    params = ClusterFitParams.from_config(cfg)
    trunk = build_npre_trunk(checkpoint)
    feats = extract_features(
        [(trunk, layer, pooling)],
        extraction_dataset(cfg, "TRAIN"),
        params.batch_size,
        device,
        params.num_workers,
        shard=False,
    )
    assert feats is not None  # shard=False: this process has all of them
    return feats


def dataset_labels(dataset: Any) -> np.ndarray:
    """The class labels of an extraction dataset's (first) data source."""
    return np.asarray(dataset.data_objs[0].get_labels(), dtype=np.int64)
