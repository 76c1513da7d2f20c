"""The run's figures, saved as PNG files for the run's artifacts (drawn by :mod:`automl_bilevel.plot`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl_bilevel import Trial

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_TIMEOUT_ENV = "AUTOML_BILEVEL_PLOT_TIMEOUT"
DEFAULT_PLOT_TIMEOUT = 20.0  # seconds for the plots at a run's end; what is not drawn by then is skipped


def plot_timeout() -> float:
    """Seconds the plots at a run's end may take (``AUTOML_BILEVEL_PLOT_TIMEOUT``, default 20)."""
    raw = os.environ.get(PLOT_TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_PLOT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{PLOT_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not value >= 0:
        raise ValueError(f"{PLOT_TIMEOUT_ENV}={raw!r} must be >= 0 seconds")
    return value


def save_trace_plot(trials: Sequence[Trial], path: Path, *, steps: bool, ylabel: str, title: str) -> Figure:
    """The optimization history (:func:`automl_bilevel.plot.history`) saved to ``path``."""
    from automl_bilevel.plot import Trials, history

    fig = history(Trials(tuple(trials), ylabel, steps, title))
    fig.savefig(str(path), dpi=100)
    return fig


def save_run_plots(
    trials: Sequence[Trial], folder: Path, *, steps: bool, objective: str, title: str, timeout: float
) -> dict[str, Any]:
    """The run's other useful plots (importances, parallel coordinates, slice, contour; trajectories for
    outer steps) as ``folder/<name>.png``, within ``timeout`` seconds."""
    from automl_bilevel.plot import Trials, save_all
    from automl_bilevel.plot._plots import useful

    data = Trials(tuple(trials), objective, steps, title)
    names = [n for n in useful(data) if n != "history"]
    return save_all(data, folder, names=names, timeout=timeout)
