"""report.json, report.md and the Fig. 3-style plot of the control experiment
(ClusterFit, Yan et al. 2020, Sec. 3.2), from the records ``control_experiment``
collects: test top-1 vs noise rate p per method and target; comparisons A - B paired by
seed (seed s of every model comes from seed s's N_pre), mean and 95% t interval with
n - 1 df (``experiments.stats.paired_interval``); N_cf's K chosen per (variant,
target, p, seed) on the validation split, never on test.
"""

import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from vissl_clusterfit.experiments.control.probe import choose_k
from vissl_clusterfit.experiments.markdown import markdown_table
from vissl_clusterfit.experiments.stats import paired_interval


METHODS = ("N_pre", "N_cf", "distillation", "prototype", "random init")
COMPARISONS = (
    ("N_cf", "N_pre"),
    ("distillation", "N_pre"),
    ("prototype", "N_pre"),
    ("N_cf", "distillation"),
    ("random init", "N_pre"),  # reference row
)
TARGET_TITLES = {
    "aligned": "aligned (N_pre's label space)",
    "finer": "finer (the 10 classes)",
    "tops": "fine-grained (4 kinds of tops)",
    "digits": "digits (another domain)",
}
Record = Dict[str, Any]


def npre_train_accuracy(folder: str) -> Optional[float]:
    """Top-1 (%) of N_pre on its noisy labels in its last training epoch, as VISSL's
    accuracy meter logged it in metrics.json (running over the epoch, train mode)."""
    last, path = None, os.path.join(folder, "metrics.json")
    if os.path.isfile(path):
        with open(path) as f:
            for entry in map(json.loads, f):
                last = entry.get("train_accuracy_list_meter", {}).get("top_1", last)
    return None if last is None else round(float(list(last.values())[0]), 2)


def with_chosen_k(records: Sequence[Record]) -> List[Record]:
    """The records plus one ``N_cf`` record per (variant, p, seed, target): the K of
    the best validation accuracy (``choose_k``)."""
    sweep: Dict[tuple, Dict[int, Record]] = {}
    for r in records:
        if r["model"].startswith("N_cf K="):
            key = (r["variant"], r["p"], r["seed"], r["target"])
            sweep.setdefault(key, {})[r["k"]] = r
    chosen = [
        dict(by_k[choose_k({k: r["val"] for k, r in by_k.items()})], model="N_cf")
        for by_k in sweep.values()
    ]
    return [r for r in records if r["model"] != "N_cf"] + chosen


def by_seed(items: Sequence[Record], field: str = "test", **match: Any) -> Dict:
    """seed -> ``field`` of the items (records, N_pre fits, clusters) that match."""
    return {
        r["seed"]: r[field]
        for r in items
        if r.get(field) is not None and all(r.get(k) == v for k, v in match.items())
    }


def diff_by_seed(recs: Sequence[Record], a: str, b: str, **where: Any) -> Dict:
    """seed -> test top-1 of model a minus model b at ``where``."""
    va, vb = by_seed(recs, model=a, **where), by_seed(recs, model=b, **where)
    return {s: va[s] - vb[s] for s in va if s in vb}


def compare(recs: Sequence[Record], a: str, b: str, **where: Any) -> Optional[Dict]:
    """Paired a - b over the seeds both have at ``where`` (variant, target, p)."""
    d = diff_by_seed(recs, a, b, **where)
    return paired_interval([d[s] for s in sorted(d)]).ci_dict() if d else None


def gap_growth(
    recs: Sequence[Record], p0: int, p1: int, **where: Any
) -> Optional[Dict]:
    """[N_cf - N_pre](p1) - [N_cf - N_pre](p0), paired by seed: > 0 when N_pre loses
    more than N_cf from p0 to p1 (Fig. 3: the gap widens with p)."""
    g0, g1 = (diff_by_seed(recs, "N_cf", "N_pre", p=p, **where) for p in (p0, p1))
    seeds = sorted(set(g0) & set(g1))
    return paired_interval([g1[s] - g0[s] for s in seeds]).ci_dict() if seeds else None


def verdict(d: Optional[Dict], labels: Sequence[str] = ()) -> str:
    """supported / contradicted / inconclusive: the 95% CI above 0, below 0, or
    across it (``labels`` renames the three). With one seed there is no CI and no
    verdict; the sign is named against the paper's (every hypothesis expects > 0),
    as benchmarks/README.md reads the one-seed `full` preset."""
    if d is None:
        return "missing"
    if d["ci_low"] is None:
        sign = "the paper's sign" if d["diff"] > 0 else "not the paper's sign"
        return f"no CI (< 2 seeds); {sign}"
    names = list(labels) or ["supported", "contradicted", "inconclusive"]
    return names[0] if d["ci_low"] > 0 else names[1] if d["ci_high"] < 0 else names[2]


def fmt_diff(d: Optional[Dict]) -> str:
    if d is None:
        return "-"
    if d["ci_low"] is None:
        return f"{d['diff']:+.2f} (n={d['n']})"
    return f"{d['diff']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] (n={d['n']})"


def mean_sd(per_seed: Dict[int, float]) -> str:
    values = list(per_seed.values())
    if not values:
        return "-"
    sd = f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
    return f"{np.mean(values):.2f}{sd}"


def hypotheses(recs: Sequence[Record], variant: str, rates: Sequence[int]) -> List:
    """Rows (hypothesis, target, p, difference, verdict) of the pre-registered
    hypotheses (benchmarks/README.md, from ClusterFit Sec. 3.2 / Fig. 3)."""
    w = dict(variant=variant)
    targets = [t for t in TARGET_TITLES if by_seed(recs, target=t, **w)]
    lo, hi, rows = min(rates), max(rates), []
    # digits: no hypothesis; one rate: no growth to measure
    for t in [t for t in targets if t != "digits"] if hi > lo else []:
        d = gap_growth(recs, lo, hi, target=t, **w)
        rows.append(["H1 gap N_cf - N_pre grows", t, f"{lo}->{hi}", d, verdict(d)])
    for p in (p for p in rates if p >= 50):
        d = compare(recs, "N_cf", "N_pre", target="aligned", p=p, **w)
        rows.append(["H2 N_cf > N_pre", "aligned", p, d, verdict(d)])
    if "finer" in targets:
        d = compare(recs, "N_cf", "N_pre", target="finer", p=lo, **w)
        level = verdict(d, ("better", "worse", "level"))
        rows.append(["H3 N_cf level or better", "finer", lo, d, level])
    for t in (t for t in targets if t != "digits"):
        for p in rates:
            for a, b, h in (
                ("distillation", "N_pre", "H4a distillation > N_pre"),
                ("N_cf", "distillation", "H4b N_cf > distillation"),
            ):
                d = compare(recs, a, b, target=t, p=p, **w)
                rows.append([h, t, p, d, verdict(d)])
    return [row[:3] + [fmt_diff(row[3])] + row[4:] for row in rows]


def plot_fig3(path: str, recs: Sequence[Record], variants: Sequence[str]) -> None:
    """Test top-1 vs p, one line per method (mean and 95% t interval of the mean),
    one panel per (variant, target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = len(TARGET_TITLES)
    fig, axes = plt.subplots(
        len(variants), ncols, figsize=(4 * ncols, 3.4 * len(variants)), squeeze=False
    )
    for ax, (v, t) in zip(axes.flat, [(v, t) for v in variants for t in TARGET_TITLES]):
        ax.set_title(f"{v} N_pre -> {TARGET_TITLES[t]}", fontsize=9)
        for m in METHODS:
            points = []
            for p in sorted({r["p"] for r in recs}):
                ci = by_seed(recs, model=m, variant=v, target=t, p=p)
                if ci:
                    ci = paired_interval(list(ci.values())).ci_dict()
                    low = ci["diff"] if ci["ci_low"] is None else ci["ci_low"]
                    points.append((p, ci["diff"], ci["diff"] - low))
            if points:
                xs, ys, es = zip(*points)
                ls = "--" if m == "random init" else "-"
                ax.errorbar(xs, ys, yerr=es, capsize=3, marker="o", ls=ls, label=m)
        ax.set_xlabel("label noise p (%)", fontsize=8)
        ax.set_ylabel("res5 linear probe, test top-1 (%)", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no such target", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def variant_sections(report: Dict[str, Any], v: str, rates: List[int]) -> List[str]:
    """The Markdown sections of one N_pre variant."""
    recs, fits, clusters = report["records"], report["npre_fit"], report["clusters"]
    targets = [t for t in TARGET_TITLES if by_seed(recs, variant=v, target=t)]
    sweep = sorted({r["k"] for r in recs if r["model"].startswith("N_cf K=")})
    models = list(METHODS) + [f"N_cf K={k}" for k in sweep]
    ps, w = [f"p={p}" for p in rates], dict(variant=v)

    def per_p(fn: Callable[[int], Any]) -> List[Any]:
        return [fn(p) for p in rates]

    def seeds(d: Dict) -> str:
        return ", ".join(f"{d[s]:g}" for s in sorted(d))

    def acc(t: str, m: str) -> List:
        return per_p(lambda p: mean_sd(by_seed(recs, model=m, target=t, p=p, **w)))

    def diff(t: str, a: str, b: str) -> List:
        return per_p(lambda p: fmt_diff(compare(recs, a, b, target=t, p=p, **w)))

    def k(t: str) -> List:
        return per_p(lambda p: seeds(by_seed(recs, "k", model="N_cf", target=t, p=p, **w)))  # fmt: skip

    fit = [by_seed(fits, "train_top1", p=p, **w) for p in rates]
    sections = [
        ("test top-1 (%), mean ± sd over seeds", ["target", "model", *ps],
         [[t, m, *acc(t, m)] for t in targets for m in models]),
        ("paired differences, mean [95% CI] (points)", ["target", "comparison", *ps],
         [[t, f"{a} - {b}", *diff(t, a, b)] for t in targets for a, b in COMPARISONS]),
        ("K chosen on validation, per seed", ["target", *ps],
         [[t, *k(t)] for t in targets]),
        ("pre-registered hypotheses", ["hypothesis", "target", "p", "difference", "verdict"],
         hypotheses(recs, v, rates)),
        ("fit of its noisy labels (VISSL's running top-1, last epoch)",
         ["p", "train top-1", "per seed", "clean labels would score"],
         [[p, mean_sd(f), seeds(f), 100 - p] for p, f in zip(rates, fit)]),
        ("N_cf's clusters, NMI with the 10 clean classes", ["p", *[f"K={k}" for k in sweep]],
         [[p, *(mean_sd(by_seed(clusters, "nmi", p=p, k=k, **w)) for k in sweep)] for p in rates]),
    ]  # fmt: skip
    md: List[str] = []
    for title, header, rows in sections:
        md += [f"## {v} N_pre: {title}", ""] + markdown_table(header, rows) + [""]
    return md


def render(report: Dict[str, Any]) -> str:
    s, recs = report["settings"], report["records"]
    rates = sorted({r["p"] for r in recs})
    md = [
        "# ClusterFit control experiment (Sec. 3.2, Fig. 3)",
        "",
        f"Preset {s['preset']}: N_pre variants {s['variants']}, p = {rates} %, seeds "
        f"{s['seeds']}; D_pre = D_cf = {s['data_limit']} Fashion-MNIST train images; "
        f"{s['epochs'] or 'the configs'} epochs for every trained model, all with N_pre's "
        f"recipe; N_cf K sweep {s['ks']} (K chosen per target on validation); probe: "
        f"logistic regression (C=1) on res5 (2x2 average grid) with "
        f"{s['probe_train']} labelled train, {s['probe_val']} validation and "
        f"{s['probe_test']} test images (-1 = all); digits: its 1257 / 540 split, a "
        "stratified fifth of train for validation.",
        "",
        "![Fig. 3-style plot](fig3_control.png)",
        "",
    ]
    for v in [v for v in s["variants"].split(",") if v]:
        md += variant_sections(report, v, rates)
    times = report["stage_time_s"]
    md += ["## Time per stage", ""]
    rows = [[k, t["wall_s"], t["cpu_s"]] for k, t in sorted(times.items())]
    md += markdown_table(["stage", "wall s", "CPU s"], rows) + [""]
    md += [
        f"This invocation: {report['total_time_s']:.0f} s, "
        f"{len(report['stages_run_now'])} stages run now (the others reused).",
        "",
    ]
    return "\n".join(md)


def write_report(out_dir: str, report: Dict[str, Any]) -> Dict[str, Any]:
    report = dict(report, records=with_chosen_k(report["records"]))
    variants = [v for v in report["settings"]["variants"].split(",") if v]
    plot_fig3(os.path.join(out_dir, "fig3_control.png"), report["records"], variants)
    report["plots"] = ["fig3_control.png"]
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(render(report))
    return report
