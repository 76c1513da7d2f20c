"""The one search loop every outer optimizer runs in, and the run session that sends events.

Failure isolation lives here: an evaluation that raises becomes a FAILED trial (with its error)
and the search goes on; a listener that raises is dropped with a warning; Ctrl-C stops the search
and keeps every trial found so far.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from .components import OuterOptimizer, Proposal
from .events import RunContext, RunFinished, RunStarted, TrialFinished
from .parallel import Executor, Outcome, SequentialExecutor
from .problem import BilevelProblem
from .runtime import problem_work, thread_policy
from .space import config_dict
from .trials import COMPLETE, FAILED, Trial, best_trial

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
               error: str | None = None, artifacts: Mapping[str, Any] | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        trials = tuple(trials)
        self.emit(RunFinished(status, trials, best_trial(trials), duration, model, error, dict(artifacts or {})))


@dataclass
class SearchResult:
    trials: list[Trial] = field(default_factory=list)
    status: str = "FINISHED"
    stop_reason: str = "n_iter"
    duration: float = 0.0

    @property
    def best(self) -> Trial | None:
        return best_trial(self.trials)


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
    executor: Executor | None = None,
    resumed: Sequence[Trial] = (),
    on_trial: Callable[[Trial], None] | None = None,
) -> SearchResult:
    """Drive ``optimizer`` through ask/evaluate/tell until ``n_iter`` trials or ``timeout`` seconds.

    Up to ``executor.slots`` proposals are in flight at once (one for the default in-process
    executor); trials are numbered in the order they finish. ``resumed`` trials (from a
    checkpoint) are replayed into the optimizer first and count toward ``n_iter``; ``on_trial`` is
    called with every new trial (the checkpoint writer). An ``ask`` that returns nothing while
    trials are in flight means "wait for them" (an ES generation not yet complete).
    """
    session = session or RunSession()
    executor = executor or SequentialExecutor()
    result = SearchResult()
    t0 = time.perf_counter()
    optimizer.n_iter = n_iter  # a hint for optimizers that size their design by the budget (SMAC)
    optimizer.setup(problem, seed)
    if resumed:
        optimizer.replay(list(resumed))
        for trial in resumed:
            result.trials.append(trial)
            session.emit(TrialFinished(trial, best_trial(result.trials), len(result.trials), n_iter))
    executor.start(optimizer, problem)
    with thread_policy(concurrent=executor.slots, work=problem_work(problem)):  # threads sized to the work
        in_flight, submitted, stop = 0, len(result.trials), None
        try:
            while True:
                while stop is None and in_flight < executor.slots:
                    if submitted >= n_iter:
                        stop = "n_iter"
                    elif timeout is not None and time.perf_counter() - t0 >= timeout:
                        stop = "timeout"
                    elif optimizer.should_stop():
                        stop = "optimizer"
                    if stop is not None:
                        break
                    proposals = list(optimizer.ask(min(executor.slots - in_flight, n_iter - submitted)))
                    if not proposals:
                        if in_flight == 0:
                            stop = "exhausted"
                        break
                    for proposal in proposals:
                        executor.submit(proposal)
                    in_flight += len(proposals)
                    submitted += len(proposals)
                if in_flight == 0:
                    break
                proposal, outcome = executor.next_done()
                in_flight -= 1
                trial = make_trial(len(result.trials), proposal, outcome)
                if trial.error:
                    log.warning("trial %d failed: %s", trial.number, trial.error)
                result.trials.append(trial)
                if on_trial is not None:
                    on_trial(trial)
                optimizer.tell(proposal, trial)
                session.emit(TrialFinished(trial, best_trial(result.trials), len(result.trials), n_iter))
                if timeout is not None and time.perf_counter() - t0 >= timeout and in_flight:
                    executor.cancel()  # the budget is spent: what is still running is dropped
                    in_flight, stop = 0, "timeout"
            result.stop_reason = stop or "exhausted"
        except KeyboardInterrupt:
            executor.cancel()
            result.status, result.stop_reason = "KILLED", "interrupted"
    result.duration = time.perf_counter() - t0
    return result
