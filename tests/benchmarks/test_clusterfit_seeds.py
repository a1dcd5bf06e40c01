"""benchmarks.clusterfit_seeds: K chosen on validation, paired differences, report."""

import math

import pytest

from benchmarks import clusterfit_seeds as cs


def _records():
    """rotnet only; N_cf K=50 is best on validation, K=10 best on test."""
    out = []
    for seed, shift in ((0, 0.0), (1, 1.0), (2, 2.0)):
        for t in cs.TARGETS:
            rows = [
                ("N_pre", None, 70.0, 70.0 + shift),
                ("N_pre 2x", None, 71.0, 71.0 + shift),
                ("N_cf K=10", 10, 60.0, 90.0),
                ("N_cf K=50", 50, 80.0, 72.0 + 2 * shift),
                ("random init", None, 50.0, 50.0),
            ]
            for model, k, val, test in rows:
                out.append(dict(variant="rotnet", p=0, seed=seed, target=t,
                                model=model, k=k, val=val, test=test))  # fmt: skip
    return out


def test_k_is_chosen_on_validation_and_differences_are_paired():
    s = cs.summarise(_records(), ["rotnet"])
    assert s["chosen_k"]["rotnet fmnist10"] == {0: 50, 1: 50, 2: 50}
    d = s["differences"]["rotnet fmnist10 N_cf - N_pre"]
    # per seed (72 + 2s) - (70 + s) = 2 + s: 2, 3, 4
    assert d["diff"] == pytest.approx(3.0) and d["n"] == 3
    assert d["ci_high"] - d["diff"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert s["differences"]["rotnet digits10 random init - N_pre"][
        "diff"
    ] == pytest.approx(-21.0)
    ((h, hd),) = s["hyps"]
    assert h.startswith("H1 (primary): rotnet") and hd is d


def test_markdown_lists_hypotheses_models_and_chosen_k():
    s = cs.summarise(_records(), ["rotnet"])
    result = {"seeds": [0, 1, 2], "pretexts": ["rotnet"], "args": {}, "machine": {}}
    md = cs.markdown(result, s)
    assert "| H1 (primary): rotnet N_cf - N_pre > 0 on fmnist10 | +3.00 [" in md
    assert "| supported |" in md
    assert "| rotnet | N_cf K=10 | 90.00 ± 0.00 |" in md
    assert "- rotnet fmnist10: {0: 50, 1: 50, 2: 50}" in md
