"""A Ctrl-C or SIGTERM that lands inside a trial's bookkeeping waits until the bookkeeping is done."""

from __future__ import annotations

import os
import signal

import pytest

from automl_bilevel import Run, TrialFinished, run_search
from automl_bilevel.run.checkpoint import Checkpoint
from automl_bilevel.run.interrupts import deferred
from automl_bilevel.testing import quadratic_problem
from automl_bilevel_plugins.optimizers.random_search import RandomSearch


@pytest.fixture(autouse=True)
def sigint_raises():
    """Ctrl-C raises KeyboardInterrupt in these tests, also when the suite runs as a background job
    (``cmd &``, nohup), where SIGINT is inherited as ignored."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_a_signal_inside_the_block_is_delivered_when_it_ends():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("rest of the block")
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_custom_sigterm_handler_gets_the_held_signal_and_is_restored():
    seen = []

    def handler(signum, frame):
        seen.append(signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        with deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []  # held
        assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, old)


class InterruptOnTrial:
    """A listener that sends Ctrl-C to its own process while trial ``at`` is being tracked."""

    info: dict = {}

    def __init__(self, at: int):
        self.at, self.seen = at, []

    def handle(self, event):
        if isinstance(event, TrialFinished):
            self.seen.append(event.trial.number)
            if event.trial.number == self.at:
                os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_while_a_trial_is_tracked_still_journals_it(tmp_path):
    # before: the trial was tracked (child run) but not journaled, so a resume ran and tracked it again
    problem = quadratic_problem()
    ck = Checkpoint(tmp_path / "ck.jsonl", {"test": "interrupt"})
    ck.open(0)
    listener = InterruptOnTrial(at=7)
    res = run_search(problem, RandomSearch(), n_iter=50, seed=0, run=Run(listeners=[("stop", listener)]), checkpoint=ck)
    assert res.status == "KILLED" and len(res.trials) == 8 and listener.seen == list(range(8))
    again = Checkpoint(tmp_path / "ck.jsonl", {"test": "interrupt"})
    again.open(0)
    assert len(again.trials) == 8  # trial 7 is in the journal as it is in the tracking store
    resumed = run_search(problem, RandomSearch(), n_iter=12, seed=0, checkpoint=again)
    assert [t.number for t in resumed.trials] == list(range(12))
    assert [t.config for t in resumed.trials[:8]] == [t.config for t in res.trials]
