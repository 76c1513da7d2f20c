"""Trial records: one evaluation of the outer objective at one configuration."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

COMPLETE = "COMPLETE"
FAILED = "FAILED"


@dataclass(frozen=True)
class Evaluation:
    """What evaluating a proposal returns: the objective value plus optional extra metrics."""

    value: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    extra: Any = None


@dataclass(frozen=True)
class Trial:
    """One finished evaluation: its ``number`` in the run, the ``config`` and ``budget`` evaluated, the
    outer objective ``value`` (lower is better), ``status`` (``COMPLETE`` or ``FAILED``, with ``error``),
    ``duration`` in seconds and extra ``metrics``."""

    number: int
    config: Mapping[str, Any]
    value: float
    status: str = COMPLETE
    duration: float = 0.0
    budget: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    #: what the evaluation handed back for ``tell`` only (``Evaluation.extra``, e.g. a hypergradient);
    #: the loop drops it once ``tell`` has run, so recorded trials never hold it
    extra: Any = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the trial completed with a finite value."""
        return self.status == COMPLETE and math.isfinite(self.value)


def best_trial(trials: Sequence[Trial]) -> Trial | None:
    """The completed trial with the lowest value among those at the highest budget (``None`` if none completed)."""
    done = [t for t in trials if t.ok]
    if not done:
        return None
    top = max((t.budget or 1.0) for t in done)
    done = [t for t in done if (t.budget or 1.0) == top]
    return min(done, key=lambda t: (t.value, t.number))


def history_table(trials: Sequence[Trial]) -> dict[str, list[Any]]:
    """Trials as a dict of columns (like ``cv_results_``; ``pandas.DataFrame(history)`` works).

    As in Optuna's ``Study.trials_dataframe()``, every hyperparameter has its own column
    ``params_<name>`` (``None`` where a trial did not set it: an inactive conditional
    hyperparameter, or a failed trial of another space). ``params`` keeps each trial's whole
    configuration as one dict, ``budget`` the fraction of the full training a trial had
    (``None``: all of it; multi-fidelity optimizers evaluate one configuration at several budgets).
    """
    best_so_far: list[float] = []
    cur = math.inf
    for t in trials:
        if t.ok:
            cur = min(cur, t.value)
        best_so_far.append(cur)
    names: dict[str, None] = {}  # every hyperparameter name, in order of first appearance
    for t in trials:
        names.update(dict.fromkeys(t.config))
    table: dict[str, list[Any]] = {
        "number": [t.number for t in trials],
        "value": [t.value for t in trials],
        "best_value": best_so_far,
        "status": [t.status for t in trials],
        "duration": [t.duration for t in trials],
        "budget": [t.budget for t in trials],
        "params": [dict(t.config) for t in trials],
        "error": [t.error for t in trials],
    }
    for name in names:
        table[f"params_{name}"] = [t.config.get(name) for t in trials]
    return table
