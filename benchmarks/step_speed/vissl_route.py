"""VISSL's route to cluster labels: its ``extract_features`` engine as a subprocess
(``tools/run_distributed_engines.py engine_name=extract_features``; the plugin's compat
patch lets it run on CPU), which writes ``rank*_chunk*_features.npy`` shards, then VISSL
0.1.6's own ``tools/cluster_features_and_label.py:cluster_features`` in-process (reload
with ``ExtractedFeaturesLoader``, L2-normalise, ``faiss.Kmeans``, re-read the shards to
assign, save .pkl + labels .npy)."""

import argparse
import contextlib
import ctypes
import datetime
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, List, Optional

import faiss
import numpy as np
import torch

from benchmarks import plugin
from benchmarks.common import ROOT
from benchmarks.measure import PeakRSS, Timer, children_max_rss_bytes
from benchmarks.step_speed.specs import FeatureSpec, fresh_dir, vissl_overrides


ENGINE_TOOL = os.path.join(ROOT, "tools", "run_distributed_engines.py")

_LOG_LINE = re.compile(
    r"^(?:INFO|WARNING|ERROR|DEBUG) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+):\s*\d+: (.*)"
)


def parse_engine_log(path: str) -> Dict[str, float]:
    """Wall-clock stamps of VISSL's log: first line, start and end of the extraction loop."""
    stamps: Dict[str, float] = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = _LOG_LINE.match(line)
            if not m:
                continue
            t = datetime.datetime.strptime(
                m.group(1), "%Y-%m-%d %H:%M:%S,%f"
            ).timestamp()
            stamps.setdefault("first_log", t)
            if "Extracting features" in m.group(3):
                stamps.setdefault("loop_start", t)
            if m.group(2) == "extract_features.py" and "All Done" in m.group(3):
                stamps["loop_end"] = t
    return stamps


@contextlib.contextmanager
def stdout_to(path: str) -> Iterator[None]:
    """Send fd 1 (C printf included: faiss' verbose k-means) to ``path`` for a while."""
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    saved = os.dup(1)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)


class _TorchWithoutCuda:
    """``torch`` as the VISSL tool sees it when faiss has no GPU: the tool asks faiss
    for a GPU whenever torch sees one, and faiss-cpu has none."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    class cuda:  # noqa: N801
        @staticmethod
        def device_count() -> int:
            return 0


def load_vissl_cluster_tool() -> Any:
    """VISSL 0.1.6's tools/cluster_features_and_label.py (ships in the vissl wheel), as
    a module of its own (its module globals are set here so it runs on faiss-cpu; the
    timed function is called as is)."""
    import vissl

    site = os.path.dirname(os.path.dirname(vissl.__file__))
    path = os.path.join(site, "tools", "cluster_features_and_label.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VISSL's {path} is missing: reinstall vissl==0.1.6")
    spec = importlib.util.spec_from_file_location(
        "vissl_tools_cluster_features_and_label", path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if torch.cuda.device_count() > 0 and faiss.get_num_gpus() == 0:
        module.torch = _TorchWithoutCuda()
    return module


def _engine_run(cmd: List[str], log: str, out_dir: str) -> Dict[str, Any]:
    """One run of the engine subprocess: wall time with start-up, and the start-up-free
    loop time from its log."""
    with open(log, "w") as f:
        t_launch = time.time()
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        t_exit = time.time()
    if proc.returncode != 0:
        with open(log, errors="replace") as f:
            tail = "".join(f.readlines()[-25:])
        return {"error": f"exit code {proc.returncode}; log {log}; last lines:\n{tail}"}
    st = parse_engine_log(log)
    loop = None
    if {"loop_start", "loop_end"} <= st.keys():
        loop = st["loop_end"] - st["loop_start"]
    return {
        "wall_s": t_exit - t_launch,
        "startup_s": st["loop_start"] - t_launch if "loop_start" in st else None,
        "loop_s": loop,
        "launch_to_first_log_s": (
            st["first_log"] - t_launch if "first_log" in st else None
        ),
        "num_shard_files": len(
            [p for p in os.listdir(out_dir) if p.endswith("_features.npy")]
        ),
        "log": log,
    }


def measure_vissl_engine(
    n: int,
    spec: FeatureSpec,
    args: argparse.Namespace,
    ckpt: str,
    run_dir: str,
    transforms: List[Dict[str, Any]],
) -> Dict[str, Any]:
    runs: List[Dict[str, Any]] = []
    out_dir, cmd = "", []
    for r in range(args.repeats):
        out_dir = fresh_dir(os.path.join(run_dir, f"vissl_features_r{r}"))
        overrides = vissl_overrides(n, spec, args, ckpt, out_dir, transforms)
        cmd = [sys.executable, ENGINE_TOOL, "engine_name=extract_features", *overrides]
        run = _engine_run(cmd, os.path.join(run_dir, f"vissl_engine_r{r}.log"), out_dir)
        if "error" in run:
            return {"error": run["error"], "command": shlex.join(cmd)}
        runs.append(run)
        if not args.keep and r < args.repeats - 1:
            shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "runs": runs,
        "features_dir": out_dir,
        "overrides": cmd[3:],
        "command": shlex.join(cmd),
        "children_max_rss_bytes": children_max_rss_bytes(),
    }


def vissl_features_diff(
    engine: Dict[str, Any], spec: FeatureSpec, reference: np.ndarray
) -> Optional[float]:
    """max |difference| of the engine's (reloaded) features and ``reference``; None
    when the shapes differ."""
    from vissl.utils.extract_features_utils import ExtractedFeaturesLoader

    vf = ExtractedFeaturesLoader.load_features(
        engine["features_dir"], "train", spec.layer, flatten_features=True
    )["features"]
    if vf.shape != reference.shape:
        return None
    return float(np.abs(vf - reference).max())


def _set_cluster_config(
    vcfg: Any, k: int, spec: FeatureSpec, args: argparse.Namespace, dirs: Dict[str, str]
) -> None:
    c = vcfg.CLUSTERFIT
    c.NUM_CLUSTERS, c.NUM_ITER, c.OUTPUT_DIR, c.DATA_LIMIT = (
        k,
        args.niter,
        dirs["out"],
        -1,
    )
    c.FEATURES.PATH, c.FEATURES.LAYER_NAME = dirs["features"], spec.layer
    c.FEATURES.DATA_PARTITION, c.FEATURES.TEST_PARTITION = "TRAIN", ""
    c.FEATURES.DATASET_NAME, c.FEATURES.DIMENSIONALITY_REDUCTION = "fashion_mnist", 0


def _labels_in_dataset_order(out_dir: str, n: int) -> Dict[str, Any]:
    """The tool's _labels.npy follows the order in which the shards were listed; its
    .pkl has the sample indices to put the labels back in dataset order."""
    from vissl.utils.io import load_file

    pkl = [p for p in os.listdir(out_dir) if p.endswith(".pkl")][0]
    out = load_file(os.path.join(out_dir, pkl))
    order = np.asarray(out["sample_indices"], dtype=np.int64)
    labels = np.empty(n, dtype=np.int64)
    labels[order] = np.asarray(out["hard_labels"]).reshape(-1)
    return {"labels": labels, "in_order": bool((np.diff(order) > 0).all())}


def measure_vissl_cluster(
    tool: Any,
    vcfg: Any,
    n: int,
    k: int,
    spec: FeatureSpec,
    args: argparse.Namespace,
    features_dir: str,
    run_dir: str,
) -> Dict[str, Any]:
    runs, labels = [], None
    # our in-memory data source has no image paths; the tool only stores them
    tool.get_image_paths = lambda cfg, split: [f"{split.lower()}/{i}" for i in range(n)]
    for r in range(args.repeats):
        out_dir = fresh_dir(os.path.join(run_dir, f"vissl_cluster_K{k}_r{r}"))
        _set_cluster_config(
            vcfg, k, spec, args, {"out": out_dir, "features": features_dir}
        )
        with stdout_to(os.path.join(run_dir, f"vissl_cluster_K{k}_r{r}.log")):
            with PeakRSS() as mem, Timer() as t:
                tool.cluster_features(vcfg)
        result = _labels_in_dataset_order(out_dir, n)
        labels = result["labels"]
        runs.append(
            {
                "cluster_s": t.s,
                "peak_delta_bytes": mem.delta,
                "labels_file_in_dataset_order": result["in_order"],
            }
        )
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
    return {"runs": runs, "labels": labels}


def vissl_cluster_config(engine: Dict[str, Any]) -> Any:
    """The engine's config, as VISSL's cluster tool reads it."""
    _, vcfg = plugin.compose_config(engine["overrides"], dump_config=False)
    return vcfg
