"""experiments.stats.paired_interval against scipy's paired t test and by hand."""

import math

import pytest
from scipy import stats as scipy_stats

from vissl_clusterfit.experiments.stats import paired_interval


def test_interval_by_hand() -> None:
    i = paired_interval([1.0, 2.0, 3.0])  # mean 2, sd 1
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * 1 / sqrt(3)
    assert (i.diff, i.n, i.df, i.paired) == (2.0, 3, 2.0, True)
    assert i.se == pytest.approx(1 / math.sqrt(3))
    assert (i.ci_low, i.ci_high) == pytest.approx((2 - half, 2 + half))
    assert i.ci_dict() == {
        "diff": 2.0,
        "ci_low": i.ci_low,
        "ci_high": i.ci_high,
        "n": 3,
    }


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_interval_is_scipys_paired_t_test(confidence: float) -> None:
    a, b = [70.1, 72.3, 69.8, 71.0, 73.4], [68.0, 71.9, 69.9, 69.2, 70.0]
    i = paired_interval([x - y for x, y in zip(a, b)], confidence)
    ref = scipy_stats.ttest_rel(a, b).confidence_interval(confidence)
    assert (i.ci_low, i.ci_high) == pytest.approx(
        (ref.low, ref.high), abs=1e-9
    ), f"ours [{i.ci_low}, {i.ci_high}] vs scipy [{ref.low}, {ref.high}]"


def test_one_difference_has_no_interval() -> None:
    i = paired_interval([0.5])
    assert (i.diff, i.n, i.se, i.ci_low, i.ci_high) == (0.5, 1, None, None, None)
    assert not i.excludes_zero


def test_no_differences_is_an_error() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        paired_interval([])
