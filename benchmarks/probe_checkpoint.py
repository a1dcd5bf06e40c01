"""Cheap frozen-feature probes of a checkpoint, per layer: k-NN, few-label and (optionally)
full-label logistic regression, on Fashion-MNIST and scikit-learn digits.

The probes themselves are in ``benchmarks.probing`` (k-NN with k=20 on cosine
similarity; logistic regression on 10 and 100 labels per class, mean over seeded draws;
optionally on all labels). This module extracts the features they run on.

Features: the trunk is frozen (eval mode, BatchNorm running statistics); each layer is
average-pooled to a small grid and flattened, as in the linear-eval configs
(``LINEAR_EVAL_FEAT_POOL_OPS_MAP``): conv1/res2 4x4, res3 3x3, res4/res5 2x2 (256-512 dims
for the width-16 trunk). Images get the deterministic extraction transforms
(``VCF.CLUSTERFIT.TRANSFORMS``).

Targets: ``fmnist`` (a seeded subset of ``n_train`` train images, the same subset VISSL's
linear probes use for that size, and ``n_test`` test images, -1 = all 10k) and ``digits``
(scikit-learn's 1797 images, fixed stratified split 1257 / 540; n_train/n_test ignored).
Accuracies are in percent.

Example (from the repository root)::

    .venv/bin/python -m benchmarks.probe_checkpoint \\
        runs/demo/npre_rotnet/model_final_checkpoint_phase7.torch
    .venv/bin/python -m benchmarks.probe_checkpoint runs/demo/random_init/random_init.torch \\
        --config-name vissl_clusterfit/pretrain/rotnet_fmnist_cpu --targets digits

Features are extracted once per (checkpoint, target) and kept in memory only.
"""

import argparse
import collections
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks import plugin
from benchmarks.plugin import LAYERS
from benchmarks.probing import run_probes


# the grids of vissl_clusterfit_defaults/linear_eval.yaml
POOL_GRIDS = {
    "conv1": (4, 4),
    "res2": (4, 4),
    "res3": (3, 3),
    "res4": (2, 2),
    "res5": (2, 2),
}
TARGETS = ("fmnist", "digits")
TARGET_CONFIGS = {
    "fmnist": "vissl_clusterfit/benchmark/linear_fmnist_cpu",
    "digits": "vissl_clusterfit/benchmark/linear_digits_cpu",
}
FMNIST_PATH = "/usr/share/datasets/fashion-mnist"

# (checkpoint, config_name, target, n_train, n_test, batch) -> (features per split, labels)
_FEATURE_CACHE: "collections.OrderedDict[Tuple, Dict[str, Any]]" = (
    collections.OrderedDict()
)
_FEATURE_CACHE_SIZE = 4
_DATASET_CACHE: Dict[Tuple, Any] = {}


class _PooledLayers(torch.nn.Module):
    """A trunk seen as a trunk with one feature, ``pooled``: every layer of ``layers``
    adaptive-average-pooled to its grid, flattened and concatenated (one forward pass for
    all layers), so the plugin's ``extract_features`` can drive it."""

    feat_eval_mapping = {"pooled": "pooled"}

    def __init__(self, trunk: torch.nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        self.trunk = trunk
        self.layers = list(layers)

    def forward(
        self, x: torch.Tensor, out_feat_keys: Optional[List[str]] = None
    ) -> List[torch.Tensor]:
        feats = self.trunk(x, out_feat_keys=self.layers)
        pooled = [
            torch.nn.functional.adaptive_avg_pool2d(f, POOL_GRIDS[name]).flatten(1)
            for name, f in zip(self.layers, feats)
        ]
        return [torch.cat(pooled, 1)]


def _dataset(target: str, split: str, limit: int, data_path: str) -> Any:
    """The VISSL dataset of ``target``/``split`` with the extraction transforms."""
    key = (target, split, limit, data_path)
    if key in _DATASET_CACHE:
        return _DATASET_CACHE[key]
    if target not in TARGET_CONFIGS:
        raise ValueError(f"probe target '{target}' is not one of {', '.join(TARGETS)}")
    overrides = [
        f"config={TARGET_CONFIGS[target]}",
        "config.CHECKPOINT.DIR=/tmp/vcf_probes",
    ]
    if target == "fmnist":
        overrides.append(f"config.DATA.{split}.DATA_LIMIT={limit}")
        if data_path != FMNIST_PATH:
            overrides.append(f"config.DATA.{split}.DATA_PATHS=[{data_path}]")
    _, cfg = plugin.compose_config(overrides, dump_config=False)
    dataset = plugin.extraction_dataset(cfg, split)
    _DATASET_CACHE[key] = dataset
    return dataset


def build_trunk(checkpoint: str, config_name: Optional[str] = None) -> torch.nn.Module:
    """The checkpoint's frozen trunk: model config from ``config_name`` or, by default,
    the train_config.yaml VISSL wrote next to the checkpoint."""
    return plugin.build_npre_trunk(checkpoint, config_name or "")


def layer_slices(trunk: torch.nn.Module, device: torch.device) -> Dict[str, slice]:
    """Columns of each layer in the pooled features (channel counts follow the trunk's
    width: measured on one probe image)."""
    with torch.no_grad():
        x = torch.zeros(1, 3, 28, 28, device=device)
        dims = [f.shape[1] for f in trunk(x, out_feat_keys=list(LAYERS))]
    start, slices = 0, {}
    for name, ch in zip(LAYERS, dims):
        size = ch * POOL_GRIDS[name][0] * POOL_GRIDS[name][1]
        slices[name] = slice(start, start + size)
        start += size
    return slices


def extract_target(
    trunk: torch.nn.Module,
    target: str,
    n_train: int = 10000,
    n_test: int = -1,
    batch_size: int = 256,
    device: Optional[torch.device] = None,
    data_path: str = FMNIST_PATH,
) -> Dict[str, Any]:
    """Pooled features of every layer for the train and test splits of ``target``:
    ``{"train": (N, D), "test": (M, D), "y_train", "y_test", "slices": {layer: slice}}``.
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    wrapped = _PooledLayers(trunk, LAYERS)
    out: Dict[str, Any] = {}
    for split, limit in (("TRAIN", n_train), ("TEST", n_test)):
        dataset = _dataset(
            target, split, limit if target == "fmnist" else -1, data_path
        )
        feats = plugin.extract_features(
            [(wrapped, "pooled", "flatten")], dataset, batch_size, device, shard=False
        )
        out[split.lower()] = feats
        out["y_" + split.lower()] = plugin.dataset_labels(dataset)
    out["slices"] = layer_slices(trunk, device)
    width = out["slices"][LAYERS[-1]].stop
    assert width == out["train"].shape[1], (width, out["train"].shape)
    return out


def cached_features(
    checkpoint: str,
    config_name: Optional[str],
    target: str,
    n_train: int,
    n_test: int,
    batch_size: int = 256,
    device: Optional[torch.device] = None,
    data_path: str = FMNIST_PATH,
) -> Tuple[Dict[str, Any], float]:
    """Features of (checkpoint, target) from the in-memory cache or freshly extracted;
    returns them and the seconds spent (0 when cached)."""
    stat = os.stat(checkpoint)
    key = (
        os.path.abspath(checkpoint),
        stat.st_mtime,
        config_name or "",
        target,
        n_train,
        n_test,
        batch_size,
        data_path,
    )
    if key in _FEATURE_CACHE:
        _FEATURE_CACHE.move_to_end(key)
        return _FEATURE_CACHE[key], 0.0
    t0 = time.time()
    trunk = build_trunk(checkpoint, config_name)
    feats = extract_target(
        trunk, target, n_train, n_test, batch_size, device, data_path
    )
    del trunk
    _FEATURE_CACHE[key] = feats
    while len(_FEATURE_CACHE) > _FEATURE_CACHE_SIZE:
        _FEATURE_CACHE.popitem(last=False)
    return feats, time.time() - t0


def probe_checkpoint(
    checkpoint: str,
    config_name: Optional[str] = None,
    targets: Sequence[str] = TARGETS,
    n_train: int = 10000,
    n_test: int = -1,
    seed: int = 0,
    knn_k: int = 20,
    shots: Sequence[int] = (10, 100),
    draws: int = 5,
    full_label: Sequence[str] = ("digits",),
    max_iter: int = 1000,
    batch_size: int = 256,
    device: Optional[torch.device] = None,
    data_path: str = FMNIST_PATH,
) -> Dict[str, Any]:
    """k-NN, few-label and (for the targets in ``full_label``) full-label logistic
    regression per layer of ``checkpoint`` on each target.

    Args:
        checkpoint: a VISSL checkpoint (training output, or the pipeline's random init).
        config_name: config of the checkpoint's model when there is no train_config.yaml
            next to it (e.g. ``vissl_clusterfit/pretrain/rotnet_fmnist_cpu``).
        targets: ``fmnist`` and/or ``digits``.
        n_train, n_test: Fashion-MNIST train subset (seeded, as VISSL's DATA_LIMIT) and
            test images (-1 = all); digits always uses its 1257 / 540 split.
        seed: seed of the few-label draws.
        shots: labelled images per class of the few-label probes.
        draws: few-label draws averaged per probe.

    Returns ``{"checkpoint", "targets": {target: {"n_train", "n_test", "dims",
    "knn": {layer: %}, "few10": ..., "few100": ..., "full": ..., "time_s"}}}``.
    """
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    for t in list(targets) + list(full_label):
        if t not in TARGETS:
            raise ValueError(f"probe target '{t}' is not one of {', '.join(TARGETS)}")
    out: Dict[str, Any] = {
        "checkpoint": checkpoint,
        "config_name": config_name,
        "seed": seed,
        "knn_k": knn_k,
        "shots": list(shots),
        "draws": draws,
        "targets": {},
    }
    for target in targets:
        feats, t_extract = cached_features(
            checkpoint,
            config_name,
            target,
            n_train,
            n_test,
            batch_size,
            device,
            data_path,
        )
        res = run_probes(
            feats, seed, knn_k, shots, draws, target in full_label, max_iter
        )
        res["time_s"]["extract"] = round(t_extract, 2)
        res["n_train"], res["n_test"] = len(feats["y_train"]), len(feats["y_test"])
        res["dims"] = {l: s.stop - s.start for l, s in feats["slices"].items()}
        out["targets"][target] = res
    return out


# ------------------------------------------------------------------------- CLI


def _table(res: Dict[str, Any]) -> str:
    probes = [p for p in ("knn", "few10", "few100", "full") if res.get(p)]
    probes += [
        p
        for p in res
        if p.startswith("few") and not p.endswith("_std") and p not in probes and res[p]
    ]
    lines = ["probe    " + "".join(f"{l:>8}" for l in LAYERS)]
    for p in probes:
        lines.append(
            f"{p:<9}" + "".join(f"{res[p].get(l, float('nan')):8.2f}" for l in LAYERS)
        )
    return "\n".join(lines)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.probe_checkpoint",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("checkpoint")
    p.add_argument(
        "--config-name",
        default=None,
        help="model config when the checkpoint has no train_config.yaml beside it",
    )
    p.add_argument("--targets", default="fmnist,digits")
    p.add_argument(
        "--n-train",
        type=int,
        default=10000,
        help="Fashion-MNIST train subset (-1 = 60k)",
    )
    p.add_argument(
        "--n-test", type=int, default=-1, help="Fashion-MNIST test images (-1 = 10k)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--knn-k", type=int, default=20)
    p.add_argument(
        "--shots", default="10,100", help="labelled images per class, comma list"
    )
    p.add_argument("--draws", type=int, default=5)
    p.add_argument(
        "--full", default="digits", help="targets with a full-label logistic regression"
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", default="", help="also write the result here")
    return p.parse_args(argv)


def _split(s: str) -> List[str]:
    return [x for x in s.split(",") if x]


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    t0 = time.time()
    result = probe_checkpoint(
        args.checkpoint,
        args.config_name,
        _split(args.targets),
        args.n_train,
        args.n_test,
        args.seed,
        args.knn_k,
        [int(s) for s in _split(args.shots)],
        args.draws,
        _split(args.full),
        batch_size=args.batch_size,
    )
    for target, res in result["targets"].items():
        print(
            f"\n{target}: {res['n_train']} train / {res['n_test']} test images, "
            f"dims {res['dims']}, time {res['time_s']}"
        )
        print(_table(res))
    print(f"\ntotal {time.time() - t0:.1f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
