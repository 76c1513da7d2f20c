"""The run's figures, saved as PNG files for the run's artifacts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from automl_bilevel import Trial

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _robust_limits(values: list[float]) -> tuple[float, float] | None:
    """y limits that keep the bulk of the values visible when a few outliers are far away."""
    import numpy as np

    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if len(v) < 5:
        return None
    lo, hi = np.percentile(v, [0, 95])
    if v.max() <= hi or hi <= lo:
        return None
    pad = 0.05 * (hi - lo)
    return float(lo - pad), float(hi + pad)


def save_trace_plot(trials: Sequence[Trial], path: Path, *, steps: bool, ylabel: str, title: str) -> Figure:
    """The objective per trial and the best so far; integer trial ticks; a log axis for positive values
    spanning decades, else limits at the 95th percentile so one outlier does not flatten the rest."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    xs = [t.number for t in trials if t.ok]
    ys = [t.value for t in trials if t.ok]
    best: list[float] = []
    cur = math.inf
    for t in trials:
        cur = min(cur, t.value) if t.ok else cur
        best.append(cur)
    if steps:
        ax.plot(xs, ys, lw=1, label="objective")
    else:
        ax.scatter(xs, ys, s=12, alpha=0.6, label="trial")
    ax.step([t.number for t in trials], best, where="post", color="C3", label="best so far")
    failed = [t.number for t in trials if not t.ok]
    if failed:
        ax.scatter(failed, [min(ys) if ys else 0] * len(failed), marker="x", color="k", label="failed")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ys and min(ys) > 0 and max(ys) / min(ys) > 100:
        ax.set_yscale("log")
    else:
        limits = _robust_limits(ys)
        if limits is not None:
            ax.set_ylim(*limits)
            ax.set_title(f"{title} ({sum(y > limits[1] for y in ys)} above the plot)", fontsize=10)
    if not ax.get_title():
        ax.set_title(title)
    ax.set_xlabel("outer step" if steps else "trial")
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    return fig
