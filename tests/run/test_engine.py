"""The search loop: events, failure isolation, Ctrl-C."""

from __future__ import annotations

import math

import pytest

from automl_bilevel import Run, RunFinished, RunStarted, TrialFinished, run_search
from automl_bilevel.core.events import RunContext
from automl_bilevel.testing import quadratic_problem
from automl_bilevel_plugins.optimizers.random_search import RandomSearch


class Recorder:
    info = {"recorded": True}

    def __init__(self):
        self.events = []

    def handle(self, event):
        self.events.append(event)


class Exploding:
    info = {}

    def handle(self, event):
        raise RuntimeError("listener bug")


def test_failures_are_recorded_and_the_search_goes_on():
    rec = Recorder()
    res = run_search(quadratic_problem(), RandomSearch(), n_iter=40, seed=1, run=Run(listeners=[("rec", rec)]))
    failed = [t for t in res.trials if not t.ok]
    assert failed and all("deliberate failure" in t.error and math.isnan(t.value) for t in failed)
    assert len(res.trials) == 40 and res.status == "FINISHED"
    assert [e.trial.number for e in rec.events] == list(range(40))
    assert all(isinstance(e, TrialFinished) for e in rec.events)
    assert rec.events[-1].best == res.best and res.best.ok


def test_a_broken_listener_is_dropped_and_the_run_goes_on():
    rec = Recorder()
    session = Run(listeners=[("bad", Exploding()), ("rec", rec)])
    with pytest.warns(RuntimeWarning, match="plugin 'bad' failed on TrialFinished.*listener bug"):
        res = run_search(quadratic_problem(), RandomSearch(), n_iter=5, seed=0, run=session)
    assert len(res.trials) == 5 and len(rec.events) == 5 and [n for n, _ in session.listeners] == ["rec"]
    assert session.info == {"recorded": True}


def test_ctrl_c_keeps_the_trials_found_so_far():
    problem = quadratic_problem()
    inner_fit = problem.learner.fit
    calls = {"n": 0}

    def fit(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return inner_fit(*a, **k)

    problem.learner.fit = fit
    res = run_search(problem, RandomSearch(), n_iter=10, seed=0)
    assert res.status == "KILLED" and res.stop_reason == "interrupted"
    assert len(res.trials) == 3 and res.best is not None


def test_run_finished_is_sent_once():
    rec = Recorder()
    ctx = RunContext("n", "classification", "a", "b", "c", {}, {}, {}, 1)
    s = Run(ctx, listeners=[("rec", rec)]).__enter__()
    s.finish("FINISHED")
    s.finish("FAILED")
    assert [type(e) for e in rec.events] == [RunStarted, RunFinished]


def test_evaluate_returning_garbage_fails_the_trial():
    class Bad(RandomSearch):
        def evaluate(self, problem, proposal):
            return 0.5

    res = run_search(quadratic_problem(), Bad(), n_iter=2, seed=0)
    assert all(not t.ok and "not Evaluation" in t.error for t in res.trials)
