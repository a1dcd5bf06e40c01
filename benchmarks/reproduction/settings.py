"""Presets and settings of the ClusterFit reproduction, and what follows from them (the
configs it needs, the models it trains in display order, the hash of its work dir)."""

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, List, Sequence

from benchmarks.common import ROOT


CONFIG_ROOT = os.path.join(ROOT, "vissl_clusterfit", "configs", "config")
PROBE_ORDER = ["linear", "knn", "few10", "few100", "full"]
PROBE_TITLES = {
    "linear": "VISSL linear probe, full labels (top-1 %)",
    "knn": "k-NN (k=20, cosine) (top-1 %)",
    "few10": "logistic regression, 10 labels per class (top-1 %)",
    "few100": "logistic regression, 100 labels per class (top-1 %)",
    "full": "logistic regression, all train labels (top-1 %)",
}


# fmt: off
@dataclasses.dataclass
class Preset:
    scale: str = "cpu"                     # cpu | gpu config variants (width 16 / 64)
    pretexts: str = "rotnet,jigsaw"
    ks: str = "10,50,200"                  # K sweep of N_cf
    seeds: str = "0"
    data_limit: int = 5000                 # pre-training / D_cf images (-1 = 60k)
    epochs: int = 6                        # N_pre and N_cf epochs (N_pre 2x: twice)
    with_2x: bool = True
    with_random: bool = True
    eval_train_limit: int = 5000           # VISSL linear probe: train images (-1 = 60k)
    eval_test_limit: int = 5000            # VISSL linear probe: test images (-1 = 10k)
    eval_epochs: int = 3
    # VISSL linear probes on digits too (probe_checkpoint.py's full-label logistic regression
    # covers digits)
    eval_digits: bool = False
    num_proc: int = 1
    probes: bool = True                    # benchmarks.probe_checkpoint on every checkpoint
    probe_targets: str = "fmnist,digits"
    probe_n_train: int = 5000              # Fashion-MNIST images for k-NN / logistic regression
    probe_n_test: int = 5000               # the same seeded test subset as eval_test_limit
    probe_shots: str = "10,100"
    probe_draws: int = 3                   # few-label draws averaged per probe
    probe_full: str = "digits"             # targets with full-label logistic regression
# fmt: on


PRESETS: Dict[str, Preset] = {
    # smoke test of every code path: numbers mean nothing
    "tiny": Preset(
        ks="5,10",
        data_limit=500,
        epochs=1,
        eval_train_limit=500,
        eval_test_limit=500,
        eval_epochs=1,
        eval_digits=False,
        probe_n_train=500,
        probe_n_test=500,
        probe_draws=1,
    ),
    # about an hour on 2 idle cores with one seed (see the script's docstring)
    "cpu": Preset(),
    # full Fashion-MNIST, ResNet-18 width 64, one GPU per stage
    "gpu": Preset(
        scale="gpu",
        ks="10,50,200,1000",
        seeds="0,1,2",
        data_limit=-1,
        epochs=30,
        eval_train_limit=-1,
        eval_test_limit=-1,
        eval_epochs=28,
        eval_digits=False,
        probe_n_train=-1,
        probe_n_test=-1,
        probe_draws=5,
    ),
}


FLAG_HELP = {
    "scale": "cpu | gpu: which config variants (trunk width 16 / 64)",
    "pretexts": "N_pre pretexts, comma list of rotnet, jigsaw",
    "ks": "K values of N_cf, comma list",
    "seeds": "seeds, comma list: mean and std over them",
    "data_limit": "Fashion-MNIST train images for N_pre / D_cf (-1 = 60k)",
    "epochs": "N_pre and N_cf epochs (N_pre 2x: twice as many)",
    "with_2x": "also N_pre 2x",
    "with_random": "also a random-init trunk",
    "eval_train_limit": "VISSL linear probe train images (-1 = 60k)",
    "eval_test_limit": "VISSL linear probe test images (-1 = 10k)",
    "eval_epochs": "VISSL linear probe epochs",
    "eval_digits": "also VISSL linear probes on digits",
    "num_proc": "processes per VISSL stage",
    "probes": "run benchmarks.probe_checkpoint (k-NN, few-label) on every checkpoint",
    "probe_targets": "probes targets: fmnist,digits",
    "probe_n_train": "probes' Fashion-MNIST train images (-1 = 60k)",
    "probe_n_test": "probes' Fashion-MNIST test images (-1 = 10k)",
    "probe_shots": "labelled images per class of the few-label probes",
    "probe_draws": "few-label draws averaged per probe",
    "probe_full": "targets with a full-label logistic regression",
}

PRETEXTS = ("rotnet", "jigsaw")


def ints(s: str) -> List[int]:
    return [int(x) for x in str(s).split(",") if x.strip()]


def names(s: str) -> List[str]:
    return [x.strip() for x in str(s).split(",") if x.strip()]


def check_pretexts(p: Preset) -> None:
    for pretext in names(p.pretexts):
        if pretext not in PRETEXTS:
            raise ValueError(
                f"--pretexts: '{pretext}' is not one of {', '.join(PRETEXTS)}"
            )


def check_configs(p: Preset) -> None:
    """Fail before hours of compute when a config the pipeline will compose is missing."""
    needed = [f"vissl_clusterfit/benchmark/linear_fmnist_{p.scale}"]
    if p.eval_digits:
        needed.append(f"vissl_clusterfit/benchmark/linear_digits_{p.scale}")
    for pretext in names(p.pretexts):
        needed += [
            f"vissl_clusterfit/pretrain/{pretext}_fmnist_{p.scale}",
            f"vissl_clusterfit/clusterfit/ncf_{pretext}_fmnist_{p.scale}",
        ]
    missing = [
        n for n in needed if not os.path.isfile(os.path.join(CONFIG_ROOT, n + ".yaml"))
    ]
    if missing:
        digits = any("linear_digits" in m for m in missing)
        raise FileNotFoundError(
            f"the pipeline at scale={p.scale} needs configs that do not exist: "
            + ", ".join(missing)
            + f" (under {CONFIG_ROOT}): add them"
            + (", or pass --no-eval-digits" if digits else "")
            + f", or run at another scale than {p.scale}."
        )


def settings_hash(p: Preset, passthrough: Sequence[str]) -> str:
    """Hash of everything that determines the trained models and probe results, so a
    run with other settings never reuses stale checkpoints."""
    keys: Dict[str, Any] = dataclasses.asdict(p)
    keys.pop("seeds")
    blob = json.dumps([keys, list(passthrough)], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def model_order(p: Preset) -> List[str]:
    """Pipeline model labels in display order."""
    out = []
    for pretext in names(p.pretexts):
        out.append(f"N_pre {pretext}")
        if p.with_2x:
            out.append(f"N_pre 2x {pretext}")
        out += [f"N_cf {pretext} K={k}" for k in ints(p.ks)]
    if p.with_random:
        out.append("random init")
    return out


def sorted_probes(probes_: Dict[str, Any]) -> List[str]:
    """Probe names in display order (known ones first, then the rest sorted)."""
    return [p for p in PROBE_ORDER if p in probes_] + sorted(
        p for p in probes_ if p not in PROBE_ORDER
    )
