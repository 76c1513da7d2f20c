"""Run events: frozen records that listeners (tracking, progress display) receive.

The order within one run is always::

    RunStarted, TrialFinished*, RunFinished

``RunFinished`` is sent exactly once, also when the run fails or is interrupted.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from automl_bilevel.core.jsonable import jsonable
from automl_bilevel.core.trials import Trial

if TYPE_CHECKING:
    from automl_bilevel.core.components import LearnedComponent


@dataclass(frozen=True)
class TrackingSettings:
    """What the user asked of tracking; interpreted by the tracking plugin."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "automl-bilevel"
    log_model: bool = True
    progress: bool = False
    #: the parent run's name (else the plugin chooses one)
    run_name: str | None = None
    #: log the run's figures (history, importances, ...) as PNG files at its end
    log_plots: bool = True
    #: the estimator's ``verbose``: 1 a progress bar, 2 also one line per trial
    verbose: int = 0


@dataclass(frozen=True)
class RunContext:
    """Everything a listener may want to know about a run before it starts."""

    name: str
    task: str
    learner: str
    objective: str
    optimizer: str
    params: Mapping[str, Any]
    plugins: Mapping[str, Mapping[str, str | None]]
    search_space: Mapping[str, Any]
    n_iter: int
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    trials_are_steps: bool = False
    #: trials replayed from a checkpoint: the first ``resumed_trials`` TrialFinished events of the run
    resumed_trials: int = 0


def plain(value: Any) -> Any:
    """A parameter value as something a tracker can log (:func:`automl_bilevel.core.jsonable.jsonable`)."""
    return jsonable(value)


def run_params(estimator: Any) -> dict[str, Any]:
    """An estimator's own parameters as loggable values, plus the user who ran it."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = "unknown"
    return {k: plain(v) for k, v in estimator.get_params(deep=False).items()} | {"user": user}


@dataclass(frozen=True)
class RunStarted:
    """The run is about to start; ``context`` describes it."""

    context: RunContext


@dataclass(frozen=True)
class TrialFinished:
    """One trial, population member or outer step has been evaluated (or has failed)."""

    trial: Trial
    best: Trial | None
    n_trials: int
    n_iter: int


@dataclass(frozen=True)
class RunFinished:
    """The run is over. ``status`` is ``FINISHED``, ``FAILED`` or ``KILLED`` (MLflow's words)."""

    status: str
    trials: tuple[Trial, ...]
    best: Trial | None
    duration: float
    model: Any = None
    error: str | None = None
    #: learned components to store with the run (a loss network, a learned optimizer), by name:
    #: :class:`~automl_bilevel.core.components.LearnedComponent` objects (``save(path)``, ``settings()``)
    artifacts: Mapping[str, LearnedComponent] = field(default_factory=dict)


@runtime_checkable
class RunListener(Protocol):
    """What ``bilevel_run_listener`` returns. ``info`` is merged into the estimator's ``run_info_``."""

    info: Mapping[str, Any]

    def handle(self, event: RunStarted | TrialFinished | RunFinished) -> None:
        """Receive one event of the run (in the order RunStarted, TrialFinished*, RunFinished)."""
