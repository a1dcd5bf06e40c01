"""ClusterFit (Yan et al., CVPR 2020) reproduced at this machine's scale: does N_cf beat
N_pre (and N_pre trained twice as long) layer by layer?

The paper (Sec. 4.2-4.3, Fig. 4, Table 6) pre-trains N_pre on a proxy task (RotNet,
Jigsaw, ...), clusters its penultimate features with k-means into K groups, trains a new
network N_cf of the same architecture for the same number of epochs on the cluster ids, and
compares linear probes per layer: N_cf beats N_pre, most at the last layers, where N_pre's
features are most specific to its pretext (Jigsaw's res5 the most). Here:

- data: Fashion-MNIST train split without labels (pre-training and D_cf), probes on its
  train/test labels; scikit-learn digits as a transfer target;
- models per seed: RotNet and Jigsaw N_pre, N_pre 2x (2 x epochs), N_cf for a sweep of K
  (N_pre is trained once and shared by every K), and a random-init trunk;
- probes per layer (conv1, res2..res5): VISSL linear probes through the pipeline (full
  labels), and benchmarks/probes.py: k-NN (k=20, cosine), logistic regression on 10 and 100
  labels per class, full-label logistic regression on digits;
- mean and standard deviation over seeds (seed = SEED_VALUE of every stage and the k-means
  seed; the image subsets are fixed);
- an automatically generated comparison: N_cf at its best K vs N_pre and N_pre 2x per layer.

Presets: ``tiny`` (smoke test, 5-10 minutes on 2 cores, numbers meaningless), ``cpu``
(5000 images, 6 epochs, K in 10/50/200, 1 seed: about an hour on 2 otherwise idle cores;
a busy machine is several times slower), ``gpu`` (all 60k images, width-64 trunks, 30
epochs, K up to 1000, 3 seeds; one GPU per stage). Every preset value can be overridden
with a flag (``--seeds 0,1,2``, ``--ks 10,50``...); ``config.X=Y`` arguments go to every
VISSL stage. ``--estimate-from <results json>`` predicts a preset's wall time from the
stage times of an earlier run on this machine (e.g. the tiny one) without running it.

Example::

    .venv/bin/python benchmarks/clusterfit_reproduction.py --preset tiny
    .venv/bin/python benchmarks/clusterfit_reproduction.py --preset cpu \
        --estimate-from benchmarks/results/clusterfit_reproduction_tiny.json
    .venv/bin/python benchmarks/clusterfit_reproduction.py --preset cpu --seeds 0,1,2

Writes benchmarks/results/clusterfit_reproduction_<preset>.{json,md,png} (``--name``
changes the stem). Runs go to benchmarks/_work/clusterfit_reproduction/<name>-<hash of the
settings>/seed<s>/ and are resumed: finished stages and probes are reused on a re-run with
the same settings.
"""

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import common  # noqa: E402  (benchmarks/common.py: machine info, tables, paths)


LAYERS = ["conv1", "res2", "res3", "res4", "res5"]
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
    # VISSL linear probes on digits too (probes.py's full-label logistic regression
    # covers digits)
    eval_digits: bool = False
    num_proc: int = 1
    probes: bool = True                    # benchmarks/probes.py on every checkpoint
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
    # about an hour on 2 idle cores with one seed (see the module docstring)
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
    "probes": "run benchmarks/probes.py (k-NN, few-label) on every checkpoint",
    "probe_targets": "probes.py targets: fmnist,digits",
    "probe_n_train": "probes.py Fashion-MNIST train images (-1 = 60k)",
    "probe_n_test": "probes.py Fashion-MNIST test images (-1 = 10k)",
    "probe_shots": "labelled images per class of the few-label probes",
    "probe_draws": "few-label draws averaged per probe",
    "probe_full": "targets with a full-label logistic regression",
}


def _ints(s: str) -> List[int]:
    return [int(x) for x in str(s).split(",") if x.strip()]


def _names(s: str) -> List[str]:
    return [x.strip() for x in str(s).split(",") if x.strip()]


# --------------------------------------------------------------------------- running


def check_configs(p: Preset) -> None:
    """Fail before hours of compute when a config the pipeline will compose is missing."""
    needed = [f"vissl_clusterfit/benchmark/linear_fmnist_{p.scale}"]
    if p.eval_digits:
        needed.append(f"vissl_clusterfit/benchmark/linear_digits_{p.scale}")
    for pretext in _names(p.pretexts):
        needed += [
            f"vissl_clusterfit/pretrain/{pretext}_fmnist_{p.scale}",
            f"vissl_clusterfit/clusterfit/ncf_{pretext}_fmnist_{p.scale}",
        ]
    missing = [
        n for n in needed if not os.path.isfile(os.path.join(CONFIG_ROOT, n + ".yaml"))
    ]
    if missing:
        raise FileNotFoundError(
            f"the pipeline at scale={p.scale} needs configs that do not exist: "
            + ", ".join(missing)
            + f" (under {CONFIG_ROOT}): add them"
            + (
                ", or pass --no-eval-digits"
                if any("linear_digits" in m for m in missing)
                else ""
            )
            + f", or run at another scale than {p.scale}."
        )


def settings_hash(p: Preset, passthrough: Sequence[str]) -> str:
    """Hash of everything that determines the trained models and probe results, so a
    run with other settings never reuses stale checkpoints."""
    keys = dataclasses.asdict(p)
    keys.pop("seeds")
    blob = json.dumps([keys, list(passthrough)], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def model_order(p: Preset) -> List[str]:
    """Pipeline model labels in display order."""
    out = []
    for pretext in _names(p.pretexts):
        out.append(f"N_pre {pretext}")
        if p.with_2x:
            out.append(f"N_pre 2x {pretext}")
        out += [f"N_cf {pretext} K={k}" for k in _ints(p.ks)]
    if p.with_random:
        out.append("random init")
    return out


def run_seed(
    p: Preset, seed: int, out_dir: str, passthrough: List[str]
) -> Dict[str, Any]:
    """Every pipeline of one seed (one per K, sharing N_pre / N_pre 2x / random init
    through the shared output folder), then probes.py on every checkpoint."""
    from vissl_clusterfit.pipeline import Pipeline, PipelineSettings

    seed_out: Dict[str, Any] = {
        "checkpoints": {},
        "linear": {},
        "clusters": {},
        "stage_time_s": {},
        "probes": {},
        "probe_time_s": {},
        "stages_run_now": [],
    }
    # stage times survive a resume (the pipeline only times the stages it runs)
    times_path = os.path.join(out_dir, "stage_time_s.json")
    if os.path.isfile(times_path):
        with open(times_path) as f:
            seed_out["stage_time_s"] = json.load(f)
    for i, k in enumerate(_ints(p.ks)):
        settings = PipelineSettings(
            output_dir=out_dir,
            pretexts=p.pretexts,
            scale=p.scale,
            num_clusters=k,
            data_limit=p.data_limit,
            epochs=p.epochs,
            # N_pre 2x and random init do not depend on K: the first pipeline makes them
            with_2x=p.with_2x and i == 0,
            with_random=p.with_random and i == 0,
            eval_train_limit=p.eval_train_limit,
            eval_test_limit=p.eval_test_limit,
            eval_epochs=p.eval_epochs,
            eval_digits=p.eval_digits,
            num_proc=p.num_proc,
            seed=seed,
        )
        print(f"\n[repro] seed {seed}, K={k}: pipeline in {out_dir}", flush=True)
        report = Pipeline(settings, passthrough).run()
        seed_out["checkpoints"].update(report["checkpoints"])
        for target, models in report["linear_top1"].items():
            seed_out["linear"].setdefault(target, {}).update(models)
        for pretext, info in report["clusters"].items():
            seed_out["clusters"].setdefault(pretext, {})[str(k)] = {
                "metrics": info["metrics"],
                "time_s": info["time_s"],
            }
        seed_out["stage_time_s"].update(report["stage_time_s"])
        seed_out["stages_run_now"] += list(report["stage_time_s"])
        with open(times_path, "w") as f:
            json.dump(seed_out["stage_time_s"], f, indent=2)
    if p.probes:
        seed_out["probes_run_now"] = []
        for label, ckpt in seed_out["checkpoints"].items():
            result, elapsed, fresh = probe_model(p, label, ckpt, seed, out_dir)
            seed_out["probes"][label], seed_out["probe_time_s"][label] = result, elapsed
            if fresh:
                seed_out["probes_run_now"].append(label)
    return seed_out


def probe_model(
    p: Preset, label: str, ckpt: str, seed: int, out_dir: str
) -> Tuple[Dict[str, Any], float, bool]:
    """probes.py results of one checkpoint (result, seconds, computed now?), reused from
    ``<out_dir>/probes/`` when the checkpoint and probe settings are unchanged."""
    import probes

    config_name = (
        f"vissl_clusterfit/pretrain/rotnet_fmnist_{p.scale}"
        if label == "random init"
        else None
    )
    kwargs = dict(
        targets=_names(p.probe_targets),
        n_train=p.probe_n_train,
        n_test=p.probe_n_test,
        seed=seed,
        shots=_ints(p.probe_shots),
        draws=p.probe_draws,
        full_label=_names(p.probe_full),
    )
    key = {
        "checkpoint": ckpt,
        "mtime": os.path.getmtime(ckpt),
        "config_name": config_name,
        **kwargs,
    }
    slug = label.replace(" ", "_").replace("=", "")
    path = os.path.join(out_dir, "probes", f"{slug}.json")
    if os.path.isfile(path):
        with open(path) as f:
            cached = json.load(f)
        if cached.get("key") == key:
            print(f"[repro] probes {label}: reusing {path}", flush=True)
            return cached["result"], cached["time_s"], False
    print(f"[repro] probes {label}: {ckpt}", flush=True)
    t0 = time.time()
    result = probes.probe_checkpoint(ckpt, config_name, **kwargs)
    elapsed = round(time.time() - t0, 1)
    print(f"[repro] probes {label}: done in {elapsed:.0f}s", flush=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"key": key, "result": result, "time_s": elapsed}, f, indent=2)
    return result, elapsed, True


# --------------------------------------------------------------------------- statistics


def per_seed_accuracies(
    seed_out: Dict[str, Any],
) -> Dict[str, Dict[str, Dict[str, Dict[str, float]]]]:
    """target -> probe -> model -> layer -> top-1 % of one seed."""
    acc: Dict[str, Dict[str, Dict[str, Dict[str, float]]]] = {}
    for target, models in seed_out["linear"].items():
        acc.setdefault(target, {})["linear"] = models
    for model, res in seed_out["probes"].items():
        for target, tres in res["targets"].items():
            for probe in PROBE_ORDER[1:]:
                if tres.get(probe):
                    acc.setdefault(target, {}).setdefault(probe, {})[model] = tres[
                        probe
                    ]
    return acc


def _mean_std(values: List[float]) -> Tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = (
        math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        if n > 1
        else float("nan")
    )
    return mean, std


def aggregate(per_seed: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
    """target -> probe -> model -> layer -> {mean, std (sample, n-1), n, values}."""
    values: Dict[str, Any] = {}
    for seed, acc in per_seed.items():
        for target, probes_ in acc.items():
            for probe, models in probes_.items():
                for model, layers in models.items():
                    for layer, v in layers.items():
                        (
                            values.setdefault(target, {})
                            .setdefault(probe, {})
                            .setdefault(model, {})
                            .setdefault(layer, [])
                            .append((seed, float(v)))
                        )
    stats: Dict[str, Any] = {}
    for target, probes_ in values.items():
        for probe, models in probes_.items():
            for model, layers in models.items():
                for layer, seeded in layers.items():
                    vals = [v for _, v in seeded]
                    mean, std = _mean_std(vals)
                    stats.setdefault(target, {}).setdefault(probe, {}).setdefault(
                        model, {}
                    )[layer] = {
                        "mean": round(mean, 2),
                        "std": None if math.isnan(std) else round(std, 2),
                        "n": len(vals),
                        "values": vals,
                        "seeds": [sd for sd, _ in seeded],
                    }
    return stats


def _cell(s: Optional[Dict[str, Any]]) -> str:
    if not s:
        return "-"
    return f"{s['mean']:.2f}" + (
        f" ± {s['std']:.2f}" if s.get("std") is not None else ""
    )


def _sorted_probes(probes_: Dict[str, Any]) -> List[str]:
    return [p for p in PROBE_ORDER if p in probes_] + sorted(
        p for p in probes_ if p not in PROBE_ORDER
    )


def accuracy_tables(stats: Dict[str, Any], order: List[str]) -> List[Dict[str, Any]]:
    tables = []
    for target in [t for t in ("fmnist", "digits") if t in stats] + [
        t for t in stats if t not in ("fmnist", "digits")
    ]:
        for probe in _sorted_probes(stats[target]):
            models = stats[target][probe]
            rows = []
            for model in [m for m in order if m in models] + [
                m for m in models if m not in order
            ]:
                rows.append(
                    {"model": model, **{l: _cell(models[model].get(l)) for l in LAYERS}}
                )
            tables.append(
                {
                    "title": f"{target}: {PROBE_TITLES.get(probe, probe)}",
                    "target": target,
                    "probe": probe,
                    "columns": ["model"] + LAYERS,
                    "rows": rows,
                }
            )
    return tables


def _diff(a: Dict[str, Any], b: Dict[str, Any]) -> Tuple[float, Optional[float]]:
    """a - b and its standard error over seeds (None with one seed): paired by seed when
    both were measured on the same seeds (N_cf of seed s is trained from N_pre of seed s),
    else Welch's unpaired error."""
    d = a["mean"] - b["mean"]
    if a.get("std") is None or b.get("std") is None:
        return d, None
    if a.get("seeds") == b.get("seeds"):
        _, std = _mean_std([x - y for x, y in zip(a["values"], b["values"])])
        return d, std / math.sqrt(a["n"])
    return d, math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])


def _fmt_diff(d: float, se: Optional[float]) -> str:
    s = f"{d:+.2f}"
    if se is not None:
        s += f" ± {se:.2f}" + (" *" if abs(d) > 2 * se else "")
    return s


def best_k(
    stats: Dict[str, Any], pretext: str, ks: List[int]
) -> Tuple[Optional[int], str]:
    """K of the N_cf with the best mean over layers of the criterion probe: the
    Fashion-MNIST VISSL linear probe when there is one, else Fashion-MNIST k-NN."""
    for target, probe in (
        ("fmnist", "linear"),
        ("fmnist", "knn"),
        ("digits", "linear"),
        ("digits", "knn"),
    ):
        models = stats.get(target, {}).get(probe, {})
        scored = []
        for k in ks:
            m = models.get(f"N_cf {pretext} K={k}")
            if m and all(l in m for l in LAYERS):
                scored.append((sum(m[l]["mean"] for l in LAYERS) / len(LAYERS), k))
        if scored:
            return max(scored)[1], f"{target} {probe}"
    return None, ""


def comparison(
    stats: Dict[str, Any], p: Preset
) -> Tuple[List[Dict[str, Any]], List[str], Dict[str, Any]]:
    """Tables and summary sentences: N_cf (best K) minus N_pre / N_pre 2x per layer, the
    res5 gap for every K, and the change from res4 to res5 (the paper: N_pre's last layer
    is the most specific to its pretext, and ClusterFit helps most there)."""
    tables: List[Dict[str, Any]] = []
    lines: List[str] = []
    data: Dict[str, Any] = {}
    ks = _ints(p.ks)
    res5_gain: Dict[str, List[float]] = {}
    for pretext in _names(p.pretexts):
        k, criterion = best_k(stats, pretext, ks)
        if k is None:
            continue
        ncf = f"N_cf {pretext} K={k}"
        data[pretext] = {"best_k": k, "criterion": criterion, "diffs": {}}
        rows = []
        # per reference: [res5 diffs], (wins, pairs), significant (+, -)
        agg: Dict[str, Dict[str, Any]] = {}
        for target in stats:
            for probe in _sorted_probes(stats[target]):
                models = stats[target][probe]
                if ncf not in models:
                    continue
                for ref in (f"N_pre {pretext}", f"N_pre 2x {pretext}"):
                    if ref not in models:
                        continue
                    short = ref.replace(f" {pretext}", "")
                    a = agg.setdefault(
                        short,
                        {"res5": [], "wins": 0, "pairs": 0, "sig_pos": 0, "sig_neg": 0},
                    )
                    row: Dict[str, Any] = {
                        "probe": f"{target} {probe}",
                        "N_cf minus": short,
                    }
                    wins, diffs = 0, {}
                    for l in LAYERS:
                        if l in models[ncf] and l in models[ref]:
                            d, se = _diff(models[ncf][l], models[ref][l])
                            diffs[l] = {
                                "diff": round(d, 2),
                                "se": None if se is None else round(se, 2),
                            }
                            row[l] = _fmt_diff(d, se)
                            wins += d > 0
                            if se is not None and abs(d) > 2 * se:
                                a["sig_pos" if d > 0 else "sig_neg"] += 1
                    row["N_cf better at"] = f"{wins}/{len(diffs)}"
                    rows.append(row)
                    a["wins"] += wins
                    a["pairs"] += len(diffs)
                    if "res5" in diffs:
                        a["res5"].append(diffs["res5"]["diff"])
                    data[pretext]["diffs"][f"{target} {probe} vs {short}"] = diffs
        tables.append(
            {
                "title": f"{pretext}: N_cf at K={k} (best on {criterion}, mean over layers) "
                "minus N_pre / N_pre 2x, per layer",
                "columns": ["probe", "N_cf minus"] + LAYERS + ["N_cf better at"],
                "rows": rows,
            }
        )
        for short, a in agg.items():
            if not a["res5"]:
                continue
            pos = sum(d > 0 for d in a["res5"])
            sig = (
                f"; beyond 2 SE: {a['sig_pos']} better, {a['sig_neg']} worse"
                if a["sig_pos"] + a["sig_neg"] or len(_ints(p.seeds)) > 1
                else ""
            )
            n5, mean5 = len(a["res5"]), sum(a["res5"]) / len(a["res5"])
            lines.append(
                f"{pretext}: N_cf K={k} vs {short}: better at res5 in {pos}/{n5} probes "
                f"(mean res5 difference {mean5:+.2f} points); better in "
                f"{a['wins']}/{a['pairs']} (probe, layer) pairs{sig}."
            )
            if short == "N_pre":
                res5_gain[pretext] = a["res5"]
        # res5 gap per K, and the res4 -> res5 change
        rows_k = []
        drops: Dict[str, List[float]] = {"N_pre": [], "N_cf": []}
        for target in stats:
            for probe in _sorted_probes(stats[target]):
                models = stats[target][probe]
                npre = models.get(f"N_pre {pretext}")
                if not npre or "res5" not in npre:
                    continue
                row = {"probe": f"{target} {probe}"}
                for kk in ks:
                    m = models.get(f"N_cf {pretext} K={kk}")
                    if m and "res5" in m:
                        row[f"K={kk}"] = _fmt_diff(*_diff(m["res5"], npre["res5"]))
                m = models.get(ncf)
                if "res4" in npre and m and "res4" in m and "res5" in m:
                    d_pre = npre["res5"]["mean"] - npre["res4"]["mean"]
                    d_cf = m["res5"]["mean"] - m["res4"]["mean"]
                    row["N_pre res5−res4"], row[f"N_cf K={k} res5−res4"] = (
                        f"{d_pre:+.2f}",
                        f"{d_cf:+.2f}",
                    )
                    drops["N_pre"].append(d_pre)
                    drops["N_cf"].append(d_cf)
                rows_k.append(row)
        tables.append(
            {
                "title": f"{pretext}: res5, N_cf minus N_pre for every K; change from res4 to res5",
                "columns": ["probe"]
                + [f"K={kk}" for kk in ks]
                + ["N_pre res5−res4", f"N_cf K={k} res5−res4"],
                "rows": rows_k,
            }
        )
        if drops["N_pre"]:
            n = len(drops["N_pre"])
            mean = {m: sum(v) / n for m, v in drops.items()}
            below = {m: sum(d < 0 for d in v) for m, v in drops.items()}
            if mean["N_pre"] < 0 and mean["N_cf"] > mean["N_pre"]:
                verdict = "N_pre's res5 trails its res4 and N_cf narrows that gap, as in the paper"
            elif mean["N_pre"] < 0:
                verdict = (
                    "N_pre's res5 trails its res4 but N_cf does not narrow that gap"
                )
            else:
                verdict = "N_pre's res5 does not trail its res4 here (no sign of the pretext overfit)"
            lines.append(
                f"{pretext}: res5 minus res4, mean over {n} probes: N_pre {mean['N_pre']:+.2f}, "
                f"N_cf K={k} {mean['N_cf']:+.2f} (N_pre's res5 below its res4 in "
                f"{below['N_pre']}/{n} probes, N_cf's in {below['N_cf']}/{n}): {verdict}."
            )
        data[pretext]["res5_minus_res4"] = drops
    if res5_gain:
        g = {x: sum(v) / len(v) for x, v in res5_gain.items()}
        parts = [f"{x} {v:+.2f}" for x, v in g.items()]
        positive = [x for x, v in g.items() if v > 0]
        lines.append(
            "res5 gain of N_cf over N_pre, mean over probes: "
            + ", ".join(parts)
            + ": "
            + f"positive for {len(positive)} of {len(g)} pretexts"
            + (f" ({', '.join(positive)})" if positive else "")
            + " (the paper: positive for both Jigsaw and RotNet)."
        )
    return tables, lines, data


def cluster_table(
    per_seed_clusters: Dict[int, Dict[str, Any]], p: Preset
) -> Dict[str, Any]:
    rows = []
    for pretext in _names(p.pretexts):
        for k in _ints(p.ks):
            ms = [
                c[pretext][str(k)]
                for c in per_seed_clusters.values()
                if str(k) in c.get(pretext, {})
            ]
            if not ms:
                continue
            row: Dict[str, Any] = {"N_pre": pretext, "K": k}
            for key in ("nmi", "ami", "purity", "num_empty", "size_min", "size_max"):
                vals = [m["metrics"][key] for m in ms if key in m["metrics"]]
                if vals:
                    mean, std = _mean_std([float(v) for v in vals])
                    fmt = ".3f" if key in ("nmi", "ami", "purity") else ".0f"
                    row[key] = f"{mean:{fmt}}" + (
                        "" if math.isnan(std) else f" ± {std:{fmt}}"
                    )
            rows.append(row)
    return {
        "title": "Clusters of N_pre res5 features vs the (unused) Fashion-MNIST labels",
        "columns": [
            "N_pre",
            "K",
            "nmi",
            "ami",
            "purity",
            "num_empty",
            "size_min",
            "size_max",
        ],
        "rows": rows,
    }


def time_table(per_seed: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
    rows = []
    for seed, out in per_seed.items():
        now = set(out.get("stages_run_now", []))
        for stage, s in out["stage_time_s"].items():
            rows.append(
                {
                    "seed": seed,
                    "stage": stage,
                    "s": round(s),
                    "run": "now" if stage in now else "earlier",
                }
            )
        for model, s in out["probe_time_s"].items():
            rows.append(
                {
                    "seed": seed,
                    "stage": f"probes {model}",
                    "s": round(s),
                    "run": (
                        "now" if model in out.get("probes_run_now", []) else "earlier"
                    ),
                }
            )
    return {
        "title": "Wall time per stage (s; run: in this invocation, or in an earlier one "
        "that this one resumed)",
        "columns": ["seed", "stage", "s", "run"],
        "rows": rows,
    }


# --------------------------------------------------------------------------- estimate

DIGITS_TRAIN, DIGITS_TEST, FMNIST_TRAIN, FMNIST_TEST = 1257, 540, 60000, 10000


def _n(limit: int, total: int) -> int:
    return total if limit < 0 else limit


def estimate_runtime(p: Preset, calib: Dict[str, Any]) -> Dict[str, float]:
    """Seconds the preset ``p`` would take, from the stage times of an earlier run
    (``calib``: a results JSON of this script, e.g. the tiny preset) on this machine.

    Cost model, fitted on the first seed of the calibration run: a training stage costs
    ``startup + c_train[pretext] * images * epochs`` (c_train and startup from N_pre vs
    N_pre 2x, which differ only in epochs); N_cf adds its own startup and the clustering
    extraction per image; a VISSL linear probe costs ``startup + c_fwd_lin * forward
    images`` (train images x epochs + test images at the first and last epoch); probes.py
    costs ``c_extract * images`` plus logistic-regression fits, linear in the number of
    labelled images. Everything scales linearly with the images, so a calibration on a
    loaded machine gives a loaded machine's estimate.
    """
    cs = calib["settings"]
    seed = next(iter(calib["per_seed"]))
    st = calib["stage_time_s"][seed]
    out = calib["per_seed"][seed]
    d0, e0 = _n(cs["data_limit"], FMNIST_TRAIN), cs["epochs"]
    c_train, start_train, start_ncf = {}, {}, {}
    for x in _names(cs["pretexts"]):
        t1, t2 = st.get(f"npre_{x}"), st.get(f"npre2x_{x}")
        if t1 is None:
            continue
        if t2 is not None and t2 > t1:
            c_train[x] = (t2 - t1) / (d0 * e0)
            start_train[x] = max(0.0, t1 - c_train[x] * d0 * e0)
        else:
            start_train[x] = 5.0
            c_train[x] = max(t1 - 5.0, 0.0) / (d0 * e0)
        ncf = [v for k, v in st.items() if k.startswith(f"ncf_{x}_k")]
        if ncf:
            start_ncf[x] = max(0.0, sum(ncf) / len(ncf) - c_train[x] * d0 * e0)
    if not c_train:
        raise ValueError(
            "the calibration run has no N_pre stage times (its stages were reused)"
        )
    # clustering extraction per image (inside start_ncf at d0 images; rescaled below)
    ext = [m["time_s"]["extract"] for c in out["clusters"].values() for m in c.values()]
    c_cluster = (sum(ext) / len(ext)) / d0 if ext else 0.0

    def lin_images(s: Dict[str, Any], n_train: int, n_test: int) -> int:
        # the pipeline sets TEST_EVERY_NUM_EPOCH=eval_epochs: VISSL then tests after the
        # first and the last epoch
        passes = 1 if s["eval_epochs"] == 1 else 2
        return s["eval_epochs"] * n_train + passes * n_test

    lin_fm = [
        v
        for k, v in st.items()
        if k.startswith("linear_") and not k.startswith("linear_digits_")
    ]
    lin_dg = [v for k, v in st.items() if k.startswith("linear_digits_")]
    start_lin = min(start_train.values())
    imgs_fm = lin_images(
        cs,
        _n(cs["eval_train_limit"], FMNIST_TRAIN),
        _n(cs["eval_test_limit"], FMNIST_TEST),
    )
    c_lin = max(0.0, sum(lin_fm) / len(lin_fm) - start_lin) / imgs_fm if lin_fm else 0.0
    if lin_dg:
        c_lin = max(
            c_lin,
            max(0.0, sum(lin_dg) / len(lin_dg) - start_lin)
            / lin_images(cs, DIGITS_TRAIN, DIGITS_TEST),
        )
    # probes: extraction per image, fit time a + b * labelled images
    ext_t, ext_n, fits = 0.0, 0, []
    for res in out["probes"].values():
        for target, r in res["targets"].items():
            ext_t += r["time_s"]["extract"]
            ext_n += r["n_train"] + r["n_test"]
            nl = len(r["dims"])
            for probe, t in r["time_s"].items():
                if probe.startswith("few"):
                    fits.append((int(probe[3:]) * 10, t / (nl * cs["probe_draws"])))
                elif probe == "full":
                    fits.append((r["n_train"], t / nl))
    c_ext = ext_t / ext_n if ext_n else 0.0
    if len(set(n for n, _ in fits)) >= 2:
        xs, ys = [n for n, _ in fits], [t for _, t in fits]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum(
            (x - mx) ** 2 for x in xs
        )
        b = max(b, 0.0)
        a = max(my - b * mx, 0.0)
    else:
        a, b = (fits[0][1] if fits else 0.0), 0.0

    d, e = _n(p.data_limit, FMNIST_TRAIN), p.epochs
    pretexts, ks = _names(p.pretexts), _ints(p.ks)
    ref = next(iter(c_train))
    est = {
        "train N_pre / N_pre 2x": 0.0,
        "train N_cf (incl. clustering)": 0.0,
        "VISSL linear probes": 0.0,
        "probes.py": 0.0,
    }
    for x in pretexts:
        c, s0 = c_train.get(x, c_train[ref]), start_train.get(x, start_train[ref])
        est["train N_pre / N_pre 2x"] += (
            s0 + c * d * e + (s0 + c * d * 2 * e if p.with_2x else 0.0)
        )
        sn = start_ncf.get(x, start_ncf.get(ref, s0))
        est["train N_cf (incl. clustering)"] += len(ks) * (
            sn + c_cluster * (d - d0) + c * d * e
        )
    n_models = len(pretexts) * (1 + int(p.with_2x) + len(ks)) + int(p.with_random)
    est["VISSL linear probes"] = n_models * (
        start_lin
        + c_lin
        * lin_images(
            dataclasses.asdict(p),
            _n(p.eval_train_limit, FMNIST_TRAIN),
            _n(p.eval_test_limit, FMNIST_TEST),
        )
        + (
            (
                start_lin
                + c_lin * lin_images(dataclasses.asdict(p), DIGITS_TRAIN, DIGITS_TEST)
            )
            if p.eval_digits
            else 0.0
        )
    )
    if p.probes:
        per_model = 0.0
        for target in _names(p.probe_targets):
            n_tr = (
                _n(p.probe_n_train, FMNIST_TRAIN)
                if target == "fmnist"
                else DIGITS_TRAIN
            )
            n_te = (
                _n(p.probe_n_test, FMNIST_TEST) if target == "fmnist" else DIGITS_TEST
            )
            per_model += c_ext * (n_tr + n_te)
            for shots in _ints(p.probe_shots):
                per_model += len(LAYERS) * p.probe_draws * (a + b * 10 * shots)
            if target in _names(p.probe_full):
                per_model += len(LAYERS) * (a + b * n_tr)
        est["probes.py"] = n_models * per_model
    seeds = len(_ints(p.seeds))
    est = {k: round(v * seeds, 0) for k, v in est.items()}
    est["total"] = round(sum(est.values()), 0)
    est["_model"] = {  # type: ignore[assignment]
        "c_train_s_per_image_epoch": {k: round(v, 5) for k, v in c_train.items()},
        "startup_train_s": {k: round(v, 1) for k, v in start_train.items()},
        "startup_ncf_s": {k: round(v, 1) for k, v in start_ncf.items()},
        "c_cluster_extract_s_per_image": round(c_cluster, 5),
        "c_linear_s_per_forward_image": round(c_lin, 5),
        "c_probe_extract_s_per_image": round(c_ext, 5),
        "logreg_fit_s": f"{a:.3f} + {b:.2e} * labelled images",
        "calibration": calib.get("benchmark"),
        "calibration_load_avg": calib["machine"].get("load_avg_at_start"),
    }
    return est


# --------------------------------------------------------------------------- outputs


def plot(path: str, stats: Dict[str, Any], p: Preset) -> None:
    """Accuracy per layer per model (as the paper's Fig. 4): one row per (target, probe),
    one column per pretext; error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combos = [(t, pr) for t in stats for pr in _sorted_probes(stats[t])]
    pretexts = _names(p.pretexts)
    if not combos:
        return
    fig, axes = plt.subplots(
        len(combos),
        len(pretexts),
        figsize=(5 * len(pretexts), 2.8 * len(combos)),
        squeeze=False,
    )
    ks = _ints(p.ks)
    cmap = plt.get_cmap("viridis")
    for r, (target, probe) in enumerate(combos):
        models = stats[target][probe]
        for c, pretext in enumerate(pretexts):
            ax = axes[r][c]
            styles = [
                (f"N_pre {pretext}", dict(color="tab:red", marker="o")),
                (
                    f"N_pre 2x {pretext}",
                    dict(color="tab:orange", marker="s", linestyle="--"),
                ),
            ]
            styles += [
                (
                    f"N_cf {pretext} K={k}",
                    dict(color=cmap(0.15 + 0.7 * i / max(1, len(ks) - 1)), marker="^"),
                )
                for i, k in enumerate(ks)
            ]
            styles.append(
                ("random init", dict(color="grey", marker="x", linestyle=":"))
            )
            for model, style in styles:
                if model not in models:
                    continue
                layers = [l for l in LAYERS if l in models[model]]
                means = [models[model][l]["mean"] for l in layers]
                stds = [models[model][l]["std"] or 0.0 for l in layers]
                ax.errorbar(
                    layers,
                    means,
                    yerr=stds,
                    capsize=2,
                    label=model.replace(f" {pretext}", ""),
                    **style,
                )
            ax.set_title(f"{pretext} - {target} {probe}", fontsize=9)
            ax.set_ylabel("top-1 (%)", fontsize=8)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
            if r == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _markdown_tables(tables: List[Dict[str, Any]], heading: str) -> List[str]:
    """Markdown lines for titled tables: heading, blank, table, blank per table."""
    lines: List[str] = []
    for t in tables:
        table = common.format_table(t["rows"], t["columns"], markdown=True)
        lines += [f"{heading} {t['title']}", "", table, ""]
    return lines


def markdown(
    name: str,
    payload: Dict[str, Any],
    acc_tables: List[Dict[str, Any]],
    cmp_tables: List[Dict[str, Any]],
    cmp_lines: List[str],
    extra_tables: List[Dict[str, Any]],
    png: str,
) -> str:
    m, s = payload["machine"], payload["settings"]
    out = [
        f"# ClusterFit reproduction ({payload['preset']} preset)",
        "",
        f"- command: `{m.get('command')}`",
        f"- commit: `{m.get('git_commit')}`",
        f"- date: {m.get('date')}",
        f"- machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('mem_total_gib')} GiB, "
        f"GPU: {m.get('gpu') or 'none'}, load average at start {m.get('load_avg_at_start')}",
        f"- software: Python {m.get('python')}, torch {m.get('torch')}, faiss {m.get('faiss')}, "
        f"scikit-learn {m.get('sklearn')}",
        f"- wall time of this invocation: {payload['wall_time_s']:.0f} s; sum of all stage and "
        "probe times (earlier invocations it resumed included): "
        f"{payload['stage_and_probe_time_sum_s']:.0f} s; "
        f"seeds {s['seeds']}",
        f"- settings: {json.dumps(s)}",
        f"- pipeline passthrough: {payload['passthrough']}",
        "",
        "Fashion-MNIST train images without labels for N_pre and D_cf "
        f"({s['data_limit'] if s['data_limit'] > 0 else 60000} images); N_pre and N_cf "
        f"{s['epochs']} epochs, N_pre 2x {2 * s['epochs']}; probes on frozen features per layer. "
        "Cells: mean ± sample std over seeds (no std with one seed). k-NN and logistic "
        "regression: benchmarks/probes.py; few-label probes average "
        f"{s['probe_draws']} seeded draws of the labelled images.",
        "",
    ]
    if png:
        out += [f"![accuracy per layer]({os.path.basename(png)})", ""]
    out += _markdown_tables(acc_tables, "##")
    out += [
        "## N_cf vs N_pre (generated from the numbers above)",
        "",
        "The paper (Sec. 4.2, Fig. 4, Table 6; ResNet-50 on ImageNet-1K, K=16000) finds, for "
        "both Jigsaw and RotNet, N_cf above N_pre at every layer except conv1 and above N_pre "
        "2x (whose effect is mixed), with N_pre's res5 transferring worse than its res4 (the "
        "last layer overfits the pretext) and N_cf narrowing that gap. Differences below are "
        "N_cf minus the reference in points; with several seeds they carry the standard "
        "error over seeds (± SE, paired by seed) and `*` marks |diff| > 2 SE. The best K is "
        "selected on test accuracy (no validation split), which favours N_cf slightly.",
        "",
    ]
    out += _markdown_tables(cmp_tables, "###")
    if cmp_lines:
        out += ["Summary:", ""] + [f"- {l}" for l in cmp_lines] + [""]
    out += _markdown_tables(extra_tables, "##")
    fits, unconverged = logreg_convergence(payload["per_seed"])
    if fits:
        out += [
            f"Logistic regressions (probes.py) that stopped at max_iter: {unconverged} of "
            f"{fits} (probe, layer) entries.",
            "",
        ]
    return "\n".join(out) + "\n"


def logreg_convergence(per_seed: Dict[Any, Dict[str, Any]]) -> Tuple[int, int]:
    """(probe/layer entries, how many had a fit that did not converge) over all runs."""
    flags = [
        ok
        for out in per_seed.values()
        for res in out["probes"].values()
        for tres in res["targets"].values()
        for ok in tres.get("converged", {}).values()
    ]
    return len(flags), sum(not ok for ok in flags)


def print_tables(tables: List[Dict[str, Any]]) -> None:
    for t in tables:
        print(f"\n{t['title']}")
        print(common.format_table(t["rows"], t["columns"]), flush=True)


# --------------------------------------------------------------------------- CLI


def parse_args(
    argv: Optional[List[str]],
) -> Tuple[str, Preset, List[str], argparse.Namespace]:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="config.X=Y arguments are passed to every VISSL stage.",
    )
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument(
        "--name",
        default="",
        help="results stem (default clusterfit_reproduction_<preset>)",
    )
    ap.add_argument(
        "--workdir", default=os.path.join(common.WORK_DIR, "clusterfit_reproduction")
    )
    ap.add_argument(
        "--estimate-from",
        default="",
        metavar="RESULTS_JSON",
        help="print the estimated run time of the chosen preset from an earlier run's "
        "stage times (e.g. benchmarks/results/clusterfit_reproduction_tiny.json) and exit",
    )
    for f in dataclasses.fields(Preset):
        flag = "--" + f.name.replace("_", "-")
        help_ = FLAG_HELP.get(f.name, "") + " (default: the preset's)"
        if f.type in (bool, "bool"):
            ap.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_,
            )
        else:
            ap.add_argument(
                flag,
                dest=f.name,
                type=int if f.type in (int, "int") else str,
                default=None,
                help=help_,
            )
    args, rest = ap.parse_known_args(argv)
    bad = [a for a in rest if not a.startswith(("config.", "+config."))]
    if bad:
        ap.error(
            f"unrecognised arguments {bad} (VISSL overrides must start with config.)"
        )
    preset = dataclasses.replace(
        PRESETS[args.preset],
        **{
            f.name: getattr(args, f.name)
            for f in dataclasses.fields(Preset)
            if getattr(args, f.name) is not None
        },
    )
    return args.name or f"clusterfit_reproduction_{args.preset}", preset, rest, args


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    name, p, passthrough, args = parse_args(argv)
    for pretext in _names(p.pretexts):
        if pretext not in ("rotnet", "jigsaw"):
            raise ValueError(f"--pretexts: '{pretext}' is not one of rotnet, jigsaw")
    if args.estimate_from:
        with open(args.estimate_from) as f:
            est = estimate_runtime(p, json.load(f))
        model = est.pop("_model")
        print(
            f"[repro] estimated wall time of preset {args.preset} "
            f"({json.dumps(dataclasses.asdict(p))}):"
        )
        for k, v in est.items():
            print(f"  {k:<32} {v:8.0f} s  ({v / 60:.1f} min)")
        print(f"  cost model: {json.dumps(model)}")
        if p.scale != "cpu":
            print(
                "  (calibrated at scale=cpu: a gpu-scale estimate from it is meaningless)"
            )
        return {"estimate_s": est, "model": model}
    check_configs(p)
    machine = common.machine_info()
    run_dir = os.path.join(args.workdir, f"{name}-{settings_hash(p, passthrough)}")
    print(
        f"[repro] preset {args.preset}: {json.dumps(dataclasses.asdict(p))}\n"
        f"[repro] runs in {run_dir}",
        flush=True,
    )
    t0 = time.time()
    import vissl_clusterfit  # noqa: F401  registers the plugin (probes build trunks in-process)

    per_seed: Dict[int, Dict[str, Any]] = {}
    seed_time: Dict[int, float] = {}
    for seed in _ints(p.seeds):
        ts = time.time()
        per_seed[seed] = run_seed(
            p, seed, os.path.join(run_dir, f"seed{seed}"), passthrough
        )
        seed_time[seed] = round(time.time() - ts, 1)
    stats = aggregate({s: per_seed_accuracies(o) for s, o in per_seed.items()})
    order = model_order(p)
    acc_tables = accuracy_tables(stats, order)
    cmp_tables, cmp_lines, cmp_data = comparison(stats, p)
    extra = [
        cluster_table({s: o["clusters"] for s, o in per_seed.items()}, p),
        time_table(per_seed),
    ]
    wall = round(time.time() - t0, 1)

    print_tables(acc_tables)
    print_tables(cmp_tables)
    print("\n" + "\n".join(cmp_lines))
    print_tables(extra[:1])

    os.makedirs(common.RESULTS_DIR, exist_ok=True)
    png = os.path.join(common.RESULTS_DIR, f"{name}.png")
    plot(png, stats, p)
    payload = {
        "benchmark": name,
        "preset": args.preset,
        "settings": dataclasses.asdict(p),
        "passthrough": passthrough,
        "run_dir": run_dir,
        "machine": machine,
        "wall_time_s": wall,
        "wall_time_per_seed_s": seed_time,
        "stage_time_s": {s: o["stage_time_s"] for s, o in per_seed.items()},
        "probe_time_s": {s: o["probe_time_s"] for s, o in per_seed.items()},
        "stage_and_probe_time_sum_s": round(
            sum(
                sum(o["stage_time_s"].values()) + sum(o["probe_time_s"].values())
                for o in per_seed.values()
            ),
            1,
        ),
        "stats": stats,
        "comparison": {"lines": cmp_lines, "data": cmp_data},
        "per_seed": per_seed,
        "plot": png,
    }
    json_path = os.path.join(common.RESULTS_DIR, f"{name}.json")
    with open(json_path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
        f.write("\n")
    md_path = os.path.join(common.RESULTS_DIR, f"{name}.md")
    with open(md_path, "w") as f:
        f.write(markdown(name, payload, acc_tables, cmp_tables, cmp_lines, extra, png))
    print(
        f"\n[repro] total {wall:.0f}s; wrote {json_path}, {md_path}, {png}", flush=True
    )
    return payload


if __name__ == "__main__":
    main()
