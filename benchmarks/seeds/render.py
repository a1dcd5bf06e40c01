"""The Markdown report of ``benchmarks.clusterfit_seeds`` (``result``: the results
json's content, ``s``: ``analysis.summarise``'s output)."""

from typing import Any, Dict, List, Sequence, Tuple

from benchmarks.common import header_lines
from benchmarks.plugin import control_report as cr
from benchmarks.seeds.analysis import RANDOM_NCF, TARGETS, verdict


def _hyp_table(rows: Sequence[Tuple[str, Any]], result: Dict[str, Any]) -> List[str]:
    n_reg = len(result["seeds"])
    out = ["| hypothesis | mean [95% CI] (n) | verdict |", "|---|---|---|"]
    out += [
        f"| {h} | {cr.fmt_diff(d)} | {verdict(d, result['complete'], n_reg)} |"
        for h, d in rows
    ]
    return out


def _status(result: Dict[str, Any]) -> List[str]:
    done, reg = result["seeds_finished"], result["seeds"]
    if result["complete"]:
        return [f"All {len(reg)} pre-registered seeds {reg} are finished."]
    return [
        f"**Interim report**: {len(done)} of the {len(reg)} pre-registered seeds are "
        f"finished ({done}). The pre-registration (benchmarks/README.md) allows no "
        "verdict and no early stop before all of them are: the intervals below are "
        "progress, not results."
    ]


def _sources(result: Dict[str, Any]) -> List[str]:
    lines = []
    for seed, src in sorted(result["sources"].items(), key=lambda kv: int(kv[0])):
        if src.get("reused_from"):
            r = src["reused_from"]
            lines.append(
                f"- seed {seed}: N_pre, N_pre 2x, N_cf K=* and random init from "
                f"`{r['path']}` (commit `{r['commit']}`, {r['date']}); random init "
                f"re-probed identically; {RANDOM_NCF} trained at commit "
                f"`{src['commit']}`"
            )
        else:
            lines.append(
                f"- seed {seed}: every arm trained at commit `{src['commit']}`"
            )
    return lines


def _model_rows(recs: Sequence[Dict[str, Any]], pretexts: Sequence[str]) -> List[str]:
    def by_k(prefix: str) -> List[str]:
        found = {r["model"] for r in recs if r["model"].startswith(prefix + " K=")}
        return sorted(found, key=lambda m: int(m.rsplit("=", 1)[1]))

    models = ["random init", "N_pre", "N_pre 2x", "N_cf", *by_k("N_cf")]
    models += [RANDOM_NCF, *by_k(RANDOM_NCF)]
    lines = ["| pretext | model | " + " | ".join(TARGETS) + " |"]
    lines += ["|---|---|" + "---|" * len(TARGETS)]
    for p in pretexts:
        for m in models:
            cells = [
                cr.mean_sd(cr.by_seed(recs, model=m, variant=p, target=t))
                for t in TARGETS
            ]
            lines.append(f"| {p} | {m} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: Dict[str, Any], s: Dict[str, Any]) -> str:
    recs, pretexts = s["records"], result["pretexts"]
    title = "ClusterFit, self-supervised N_pre, with a random-N_pre control"
    lines = [f"# {title}: seeds {result['seeds_finished']}", ""]
    lines += header_lines(result["machine"], [f"args: `{result['args']}`"])
    lines += ["", *_status(result), "", "Where each seed's records come from:", ""]
    lines += _sources(result)
    sections = (
        ("Pre-registered primary hypotheses (K chosen on validation)", "primary"),
        (
            f"Pre-registered random-N_pre arm ({RANDOM_NCF}: K chosen on validation)",
            "random_arm",
        ),
        (
            f"Pre-registered secondary analysis: fixed K = {result['fixed_k']}",
            "fixed_k",
        ),
    )
    for heading, key in sections:
        lines += ["", f"## {heading}", "", *_hyp_table(s["hyps"][key], result)]
    lines += ["", "## Paired differences, test top-1 (points)", ""]
    lines += [
        "| pretext | target | comparison | mean [95% CI] (n) |",
        "|---|---|---|---|",
    ]
    for key, d in s["differences"].items():
        p, t, label = key.split(" | ")
        lines.append(f"| {p} | {t} | {label} | {cr.fmt_diff(d)} |")
    lines += ["", "## Test top-1 per model (mean ± sd over seeds)", ""]
    lines += _model_rows(recs, pretexts)
    lines += ["", "K of the best validation accuracy per seed ({seed: K}):", ""]
    lines += [f"- {cell}: {ks}" for cell, ks in s["chosen_k"].items()]
    lines += ["", "How often each K was chosen ({K: picks}):", ""]
    lines += [f"- {fam}: {counts}" for fam, counts in s["k_counts"].items()]
    return "\n".join(lines) + "\n"
