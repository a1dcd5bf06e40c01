"""Statistics of the self-supervised seeds run, as pre-registered in benchmarks/README.md
("Pre-registered: the self-supervised reproduction, 10 seeds, with a random-N_pre
control").

Models per (pretext, seed, target), in records of ``vissl_clusterfit.experiments.control.report``'s
layout (``variant`` = the pretext, ``p`` = 0): ``N_pre``, ``N_pre 2x``, ``random init``,
``N_cf K=<k>`` (clusters of N_pre's res5 features) and ``N_cf(random N_pre) K=<k>``
(clusters of the seed's random-init trunk's res5 features; the same records under
every pretext). ``N_cf`` and ``N_cf(random N_pre)`` are the K of the best validation
accuracy per (pretext, seed, target) (ClusterFit Sec. 4.2 sweeps K; we choose it on
validation, never on test). Differences are paired by seed: mean and 95% t interval
with n - 1 df (``experiments.stats.paired_interval`` through ``control_report``).
"""

from typing import Any, Dict, List, Optional, Sequence

from benchmarks.plugin import control_report as cr


TARGETS = ("fmnist10", "tops4", "digits10")
PRIMARY_TARGET = "fmnist10"
RANDOM_NCF = "N_cf(random N_pre)"  # N_cf trained on clusters of a random-init N_pre
COMPARISONS = (  # (label, model a, model b): a - b, paired by seed
    ("N_cf - N_pre", "N_cf", "N_pre"),
    ("N_cf - N_pre 2x", "N_cf", "N_pre 2x"),
    ("N_pre 2x - N_pre", "N_pre 2x", "N_pre"),
    ("random init - N_pre", "random init", "N_pre"),
    (f"N_cf - {RANDOM_NCF}", "N_cf", RANDOM_NCF),
    (f"{RANDOM_NCF} - random init", RANDOM_NCF, "random init"),
    (f"{RANDOM_NCF} - N_pre", RANDOM_NCF, "N_pre"),
)


def fixed_k_comparisons(k: int) -> List[tuple]:
    """The secondary analysis without K selection: every N_cf at the same ``k``."""
    ncf, rnd = f"N_cf K={k}", f"{RANDOM_NCF} K={k}"
    return [
        (f"{ncf} - N_pre", ncf, "N_pre"),
        (f"{ncf} - {rnd}", ncf, rnd),
        (f"{rnd} - random init", rnd, "random init"),
    ]


def with_chosen_k(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The records plus ``N_cf`` and ``N_cf(random N_pre)``: each family's K of the
    best validation accuracy, chosen within the family (``control_report``'s rule,
    applied to the random family under N_cf's names and renamed back)."""
    rand = [r for r in records if r["model"].startswith(RANDOM_NCF)]
    own = [r for r in records if not r["model"].startswith(RANDOM_NCF)]
    as_ncf = [dict(r, model=r["model"].replace(RANDOM_NCF, "N_cf", 1)) for r in rand]
    chosen_rand = [
        dict(r, model=r["model"].replace("N_cf", RANDOM_NCF, 1))
        for r in cr.with_chosen_k(as_ncf)
    ]
    return cr.with_chosen_k(own) + chosen_rand


def k_counts(chosen: Dict[str, Dict[int, int]], family: str) -> Dict[int, int]:
    """How often each K was chosen over the cells of ``family`` ("N_cf" or
    RANDOM_NCF); the random family's cells repeat under every pretext, so only the
    first pretext's are counted."""
    out: Dict[int, int] = {}
    seen = set()
    for cell, ks in chosen.items():
        fam, _, target = cell.split(" | ")
        if fam != family or (family == RANDOM_NCF and target in seen):
            continue
        seen.add(target)
        for k in ks.values():
            out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def verdict(d: Optional[Dict[str, Any]], complete: bool, n_registered: int) -> str:
    """``control_report.verdict`` once every pre-registered seed is finished; before,
    no verdict (the pre-registration forbids reading interim intervals as results)."""
    if not complete:
        n = d["n"] if d else 0
        return f"interim, no verdict ({n} of {n_registered} seeds)"
    return cr.verdict(d)


def summarise(
    records: Sequence[Dict[str, Any]],
    pretexts: Sequence[str],
    fixed_k: int,
) -> Dict[str, Any]:
    """Chosen K per cell, the paired comparisons (K chosen, and fixed at ``fixed_k``)
    and the hypotheses: ``primary`` (H1 RotNet, H2 Jigsaw: N_cf - N_pre > 0 on
    fmnist10), ``random_arm`` (does the gain come from N_pre?) and ``fixed_k``."""
    recs = with_chosen_k(records)
    rows = [*COMPARISONS, *fixed_k_comparisons(fixed_k)]
    diffs = {
        f"{p} | {t} | {label}": cr.compare(recs, a, b, variant=p, target=t)
        for p in pretexts
        for t in TARGETS
        for label, a, b in rows
    }
    chosen = {
        f"{fam} | {p} | {t}": cr.by_seed(recs, "k", model=fam, variant=p, target=t)
        for fam in ("N_cf", RANDOM_NCF)
        for p in pretexts
        for t in TARGETS
    }

    def at(p: str, label: str) -> Optional[Dict[str, Any]]:
        return diffs[f"{p} | {PRIMARY_TARGET} | {label}"]

    primary = [
        (
            f"H{i + 1} (primary): {p} N_cf - N_pre > 0 on {PRIMARY_TARGET}",
            at(p, "N_cf - N_pre"),
        )
        for i, p in enumerate(pretexts)
    ]
    random_arm = [
        (
            f"{p} N_cf - {RANDOM_NCF} > 0 on {PRIMARY_TARGET} (the gain comes from N_pre)",
            at(p, f"N_cf - {RANDOM_NCF}"),
        )
        for p in pretexts
    ]
    if pretexts:  # the random arm does not depend on the pretext: one row
        random_arm.append(
            (
                f"{RANDOM_NCF} - random init > 0 on {PRIMARY_TARGET} (cluster-and-"
                "retrain helps whatever N_pre is)",
                at(pretexts[0], f"{RANDOM_NCF} - random init"),
            )
        )
    fixed = [
        (f"{p} {label} on {PRIMARY_TARGET}", at(p, label))
        for p in pretexts
        for label, _, _ in fixed_k_comparisons(fixed_k)[:2]
    ]
    return {
        "records": recs,
        "differences": diffs,
        "chosen_k": chosen,
        "k_counts": {fam: k_counts(chosen, fam) for fam in ("N_cf", RANDOM_NCF)},
        "hyps": {"primary": primary, "random_arm": random_arm, "fixed_k": fixed},
    }
