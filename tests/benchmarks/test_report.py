"""benchmarks.report: seed differences against scipy, table rendering."""

import math
import os

import pytest
from scipy import stats

from benchmarks.plugin import Difference
from benchmarks.report import (
    format_cell,
    format_difference,
    format_mean_std,
    format_table,
    markdown_sections,
    mean_std,
    paired_difference,
    plot_layer_panels,
    welch_difference,
)


def _scipy_paired(a, b, confidence=0.95):
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    se = stats.tstd(d) / math.sqrt(n)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * se
    return mean, se, mean - half, mean + half


@pytest.mark.parametrize(
    "a, b",
    [
        ([70.1, 68.4], [66.3, 65.0]),  # 2 seeds: t with 1 degree of freedom
        ([70.1, 68.4, 69.9], [66.3, 65.0, 67.2]),
        ([1.0, 2.0, 3.0, 4.0, 5.5], [0.5, 2.5, 2.0, 4.5, 5.0]),
    ],
)
def test_paired_difference_matches_scipy(a, b) -> None:
    d = paired_difference(a, b)
    mean, se, lo, hi = _scipy_paired(a, b)
    assert d.paired and d.n == len(a) and d.df == len(a) - 1
    for name, ours, ref in (
        ("diff", d.diff, mean),
        ("se", d.se, se),
        ("ci_low", d.ci_low, lo),
        ("ci_high", d.ci_high, hi),
    ):
        assert abs(ours - ref) < 1e-9, (name, ours, ref)
    # the same interval as scipy's paired t test
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert abs(d.ci_low - ci.low) < 1e-9 and abs(d.ci_high - ci.high) < 1e-9, (d, ci)


def test_paired_difference_two_seeds_is_wide() -> None:
    # |diff| = 7 SE: beyond 2 SE, yet inside the 95% interval of t with 1 df (12.71)
    d = paired_difference([10.0, 12.0], [4.0, 4.0])
    assert abs(d.diff / d.se - 7.0) < 1e-12, d
    assert not d.excludes_zero, d
    assert format_difference(d) == "+7.00 ± 1.00"


def test_paired_difference_one_seed_has_no_error() -> None:
    d = paired_difference([70.0], [66.5])
    assert d == Difference(3.5, 1, True)
    assert not d.excludes_zero
    assert format_difference(d) == "+3.50"


def test_paired_difference_rejects_unequal_lengths() -> None:
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


def test_welch_difference_matches_scipy() -> None:
    a, b = [70.1, 68.4, 69.9, 71.0], [66.3, 65.0, 67.2]
    d = welch_difference(a, b)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert not d.paired
    assert abs(d.diff - (sum(a) / 4 - sum(b) / 3)) < 1e-12
    assert abs(d.df - res.df) < 1e-9, (d.df, res.df)
    assert abs(d.ci_low - ci.low) < 1e-9 and abs(d.ci_high - ci.high) < 1e-9, (d, ci)
    assert d.excludes_zero and format_difference(d).endswith(" *"), d


def test_mean_std_is_the_sample_std() -> None:
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert abs(mean - 7 / 3) < 1e-12 and abs(std - stats.tstd([1, 2, 4])) < 1e-12
    assert math.isnan(mean_std([5.0])[1])


def test_formatting_of_cells() -> None:
    assert format_mean_std(78.123, 0.456) == "78.12 ± 0.46"
    assert format_mean_std(78.123, None) == "78.12"
    assert format_mean_std(78.123, float("nan")) == "78.12"
    # a rounded -0.004 is shown as +0.00, not -0.00
    assert format_difference(Difference(-0.004, 1, True)) == "+0.00"
    cells = [None, float("nan"), 1234.5, 12.34, 1.234, 0.001234, 7, "x"]
    assert [format_cell(v) for v in cells] == [
        "-",
        "-",
        "1234",
        "12.3",
        "1.23",
        "0.0012",
        "7",
        "x",
    ]


ROWS = [{"model": "N_pre", "res5": 81.96, "K": None}, {"model": "N_cf", "res5": 79.0}]


def test_format_table_markdown() -> None:
    assert format_table(ROWS, ["model", "res5", "K"], markdown=True) == (
        "| model | res5 | K |\n"
        "|---|---|---|\n"
        "| N_pre | 82.0 | - |\n"
        "| N_cf | 79.0 | - |"
    )


def test_format_table_text_is_right_aligned() -> None:
    assert format_table(ROWS, ["model", "res5"]).splitlines() == [
        "model  res5",
        "-----  ----",
        "N_pre  82.0",
        " N_cf  79.0",
    ]


def test_markdown_sections() -> None:
    tables = [{"title": "t1", "columns": ["model"], "rows": [{"model": "a"}]}]
    assert markdown_sections(tables, "##") == [
        "## t1",
        "",
        "| model |\n|---|\n| a |",
        "",
    ]


def test_plot_layer_panels_writes_a_png(tmp_path) -> None:
    path = str(tmp_path / "layers.png")
    series = [("N_pre", {"res4": (80.0, 1.0), "res5": (81.0, None)}, {"marker": "o"})]
    plot_layer_panels(path, [("a", series), ("b", series)], ["res4", "res5"], ncols=2)
    assert os.path.getsize(path) > 0
