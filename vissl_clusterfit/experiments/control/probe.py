"""The probes of the control experiment (ClusterFit, Yan et al. 2020, Sec. 3.2, Fig. 3):
a linear classifier (multinomial logistic regression) on *fixed* res5 features, trained
on labelled train images, selected on validation images carved from the train split,
scored on the test split. Features: the trunk in eval mode, res5 average-pooled to a
2x2 grid (as ``linear_eval.yaml`` pools res5; 512 dims at width 16), on the cluster
step's deterministic extraction transforms.

Targets (``TARGET_NAMES``), from three extractions per checkpoint: ``fmnist10`` (the 10
classes), ``fmnist5`` (the 5 coarse groups), ``tops4`` (the 4 kinds of tops, the tops
among the same images), ``digits10`` (scikit-learn's digits, 1257 / 540 split).

Fashion-MNIST splits (``fmnist_splits``), within the seeded permutation that also draws
D_pre (``DATA_LIMIT_SAMPLING.SEED``): D_pre = D_cf is its first ``data_limit``, the
probe's train images its first ``probe_train`` (the paper probes on D_pre's own images),
validation the next ``probe_val`` after both: no network or probe trained on them.
Digits: a stratified fifth of its train split. Accuracies are top-1 in percent.
"""

import json
import os
import time
import warnings
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from vissl_clusterfit.cluster_step.extraction import (
    extract_features,
    extraction_dataset,
)
from vissl_clusterfit.cluster_step.extraction_trunks import SingleFeatureTrunk
from vissl_clusterfit.cluster_step.npre import build_npre_trunk
from vissl_clusterfit.config import compose_config
from vissl_clusterfit.data.fashion_mnist_coarse import FINE_TO_COARSE
from vissl_clusterfit.data.fashion_mnist_tops import TOPS_FINE_LABELS
from vissl_clusterfit.io import atomic_write


TARGET_NAMES = ("fmnist10", "fmnist5", "tops4", "digits10")
FMNIST_TRAIN_SIZE = 60000
DIGITS_VAL_FRACTION = 0.2  # of digits' 1257 train images, stratified, seed 0
MAX_ITER = 1000  # lbfgs iterations of the logistic regression
C = 1.0  # its inverse L2 strength (scikit-learn's default), on standardised features
LINEAR_CONFIG = "vissl_clusterfit/benchmark/linear_fmnist_cpu"


def fmnist_splits(n_pretrain: int, n_train: int, n_val: int) -> Dict[str, List[int]]:
    """``[DATA_LIMIT, SKIP_NUM_SAMPLES]`` of the probe's train and validation images
    within the permutation that also gives D_pre (``DATA_LIMIT=n_pretrain``, skip 0):
    train = its first ``n_train``, validation = the ``n_val`` after D_pre and train."""
    if min(n_pretrain, n_train, n_val) < 1:
        raise ValueError(
            f"control.data_limit={n_pretrain}, control.probe_train={n_train} and "
            f"control.probe_val={n_val} must all be >= 1 (the validation images are "
            "carved from the train images that D_pre leaves out)"
        )
    used = max(n_pretrain, n_train)
    if used + n_val > FMNIST_TRAIN_SIZE:
        raise ValueError(
            f"D_pre ({n_pretrain}) / probe train ({n_train}) images plus {n_val} "
            f"validation images exceed Fashion-MNIST's {FMNIST_TRAIN_SIZE} train images: "
            "lower control.data_limit or control.probe_val"
        )
    return {"train": [n_train, 0], "val": [n_val, used]}


def stratified_holdout(
    labels: np.ndarray, fraction: float, seed: int
) -> Tuple[np.ndarray, np.ndarray]:
    """(train positions, validation positions), sorted: ``round(fraction * n_c)`` (at
    least 1) of every class c go to validation, drawn with ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction {fraction} must lie in (0, 1)")
    rng = np.random.RandomState(seed)
    val: List[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        val.append(rng.choice(members, take, replace=False))
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def choose_k(val_accuracy: Dict[int, float]) -> int:
    """The K of the best validation accuracy; ties go to the smaller K."""
    if not val_accuracy:
        raise ValueError("choose_k needs the validation accuracy of at least one K")
    return min(val_accuracy, key=lambda k: (-val_accuracy[k], k))


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    evals: Dict[str, Tuple[np.ndarray, np.ndarray]],
    C: float = 1.0,
    max_iter: int = 1000,
) -> Dict[str, Any]:
    """Logistic regression (L2, lbfgs) on features standardised with the train
    statistics, fitted once; top-1 (%) on each ``evals`` split and ``converged``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    clf = LogisticRegression(C=C, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit((x_train - mean) / std, y_train)
    out: Dict[str, Any] = {
        "converged": not any(
            issubclass(w.category, ConvergenceWarning) for w in caught
        ),
        "n_train": int(len(y_train)),
    }
    for name, (x, y) in evals.items():
        pred = clf.predict((x - mean) / std)
        out[name] = round(100.0 * float((pred == y).mean()), 2)
    return out


class Res5Grid(SingleFeatureTrunk):
    """A trunk with one feature, ``res5grid``: res5 average-pooled to a 2x2 grid and
    flattened, for ``extract_features``."""

    def __init__(self, trunk: torch.nn.Module) -> None:
        super().__init__(trunk, "res5grid")

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        res5 = self.module(x, out_feat_keys=["res5"])[0]
        return torch.nn.functional.adaptive_avg_pool2d(res5, 2).flatten(1)


_DATASETS: Dict[Tuple, Any] = {}


def _dataset(name: str, split: str, limit_skip: Sequence[int], data_path: str) -> Any:
    """A VISSL dataset with the extraction transforms (built once per process)."""
    key = (name, split, tuple(limit_skip), data_path)
    if key not in _DATASETS:
        over = [f"config={LINEAR_CONFIG}", "config.CHECKPOINT.DIR=/tmp/vcf_control"]
        if name == "digits":
            over += [
                f"config.DATA.{split}.DATA_SOURCES=[vcf_digits]",
                f"config.DATA.{split}.DATA_PATHS=[sklearn]",
                f"config.DATA.{split}.DATASET_NAMES=[digits]",
                f"config.DATA.{split}.DATA_LIMIT=-1",
            ]
        else:
            limit, skip = limit_skip
            over += [
                f"config.DATA.{split}.DATA_PATHS=[{data_path}]",
                f"config.DATA.{split}.DATA_LIMIT={limit}",
                f"config.DATA.{split}.DATA_LIMIT_SAMPLING.SKIP_NUM_SAMPLES={skip}",
            ]
        _, cfg = compose_config(over, dump_config=False)
        transforms = [dict(t) for t in cfg.VCF.CLUSTERFIT.TRANSFORMS]
        _DATASETS[key] = extraction_dataset(cfg, transforms, split)
    return _DATASETS[key]


def _features(trunk: torch.nn.Module, dataset: Any) -> Tuple[np.ndarray, np.ndarray]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    feats = extract_features(
        [(Res5Grid(trunk), "res5grid", "flatten")], dataset, 256, device, shard=False
    )
    labels = np.asarray(dataset.data_objs[0].get_labels(), dtype=np.int64)
    return feats, labels


def _target_views(
    feats: Dict[str, Tuple[np.ndarray, np.ndarray]], target: str
) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """(features, labels) per split (train, val, test) of one target."""
    if target == "digits10":
        return {s: feats["digits_" + s] for s in ("train", "val", "test")}
    out = {}
    for split in ("train", "val", "test"):
        x, y = feats["fmnist_" + split]
        if target == "fmnist5":
            y = FINE_TO_COARSE[y]
        elif target == "tops4":
            keep = np.isin(y, TOPS_FINE_LABELS)
            remap = np.full(10, -1, dtype=np.int64)
            remap[list(TOPS_FINE_LABELS)] = np.arange(len(TOPS_FINE_LABELS))
            x, y = x[keep], remap[y[keep]]
        out[split] = (x, y)
    return out


def probe_checkpoint(
    checkpoint: str, targets: Sequence[str], settings: Dict[str, Any]
) -> Dict[str, Any]:
    """Validation and test top-1 of the res5 linear probe of ``checkpoint`` on each
    target. ``settings``: data_limit (D_pre's images), probe_train, probe_val,
    probe_test, data_path. Returns ``{target: {"val", "test", "n_train",
    "converged"}, "time_s": {"extract", "fit"}}``."""
    t0, s = time.time(), settings
    splits = fmnist_splits(s["data_limit"], s["probe_train"], s["probe_val"])
    splits["test"] = [s["probe_test"], 0]
    trunk = build_npre_trunk(checkpoint)
    feats: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    if any(t != "digits10" for t in targets):
        for split, limit_skip in splits.items():
            vissl_split = "TEST" if split == "test" else "TRAIN"
            ds = _dataset("fmnist", vissl_split, limit_skip, s["data_path"])
            feats["fmnist_" + split] = _features(trunk, ds)
    if "digits10" in targets:
        x, y = _features(trunk, _dataset("digits", "TRAIN", (-1, 0), ""))
        tr, va = stratified_holdout(y, DIGITS_VAL_FRACTION, seed=0)
        feats["digits_train"], feats["digits_val"] = (x[tr], y[tr]), (x[va], y[va])
        feats["digits_test"] = _features(trunk, _dataset("digits", "TEST", (-1, 0), ""))
    t_extract = time.time() - t0
    out: Dict[str, Any] = {}
    for target in targets:
        views = _target_views(feats, target)
        evals = {"val": views["val"], "test": views["test"]}
        out[target] = linear_probe(*views["train"], evals, C, MAX_ITER)
    fit = time.time() - t0 - t_extract
    out["time_s"] = {"extract": round(t_extract, 2), "fit": round(fit, 2)}
    return out


def cached_probe(
    checkpoint: str, targets: Sequence[str], settings: Dict[str, Any], path: str
) -> Tuple[Dict[str, Any], bool]:
    """``probe_checkpoint`` unless ``path`` holds its result for the same checkpoint
    file and settings; returns (result, computed now?)."""
    stat = os.stat(checkpoint)
    key = {
        "checkpoint": os.path.abspath(checkpoint),
        "mtime": stat.st_mtime,
        "size": stat.st_size,
        "targets": sorted(targets),
        "probe": {"C": C, "max_iter": MAX_ITER, "features": "res5 2x2 avg"},
        **settings,
    }
    if os.path.isfile(path):
        with open(path) as f:
            cached = json.load(f)
        if cached.get("key") == json.loads(json.dumps(key)):
            return cached["result"], False
    result = probe_checkpoint(checkpoint, targets, settings)
    payload = json.dumps({"key": key, "result": result}, indent=1)
    atomic_write(path, lambda f: f.write(payload.encode()))
    return result, True
