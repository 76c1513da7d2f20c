"""The one search loop every outer optimizer runs in.

Failure isolation lives here: an evaluation that raises becomes a FAILED trial (with its error)
and the search goes on; a listener that raises is dropped with a warning; Ctrl-C stops the search
and keeps every trial found so far.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

from automl_bilevel.core.components import OuterOptimizer, Proposal
from automl_bilevel.core.events import TrialFinished
from automl_bilevel.core.problem import Problem
from automl_bilevel.core.space import config_dict
from automl_bilevel.core.trials import COMPLETE, FAILED, Trial, best_trial
from automl_bilevel.run.checkpoint import Checkpoint
from automl_bilevel.run.interrupts import deferred
from automl_bilevel.run.lifecycle import Run
from automl_bilevel.run.parallel import Executor, Outcome, make_executor
from automl_bilevel.run.runtime import problem_work, thread_policy

log = logging.getLogger("automl_bilevel")


class AllTrialsFailedError(RuntimeError):
    """No trial completed: there is no best configuration to refit."""


@dataclass
class SearchResult:
    """What :func:`run_search` returns: the ``trials`` in order, ``status`` (``FINISHED`` or ``KILLED``),
    why it stopped (``stop_reason``: ``n_iter``, ``timeout``, ``optimizer``, ``exhausted`` or ``interrupted``)
    and its ``duration`` in seconds."""

    trials: list[Trial] = field(default_factory=list)
    status: str = "FINISHED"
    stop_reason: str = "n_iter"
    duration: float = 0.0

    @property
    def best(self) -> Trial | None:
        """The best completed trial (:func:`~automl_bilevel.core.trials.best_trial`), or ``None``."""
        return best_trial(self.trials)


def make_trial(number: int, proposal: Proposal, outcome: Outcome) -> Trial:
    """The record of one finished evaluation (``extra`` carries ``Evaluation.extra`` to ``tell``)."""
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
        extra=ev.extra if ev is not None else None,
    )


def run_search(
    problem: Problem,
    optimizer: OuterOptimizer[Any],
    *,
    n_iter: int,
    seed: int,
    run: Run | None = None,
    timeout: float | None = None,
    executor: Executor | None = None,
    n_workers: int = 1,
    dask_address: str | None = None,
    checkpoint: Checkpoint | None = None,
) -> SearchResult:
    """Drive ``optimizer`` through ask/evaluate/tell until ``n_iter`` trials or ``timeout`` seconds.

    This is the one search loop of the package: hyperparameter searches, outer steps of gradient
    methods and meta-training all run here. Up to ``executor.slots`` proposals are in flight at once
    (one for the default in-process executor); trials are numbered in the order they finish. With a
    ``checkpoint`` (opened by :meth:`Checkpoint.open`), the trials it holds count toward ``n_iter`` and
    the optimizer continues from them (its saved outer state, else a replay), and every new trial is
    recorded as it is told. An ``ask`` that returns nothing while trials are in flight means "wait
    for them" (an ES generation not yet complete, a gradient step not yet back).

    Every finished trial is sent to the listeners of ``run`` (a :class:`~automl_bilevel.run.lifecycle.Run`),
    which keeps the trials for its ``RunFinished``. Evaluations run on ``executor``, else on one made
    for this search from ``n_workers`` and ``dask_address`` (in this process for one worker and no
    address, on Dask otherwise) and closed at its end.
    """
    with ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(make_executor(n_workers, dask_address))
        result = _search(problem, optimizer, n_iter, seed, run or Run(), timeout, executor, checkpoint)
    if run is not None:
        run.trials = list(result.trials)
    return result


def _search(
    problem: Problem,
    optimizer: OuterOptimizer[Any],
    n_iter: int,
    seed: int,
    session: Run,
    timeout: float | None,
    executor: Executor,
    checkpoint: Checkpoint | None,
) -> SearchResult:
    result = SearchResult()
    t0 = time.perf_counter()
    optimizer.n_iter = n_iter  # a hint for optimizers that size their design by the budget (SMAC)
    optimizer.setup(problem, seed)
    if checkpoint is not None:
        resumed = checkpoint.resume(optimizer)
        for trial in resumed:
            result.trials.append(trial)
            session.emit(TrialFinished(trial, best_trial(result.trials), len(result.trials), n_iter))
    executor.start(optimizer, problem)
    in_flight, submitted, stop = 0, len(result.trials), None
    with thread_policy(concurrent=executor.slots, work=problem_work(problem)):  # threads: runtime.py
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
                with deferred():  # told, kept, tracked and journaled, or none of them: a resume repeats nothing
                    optimizer.tell(proposal, trial)
                    trial = replace(trial, extra=None)  # what tell needed (a gradient) is not kept
                    result.trials.append(trial)
                    session.emit(TrialFinished(trial, best_trial(result.trials), len(result.trials), n_iter))
                    if checkpoint is not None:  # after the listeners (tracking spools it first): none is lost
                        checkpoint.record(trial, optimizer)
                if timeout is not None and time.perf_counter() - t0 >= timeout and in_flight:
                    executor.cancel()  # the budget is spent: what is still running is dropped
                    in_flight, stop = 0, "timeout"
            result.stop_reason = stop or "exhausted"
        except KeyboardInterrupt:
            executor.cancel()
            result.status, result.stop_reason = "KILLED", "interrupted"
    result.duration = time.perf_counter() - t0
    return result
