"""The reproduction's report: accuracy tables (mean ± std over seeds), cluster and time
tables, the per-layer figure (as the paper's Fig. 4) and the Markdown file."""

import json
import math
import os
from typing import Any, Dict, List, Tuple

from benchmarks.common import header_lines
from benchmarks.plugin import LAYERS
from benchmarks.report import (
    Series,
    format_mean_std,
    markdown_sections,
    mean_std,
    plot_layer_panels,
)
from benchmarks.reproduction.settings import (
    PROBE_TITLES,
    Preset,
    ints,
    names,
    sorted_probes,
)


def _targets(stats: Dict[str, Any]) -> List[str]:
    known = [t for t in ("fmnist", "digits") if t in stats]
    return known + [t for t in stats if t not in known]


def accuracy_tables(stats: Dict[str, Any], order: List[str]) -> List[Dict[str, Any]]:
    """One table per (target, probe): model x layer, mean ± std over seeds."""
    tables = []
    for target in _targets(stats):
        for probe in sorted_probes(stats[target]):
            models = stats[target][probe]
            ordered = [m for m in order if m in models]
            ordered += [m for m in models if m not in order]
            rows = []
            for model in ordered:
                cells = {}
                for l in LAYERS:
                    s = models[model].get(l)
                    cells[l] = format_mean_std(s["mean"], s.get("std")) if s else "-"
                rows.append({"model": model, **cells})
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


CLUSTER_KEYS = ("nmi", "ami", "purity", "num_empty", "size_min", "size_max")


def cluster_table(
    per_seed_clusters: Dict[int, Dict[str, Any]], p: Preset
) -> Dict[str, Any]:
    rows = []
    for pretext in names(p.pretexts):
        for k in ints(p.ks):
            ms = [
                c[pretext][str(k)]
                for c in per_seed_clusters.values()
                if str(k) in c.get(pretext, {})
            ]
            if not ms:
                continue
            row: Dict[str, Any] = {"N_pre": pretext, "K": k}
            for key in CLUSTER_KEYS:
                vals = [float(m["metrics"][key]) for m in ms if key in m["metrics"]]
                if vals:
                    mean, std = mean_std(vals)
                    fmt = ".3f" if key in ("nmi", "ami", "purity") else ".0f"
                    row[key] = f"{mean:{fmt}}" + (
                        "" if math.isnan(std) else f" ± {std:{fmt}}"
                    )
            rows.append(row)
    return {
        "title": "Clusters of N_pre res5 features vs the (unused) Fashion-MNIST labels",
        "columns": ["N_pre", "K", *CLUSTER_KEYS],
        "rows": rows,
    }


def time_table(per_seed: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
    rows = []
    for seed, out in per_seed.items():
        now = set(out.get("stages_run_now", []))
        for stage, s in out["stage_time_s"].items():
            run = "now" if stage in now else "earlier"
            rows.append({"seed": seed, "stage": stage, "s": round(s), "run": run})
        probes_now = set(out.get("probes_run_now", []))
        for model, s in out["probe_time_s"].items():
            run = "now" if model in probes_now else "earlier"
            rows.append(
                {"seed": seed, "stage": f"probes {model}", "s": round(s), "run": run}
            )
    return {
        "title": "Wall time per stage (s; run: in this invocation, or in an earlier one "
        "that this one resumed)",
        "columns": ["seed", "stage", "s", "run"],
        "rows": rows,
    }


def _series(models: Dict[str, Any], pretext: str, ks: List[int]) -> List[Series]:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    styles: List[Tuple[str, Dict[str, Any]]] = [
        (f"N_pre {pretext}", dict(color="tab:red", marker="o")),
        (f"N_pre 2x {pretext}", dict(color="tab:orange", marker="s", linestyle="--")),
    ]
    styles += [
        (
            f"N_cf {pretext} K={k}",
            dict(color=cmap(0.15 + 0.7 * i / max(1, len(ks) - 1)), marker="^"),
        )
        for i, k in enumerate(ks)
    ]
    styles.append(("random init", dict(color="grey", marker="x", linestyle=":")))
    return [
        (
            model.replace(f" {pretext}", ""),
            {l: (s["mean"], s["std"]) for l, s in models[model].items()},
            style,
        )
        for model, style in styles
        if model in models
    ]


def plot(path: str, stats: Dict[str, Any], p: Preset) -> None:
    """Accuracy per layer per model (as the paper's Fig. 4): one row per (target, probe),
    one column per pretext; error bars = std over seeds."""
    pretexts = names(p.pretexts)
    panels = [
        (
            f"{pretext} - {target} {probe}",
            _series(stats[target][probe], pretext, ints(p.ks)),
        )
        for target in stats
        for probe in sorted_probes(stats[target])
        for pretext in pretexts
    ]
    plot_layer_panels(path, panels, LAYERS, ncols=len(pretexts))


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


COMPARISON_INTRO = (
    "The paper (Sec. 4.2, Fig. 4, Table 6; ResNet-50 on ImageNet-1K, K=16000) finds, for "
    "both Jigsaw and RotNet, N_cf above N_pre at every layer except conv1 and above N_pre "
    "2x (whose effect is mixed), with N_pre's res5 transferring worse than its res4 (the "
    "last layer overfits the pretext) and N_cf narrowing that gap. Differences below are "
    "N_cf minus the reference in points; with several seeds they carry the standard "
    "error over seeds (± SE, paired by seed) and `*` marks a difference whose 95% "
    "confidence interval (Student's t over seeds, n-1 degrees of freedom when paired) "
    "excludes 0; the intervals are in the JSON (comparison.data). The best K is "
    "selected on test accuracy (no validation split), which favours N_cf slightly."
)


def _intro(payload: Dict[str, Any]) -> List[str]:
    s = payload["settings"]
    images = s["data_limit"] if s["data_limit"] > 0 else 60000
    return [
        "Fashion-MNIST train images without labels for N_pre and D_cf "
        f"({images} images); N_pre and N_cf {s['epochs']} epochs, N_pre 2x "
        f"{2 * s['epochs']}; probes on frozen features per layer. Cells: mean ± sample "
        "std over seeds (no std with one seed). k-NN and logistic regression: "
        "benchmarks.probe_checkpoint; few-label probes average "
        f"{s['probe_draws']} seeded draws of the labelled images.",
        "",
    ]


def markdown(
    payload: Dict[str, Any],
    acc_tables: List[Dict[str, Any]],
    cmp_tables: List[Dict[str, Any]],
    cmp_lines: List[str],
    extra_tables: List[Dict[str, Any]],
    png: str,
) -> str:
    s = payload["settings"]
    extra = [
        f"wall time of this invocation: {payload['wall_time_s']:.0f} s; sum of all "
        "stage and probe times (earlier invocations it resumed included): "
        f"{payload['stage_and_probe_time_sum_s']:.0f} s; seeds {s['seeds']}",
        f"settings: {json.dumps(s)}",
        f"pipeline passthrough: {payload['passthrough']}",
    ]
    out = [f"# ClusterFit reproduction ({payload['preset']} preset)", ""]
    out += header_lines(payload["machine"], extra) + [""] + _intro(payload)
    if png:
        out += [f"![accuracy per layer]({os.path.basename(png)})", ""]
    out += markdown_sections(acc_tables, "##")
    out += [
        "## N_cf vs N_pre (generated from the numbers above)",
        "",
        COMPARISON_INTRO,
        "",
    ]
    out += markdown_sections(cmp_tables, "###")
    if cmp_lines:
        out += ["Summary:", ""] + [f"- {l}" for l in cmp_lines] + [""]
    out += markdown_sections(extra_tables, "##")
    fits, unconverged = logreg_convergence(payload["per_seed"])
    if fits:
        out += [
            f"Logistic regressions (probes) that stopped at max_iter: {unconverged} of "
            f"{fits} (probe, layer) entries.",
            "",
        ]
    return "\n".join(out) + "\n"
