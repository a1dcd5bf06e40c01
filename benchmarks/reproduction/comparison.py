"""Statistics of the reproduction: accuracies per seed, mean ± std over seeds, and the
generated comparison of N_cf (at its best K) with N_pre and N_pre 2x per layer.

The paper (Yan et al. 2020, Sec. 4.2, Fig. 4, Table 6) finds N_cf above N_pre at every
layer but conv1 and above N_pre 2x, with N_pre's res5 below its res4 (the last layer
overfits the pretext) and N_cf narrowing that gap. Differences are N_cf minus the
reference in points, paired by seed (N_cf of seed s is trained from N_pre of seed s),
with a 95% t interval over seeds from ``benchmarks.report``.
"""

import math
from typing import Any, Dict, List, Optional, Tuple

from benchmarks.plugin import LAYERS, Difference
from benchmarks.report import (
    format_difference,
    mean_std,
    paired_difference,
    welch_difference,
)
from benchmarks.reproduction.settings import (
    PROBE_ORDER,
    Preset,
    ints,
    names,
    sorted_probes,
)


Stats = Dict[
    str, Any
]  # target -> probe -> model -> layer -> {mean, std, n, values, seeds}


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


def _seeded_values(per_seed: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
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
    return values


def aggregate(per_seed: Dict[int, Dict[str, Any]]) -> Stats:
    """target -> probe -> model -> layer -> {mean, std (sample, n-1), n, values, seeds}."""
    stats: Stats = {}
    for target, probes_ in _seeded_values(per_seed).items():
        for probe, models in probes_.items():
            for model, layers in models.items():
                out = stats.setdefault(target, {}).setdefault(probe, {})
                out[model] = {}
                for layer, seeded in layers.items():
                    vals = [v for _, v in seeded]
                    mean, std = mean_std(vals)
                    out[model][layer] = {
                        "mean": round(mean, 2),
                        "std": None if math.isnan(std) else round(std, 2),
                        "n": len(vals),
                        "values": vals,
                        "seeds": [sd for sd, _ in seeded],
                    }
    return stats


def seed_difference(a: Dict[str, Any], b: Dict[str, Any]) -> Difference:
    """A minus B over seeds: paired when both were measured on the same seeds, else
    Welch's unpaired difference; no error with one seed."""
    if a.get("seeds") == b.get("seeds"):
        return paired_difference(a["values"], b["values"])
    return welch_difference(a["values"], b["values"])


def best_k(stats: Stats, pretext: str, ks: List[int]) -> Tuple[Optional[int], str]:
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


def _probe_models(stats: Stats) -> List[Tuple[str, str, Dict[str, Any]]]:
    return [
        (target, probe, stats[target][probe])
        for target in stats
        for probe in sorted_probes(stats[target])
    ]


def _vs_reference(
    ncf: Dict[str, Any], ref: Dict[str, Any], tally: Dict[str, Any]
) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """One table row (cells per layer) and the differences of N_cf vs one reference on
    one probe; adds wins, pairs and significant cells to ``tally``."""
    row: Dict[str, Any] = {}
    diffs: Dict[str, Dict[str, Any]] = {}
    wins = 0
    for l in LAYERS:
        if l in ncf and l in ref:
            d = seed_difference(ncf[l], ref[l])
            diffs[l] = d.as_dict()
            row[l] = format_difference(d)
            # a win as the table shows it: float noise of a zero difference is no win
            wins += diffs[l]["diff"] > 0
            if d.excludes_zero:
                tally["sig_pos" if d.diff > 0 else "sig_neg"] += 1
    row["N_cf better at"] = f"{wins}/{len(diffs)}"
    tally["wins"] += wins
    tally["pairs"] += len(diffs)
    if "res5" in diffs:
        tally["res5"].append(diffs["res5"]["diff"])
    return row, diffs


def _reference_table(
    stats: Stats, pretext: str, ncf: str
) -> Tuple[List[Dict[str, Any]], Dict[str, Dict[str, Any]], Dict[str, Any]]:
    """Rows of N_cf minus N_pre / N_pre 2x per probe, a tally per reference, and the
    differences by ``"<target> <probe> vs <reference>"``."""
    rows: List[Dict[str, Any]] = []
    tallies: Dict[str, Dict[str, Any]] = {}
    diffs: Dict[str, Any] = {}
    for target, probe, models in _probe_models(stats):
        if ncf not in models:
            continue
        for ref in (f"N_pre {pretext}", f"N_pre 2x {pretext}"):
            if ref not in models:
                continue
            short = ref.replace(f" {pretext}", "")
            tally = tallies.setdefault(
                short, {"res5": [], "wins": 0, "pairs": 0, "sig_pos": 0, "sig_neg": 0}
            )
            row, d = _vs_reference(models[ncf], models[ref], tally)
            rows.append({"probe": f"{target} {probe}", "N_cf minus": short, **row})
            diffs[f"{target} {probe} vs {short}"] = d
    return rows, tallies, diffs


def _reference_line(
    pretext: str, k: int, short: str, tally: Dict[str, Any], several_seeds: bool
) -> str:
    res5 = tally["res5"]
    pos = sum(d > 0 for d in res5)
    sig = (
        f"; 95% interval excludes 0: {tally['sig_pos']} better, "
        f"{tally['sig_neg']} worse"
        if tally["sig_pos"] + tally["sig_neg"] or several_seeds
        else ""
    )
    return (
        f"{pretext}: N_cf K={k} vs {short}: better at res5 in {pos}/{len(res5)} probes "
        f"(mean res5 difference {sum(res5) / len(res5):+.2f} points); better in "
        f"{tally['wins']}/{tally['pairs']} (probe, layer) pairs{sig}."
    )


def _res5_table(
    stats: Stats, pretext: str, ks: List[int], k: int
) -> Tuple[List[Dict[str, Any]], Dict[str, List[float]]]:
    """res5 of N_cf minus N_pre for every K, and res5 minus res4 of N_pre and N_cf."""
    ncf = f"N_cf {pretext} K={k}"
    rows: List[Dict[str, Any]] = []
    drops: Dict[str, List[float]] = {"N_pre": [], "N_cf": []}
    for target, probe, models in _probe_models(stats):
        npre = models.get(f"N_pre {pretext}")
        if not npre or "res5" not in npre:
            continue
        row: Dict[str, Any] = {"probe": f"{target} {probe}"}
        for kk in ks:
            m = models.get(f"N_cf {pretext} K={kk}")
            if m and "res5" in m:
                row[f"K={kk}"] = format_difference(
                    seed_difference(m["res5"], npre["res5"])
                )
        m = models.get(ncf)
        if "res4" in npre and m and "res4" in m and "res5" in m:
            d_pre = npre["res5"]["mean"] - npre["res4"]["mean"]
            d_cf = m["res5"]["mean"] - m["res4"]["mean"]
            row["N_pre res5−res4"] = f"{d_pre:+.2f}"
            row[f"N_cf K={k} res5−res4"] = f"{d_cf:+.2f}"
            drops["N_pre"].append(d_pre)
            drops["N_cf"].append(d_cf)
        rows.append(row)
    return rows, drops


def _drop_line(pretext: str, k: int, drops: Dict[str, List[float]]) -> str:
    n = len(drops["N_pre"])
    mean = {m: sum(v) / n for m, v in drops.items()}
    below = {m: sum(d < 0 for d in v) for m, v in drops.items()}
    if mean["N_pre"] < 0 and mean["N_cf"] > mean["N_pre"]:
        verdict = (
            "N_pre's res5 trails its res4 and N_cf narrows that gap, as in the paper"
        )
    elif mean["N_pre"] < 0:
        verdict = "N_pre's res5 trails its res4 but N_cf does not narrow that gap"
    else:
        verdict = (
            "N_pre's res5 does not trail its res4 here (no sign of the pretext overfit)"
        )
    return (
        f"{pretext}: res5 minus res4, mean over {n} probes: N_pre {mean['N_pre']:+.2f}, "
        f"N_cf K={k} {mean['N_cf']:+.2f} (N_pre's res5 below its res4 in "
        f"{below['N_pre']}/{n} probes, N_cf's in {below['N_cf']}/{n}): {verdict}."
    )


def _gain_line(res5_gain: Dict[str, List[float]]) -> str:
    g = {x: sum(v) / len(v) for x, v in res5_gain.items()}
    parts = [f"{x} {v:+.2f}" for x, v in g.items()]
    positive = [x for x, v in g.items() if v > 0]
    return (
        "res5 gain of N_cf over N_pre, mean over probes: "
        + ", ".join(parts)
        + f": positive for {len(positive)} of {len(g)} pretexts"
        + (f" ({', '.join(positive)})" if positive else "")
        + " (the paper: positive for both Jigsaw and RotNet)."
    )


def comparison(
    stats: Stats, p: Preset
) -> Tuple[List[Dict[str, Any]], List[str], Dict[str, Any]]:
    """Tables and summary sentences: N_cf (best K) minus N_pre / N_pre 2x per layer, the
    res5 gap for every K, and the change from res4 to res5 (the paper: N_pre's last layer
    is the most specific to its pretext, and ClusterFit helps most there)."""
    tables: List[Dict[str, Any]] = []
    lines: List[str] = []
    data: Dict[str, Any] = {}
    ks = ints(p.ks)
    several_seeds = len(ints(p.seeds)) > 1
    res5_gain: Dict[str, List[float]] = {}
    for pretext in names(p.pretexts):
        k, criterion = best_k(stats, pretext, ks)
        if k is None:
            continue
        rows, tallies, diffs = _reference_table(stats, pretext, f"N_cf {pretext} K={k}")
        data[pretext] = {"best_k": k, "criterion": criterion, "diffs": diffs}
        tables.append(
            {
                "title": f"{pretext}: N_cf at K={k} (best on {criterion}, mean over "
                "layers) minus N_pre / N_pre 2x, per layer",
                "columns": ["probe", "N_cf minus"] + LAYERS + ["N_cf better at"],
                "rows": rows,
            }
        )
        for short, tally in tallies.items():
            if tally["res5"]:
                lines.append(_reference_line(pretext, k, short, tally, several_seeds))
                if short == "N_pre":
                    res5_gain[pretext] = tally["res5"]
        rows_k, drops = _res5_table(stats, pretext, ks, k)
        tables.append(
            {
                "title": f"{pretext}: res5, N_cf minus N_pre for every K; change from "
                "res4 to res5",
                "columns": ["probe"]
                + [f"K={kk}" for kk in ks]
                + ["N_pre res5−res4", f"N_cf K={k} res5−res4"],
                "rows": rows_k,
            }
        )
        if drops["N_pre"]:
            lines.append(_drop_line(pretext, k, drops))
        data[pretext]["res5_minus_res4"] = drops
    if res5_gain:
        lines.append(_gain_line(res5_gain))
    return tables, lines, data
