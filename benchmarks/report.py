"""Tables, statistics and plots shared by the benchmarks' reports.

- tables: rows (dicts) as aligned text or GitHub Markdown;
- statistics over seeds: mean and sample standard deviation, and the difference of two
  models with its standard error and a 95% confidence interval from Student's t
  distribution (paired by seed when both were measured on the same seeds, else Welch);
  the paired interval is the package's one (``experiments.stats.paired_interval``,
  through ``benchmarks.plugin``), the Welch one uses the same scipy t quantile;
- plots: accuracy per layer, one panel per (probe, model family), as ClusterFit Fig. 4.

Importing this module imports neither torch, VISSL nor the plugin (the plugin and
scipy only when an interval is computed), so it stays cheap to import.
"""

import math
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple


if TYPE_CHECKING:  # the package's class; imported lazily to keep this module cheap
    from vissl_clusterfit.experiments.stats import Difference


# --------------------------------------------------------------------------- tables


def format_cell(value: Any) -> str:
    """A table cell: None and NaN as ``-``, floats with 2-3 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01:
            return f"{value:.2f}"
        return f"{value:.2g}"
    return str(value)


def format_table(
    rows: Iterable[Dict[str, Any]], columns: Sequence[str], markdown: bool = False
) -> str:
    """Rows (dicts) as an aligned text table, or a GitHub Markdown table."""
    cells = [[format_cell(r.get(c)) for c in columns] for r in rows]
    if markdown:
        lines = [
            "| " + " | ".join(columns) + " |",
            "|" + "|".join("---" for _ in columns) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [
        max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)
    ]
    fmt = "  ".join("{:>%d}" % w for w in widths)
    lines = [fmt.format(*columns), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in cells]
    return "\n".join(lines)


def print_table(
    rows: Iterable[Dict[str, Any]], columns: Sequence[str], title: str = ""
) -> None:
    if title:
        print(f"\n{title}")
    print(format_table(list(rows), columns), flush=True)


def print_tables(tables: Iterable[Dict[str, Any]]) -> None:
    """Titled tables (``{"title", "columns", "rows"}``) as text."""
    for t in tables:
        print_table(t["rows"], t["columns"], title=t["title"])


def markdown_sections(tables: Iterable[Dict[str, Any]], heading: str) -> List[str]:
    """Markdown lines for titled tables: ``<heading> <title>``, blank, table, blank."""
    lines: List[str] = []
    for t in tables:
        table = format_table(t["rows"], t["columns"], markdown=True)
        lines += [f"{heading} {t['title']}", "", table, ""]
    return lines


# --------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (n - 1; NaN with one value)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std of no values")
    mean = sum(values) / n
    if n == 1:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _with_interval(
    diff: float, n: int, paired: bool, se: float, df: float, confidence: float
) -> "Difference":
    from scipy import stats  # the t quantile of the package's paired_interval

    from benchmarks.plugin import Difference

    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * se
    return Difference(diff, n, paired, se, df, diff - half, diff + half, confidence)


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> "Difference":
    """mean(a - b) over paired measurements (seed i of A with seed i of B): standard
    error sd(a - b) / sqrt(n) and the ``confidence`` interval from Student's t with
    n - 1 degrees of freedom; no error or interval with one pair."""
    if len(a) != len(b) or not a:
        raise ValueError(
            f"paired_difference needs two equally long, non-empty lists, got {len(a)} "
            f"and {len(b)} values"
        )
    from benchmarks.plugin import paired_interval  # the package's one paired interval

    return paired_interval([x - y for x, y in zip(a, b)], confidence)


def welch_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> "Difference":
    """mean(a) - mean(b) of unpaired measurements: Welch's standard error and
    Welch-Satterthwaite degrees of freedom; no error or interval when a side has one
    value."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    n = min(len(a), len(b))
    if len(a) < 2 or len(b) < 2:
        from benchmarks.plugin import Difference

        return Difference(ma - mb, n, False)
    va, vb = sa**2 / len(a), sb**2 / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        df = float(len(a) + len(b) - 2)
    else:
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return _with_interval(ma - mb, n, False, se, df, confidence)


def format_mean_std(mean: float, std: Optional[float]) -> str:
    """``mean ± std`` with 2 decimals; the mean alone when there is no std."""
    out = f"{mean:.2f}"
    if std is not None and not math.isnan(std):
        out += f" ± {std:.2f}"
    return out


def format_difference(d: "Difference") -> str:
    """``+1.23 ± 0.45`` (difference ± standard error, 2 decimals), ``*`` when the
    confidence interval excludes 0; the difference alone with one seed."""
    out = f"{round(d.diff, 2) + 0.0:+.2f}"  # + 0.0: -0.0 (a rounded -0.004) as +0.00
    if d.se is not None:
        out += f" ± {d.se:.2f}" + (" *" if d.excludes_zero else "")
    return out


# --------------------------------------------------------------------------- plots

# (label, {layer: (mean, error bar or None)}, matplotlib style keywords)
Series = Tuple[str, Dict[str, Tuple[float, Optional[float]]], Dict[str, Any]]


def plot_layer_panels(
    path: str,
    panels: Sequence[Tuple[str, Sequence[Series]]],
    layers: Sequence[str],
    ncols: int,
    ylabel: str = "top-1 (%)",
) -> None:
    """A grid of accuracy-per-layer panels (``(title, series)`` each, row-major,
    ``ncols`` per row), one line with error bars per series; legends on the first row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not panels:
        return
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(5 * ncols, 2.8 * nrows), squeeze=False
    )
    for i, (title, series) in enumerate(panels):
        ax = axes[i // ncols][i % ncols]
        for label, points, style in series:
            xs = [l for l in layers if l in points]
            ys = [points[l][0] for l in xs]
            errs = [points[l][1] or 0.0 for l in xs]
            ax.errorbar(xs, ys, yerr=errs, capsize=2, label=label, **style)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if i < ncols:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
