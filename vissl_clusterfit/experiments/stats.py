"""The one paired-seed interval of the project's reports: the mean of per-seed paired
differences (seed s of model A minus seed s of model B) and its 95% confidence interval
from Student's t with n - 1 degrees of freedom.

Every comparison the project reports as a result is paired by seed (seed s of every
model starts from seed s's N_pre; ClusterFit, Yan et al. 2020, Sec. 3.2 and 4.2 compare
models trained from the same pre-training), so a one-sample t interval of the
differences is the paired t test's interval. The control experiment's report
(``experiments.control.report``) and the benchmarks (``benchmarks.report
.paired_difference``, through ``benchmarks.plugin``) both call this function.

The arithmetic is numpy's float64 ``mean`` / ``std(ddof=1)`` and the t quantile is
scipy's: committed reports store these numbers unrounded, so changing the order of the
operations would change them in the last bits.
"""

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Difference:
    """Mean of model A minus model B over ``n`` seeds, its standard error, the degrees
    of freedom of its t distribution and the ``confidence`` interval (se, df and the
    interval are None with one seed: there is no spread to estimate). ``paired``: the
    seeds were paired (``paired_interval``) rather than compared as two independent
    samples (the benchmarks' Welch difference)."""

    diff: float
    n: int
    paired: bool
    se: Optional[float] = None
    df: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    confidence: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        """The confidence interval lies entirely above or below 0."""
        if self.ci_low is None or self.ci_high is None:
            return False
        return self.ci_low > 0 or self.ci_high < 0

    def as_dict(self, digits: int = 2) -> Dict[str, Any]:
        """Every field, rounded to ``digits`` (df to 3): the benchmarks' records."""

        def r(v: Optional[float]) -> Optional[float]:
            return None if v is None else round(v, digits)

        return {
            "diff": r(self.diff),
            "se": r(self.se),
            "ci_low": r(self.ci_low),
            "ci_high": r(self.ci_high),
            "df": None if self.df is None else round(self.df, 3),
            "n": self.n,
            "paired": self.paired,
            "confidence": self.confidence,
        }

    def ci_dict(self) -> Dict[str, Any]:
        """``{"diff", "ci_low", "ci_high", "n"}``, unrounded: the layout the control
        experiment's report.json stores and its verdicts read."""
        return {
            "diff": self.diff,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": self.n,
        }


def paired_interval(
    differences: Sequence[float], confidence: float = 0.95
) -> Difference:
    """Mean and ``confidence`` t interval (n - 1 df) of per-seed paired differences.

    Args:
        differences: a - b for each seed both models have (at least one value).
        confidence: the interval's coverage, 0.95 for the reports' 95% intervals.
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError(
            "paired_interval needs a non-empty list of per-seed differences, got "
            f"shape {d.shape}"
        )
    mean, n = float(d.mean()), len(d)
    if n < 2:
        return Difference(mean, n, True, confidence=confidence)
    from scipy import stats  # imported here: most users of the package never need it

    sd = d.std(ddof=1)
    half = stats.t.ppf(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return Difference(
        mean,
        n,
        True,
        se=float(sd / math.sqrt(n)),
        df=n - 1.0,
        ci_low=float(d.mean() - half),
        ci_high=float(d.mean() + half),
        confidence=confidence,
    )
