"""The one search loop every outer optimizer runs in, and the run session that sends events.

Failure isolation lives here: an evaluation that raises becomes a FAILED trial (with its error)
and the search goes on; a listener that raises is dropped with a warning; Ctrl-C stops the search
and keeps every trial found so far.
"""
from __future__ import annotations

import logging
import math
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from .components import OuterOptimizer, Proposal
from .events import RunContext, RunFinished, RunStarted, TrialFinished
from .problem import BilevelProblem
from .space import config_dict
from .trials import COMPLETE, FAILED, Evaluation, Trial, best_trial

log = logging.getLogger("automl_bilevel")


class AllTrialsFailedError(RuntimeError):
    """No trial completed: there is no best configuration to refit."""


class RunSession:
    """Holds the listeners of one run; sends each event to all of them; ``finish`` once."""

    def __init__(self, listeners: Iterable[tuple[str, Any]] = ()):
        self.listeners = list(listeners)
        self.finished = False

    @property
    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for _, listener in self.listeners:
            out.update(getattr(listener, "info", None) or {})
        return out

    def emit(self, event: Any) -> None:
        for entry in list(self.listeners):
            name, listener = entry
            try:
                listener.handle(event)
            except Exception as exc:  # a broken listener must not end the run
                warnings.warn(
                    f"listener of plugin {name!r} failed on {type(event).__name__} and is dropped: "
                    f"{type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.listeners.remove(entry)

    def start(self, context: RunContext) -> None:
        self.emit(RunStarted(context))

    def finish(self, status: str, trials: Iterable[Trial], duration: float, model: Any = None,
               error: str | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        trials = tuple(trials)
        self.emit(RunFinished(status, trials, best_trial(trials), duration, model, error))


@dataclass
class SearchResult:
    trials: list[Trial] = field(default_factory=list)
    status: str = "FINISHED"
    stop_reason: str = "n_iter"
    duration: float = 0.0

    @property
    def best(self) -> Trial | None:
        return best_trial(self.trials)


@dataclass(frozen=True)
class Outcome:
    """The result of evaluating one proposal: an evaluation or an error, and how long it took."""

    evaluation: Evaluation | None
    error: str | None
    duration: float


def evaluate_safely(optimizer: OuterOptimizer, problem: BilevelProblem, proposal: Proposal) -> Outcome:
    t0 = time.perf_counter()
    try:
        ev = optimizer.evaluate(problem, proposal)
        if not isinstance(ev, Evaluation):
            raise TypeError(f"{type(optimizer).__name__}.evaluate returned {type(ev).__name__}, not Evaluation")
        if not math.isfinite(ev.value):
            raise FloatingPointError(f"objective is {ev.value}")
        return Outcome(ev, None, time.perf_counter() - t0)
    except Exception as exc:
        log.debug("trial failed:\n%s", traceback.format_exc())
        return Outcome(None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)


Evaluator = Callable[[OuterOptimizer, BilevelProblem, list[Proposal]], Iterator[tuple[Proposal, Outcome]]]


def sequential_evaluator(optimizer: OuterOptimizer, problem: BilevelProblem,
                         proposals: list[Proposal]) -> Iterator[tuple[Proposal, Outcome]]:
    for p in proposals:
        yield p, evaluate_safely(optimizer, problem, p)


def make_trial(number: int, proposal: Proposal, outcome: Outcome) -> Trial:
    ev = outcome.evaluation
    return Trial(
        number=number,
        config=config_dict(proposal.config),
        value=ev.value if ev is not None else math.nan,
        status=COMPLETE if ev is not None else FAILED,
        duration=outcome.duration,
        budget=proposal.budget,
        metrics=dict(ev.metrics) if ev is not None else {},
        error=outcome.error,
    )


def run_search(
    problem: BilevelProblem,
    optimizer: OuterOptimizer,
    *,
    n_iter: int,
    seed: int,
    session: RunSession | None = None,
    timeout: float | None = None,
    evaluator: Evaluator = sequential_evaluator,
    batch_size: int = 1,
) -> SearchResult:
    """Drive ``optimizer`` through ask/evaluate/tell until ``n_iter`` trials or ``timeout`` seconds."""
    session = session or RunSession()
    result = SearchResult()
    t0 = time.perf_counter()
    optimizer.setup(problem, seed)
    try:
        while len(result.trials) < n_iter:
            if timeout is not None and time.perf_counter() - t0 >= timeout:
                result.stop_reason = "timeout"
                break
            if optimizer.should_stop():
                result.stop_reason = "optimizer"
                break
            proposals = optimizer.ask(min(batch_size, n_iter - len(result.trials)))
            if not proposals:
                result.stop_reason = "exhausted"
                break
            for proposal, outcome in evaluator(optimizer, problem, list(proposals)):
                trial = make_trial(len(result.trials), proposal, outcome)
                if trial.error:
                    log.warning("trial %d failed: %s", trial.number, trial.error)
                result.trials.append(trial)
                optimizer.tell(proposal, trial)
                session.emit(TrialFinished(trial, best_trial(result.trials), len(result.trials), n_iter))
    except KeyboardInterrupt:
        result.status, result.stop_reason = "KILLED", "interrupted"
    result.duration = time.perf_counter() - t0
    return result
