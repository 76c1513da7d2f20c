"""The progress display: best so far, elapsed time and an estimate of the time left."""

from __future__ import annotations

import io

from sklearn.datasets import load_iris

from automl_bilevel import BilevelClassifier, RunContext, RunFinished, RunStarted, Trial, TrialFinished
from automl_bilevel_plugins.tracking.progress import ProgressBar, duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _context(n_iter=10, **params):
    return RunContext(
        name="run-x",
        task="classification",
        learner="mlp",
        objective="val_loss",
        optimizer="random",
        params=params,
        plugins={},
        search_space={},
        n_iter=n_iter,
    )


def _trial(i, value=0.5, status="COMPLETE"):
    return Trial(i, {}, value, status)


def test_duration():
    assert [duration(s) for s in (0, 42.4, 65, 3599, 3720)] == ["0s", "42s", "1m05s", "59m59s", "1h02m"]


def test_time_left_is_the_mean_time_per_trial_times_the_trials_to_go():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(_context(10), stream=out, clock=clock)
    bar.handle(RunStarted(bar.context))
    clock.now += 30  # 3 trials in 30 s: 7 to go at 10 s each
    bar.handle(TrialFinished(_trial(2, 0.25), _trial(2, 0.25), 3, 10))
    clock.now += 2  # not 5 s since the last line: nothing written in a log
    bar.handle(TrialFinished(_trial(3, float("nan"), "FAILED"), _trial(2, 0.25), 4, 10))
    clock.now += 48  # 10 trials after 80 s
    bar.handle(TrialFinished(_trial(9), _trial(2, 0.25), 10, 10))
    bar.handle(RunFinished("FINISHED", tuple(_trial(i) for i in range(10)), None, 80.0))
    lines = out.getvalue().splitlines()
    assert lines[0] == "run-x: 10 trials (learner mlp, optimizer random)"
    assert lines[1] == "[#########---------------------] 3/10 best val_loss=0.25 failed=0 30s elapsed, ~1m10s left"
    assert lines[2] == "[##############################] 10/10 best val_loss=0.25 failed=1 1m20s elapsed"
    assert lines[3] == "finished after 10 trials in 1m20s" and len(lines) == 4


def test_time_left_is_capped_by_the_timeout():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(_context(100, timeout=60.0), stream=out, clock=clock)
    bar.handle(RunStarted(bar.context))
    clock.now += 20  # 100 trials would take 2000 s; the timeout leaves 40
    bar.handle(TrialFinished(_trial(0), _trial(0), 1, 100))
    assert out.getvalue().splitlines() == [
        "run-x: 100 trials, at most 1m00s (learner mlp, optimizer random)",
        "[------------------------------] 1/100 best val_loss=0.5 failed=0 20s elapsed, ~40s left",
    ]


def test_a_run_of_unknown_length_has_no_estimate():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(_context(0), stream=out, clock=clock)
    bar.handle(RunStarted(bar.context))
    clock.now += 7
    bar.handle(TrialFinished(_trial(0), None, 1, 0))
    assert out.getvalue().splitlines() == [
        "run-x: trials until stopped (learner mlp, optimizer random)",
        "1 trials best val_loss=n/a failed=0 7s elapsed",
    ]


def test_a_terminal_gets_one_line_redrawn_in_place():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    clock, out = Clock(), Tty()
    bar = ProgressBar(_context(2), stream=out, clock=clock)
    for i in (1, 2):
        clock.now += 1
        bar.handle(TrialFinished(_trial(i), _trial(i), i, 2))
    text = out.getvalue()
    assert text.count("\r") == 2 and "\n" not in text and "1/2" in text and "~1s left" in text


def test_verbose_fit_shows_progress_with_time_left(capsys):
    BilevelClassifier("sklearn", "val_error", n_iter=3, tracking=False, verbose=1, random_state=0).fit(
        *load_iris(return_X_y=True)
    )
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "BilevelClassifier-sklearn-random: 3 trials (learner sklearn, optimizer random)"
    assert err[1].startswith("[##########--------------------] 1/3 best val_error=") and err[1].endswith(" left")
    assert err[-2].startswith("[##############################] 3/3 best val_error=")
    assert err[-1].startswith("finished after 3 trials in ")


def test_outer_loops_outside_a_fit_report_each_step_as_it_happens(capsys):
    """ML3 and meta-training a learned optimizer run in the one loop: given a Run (run=), each
    outer step reaches its listeners as it happens (the progress bar moves while they run); rejected
    steps arrive as failed steps with their reason."""
    from sklearn.datasets import load_digits

    from automl_bilevel import Run
    from automl_bilevel.methods.learned import LSTMOptimizer, MLPOptimizee, meta_train_optimizer, sample_tasks
    from automl_bilevel.methods.recipes.metaloss import train_loss_network_ml3

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    tasks = sample_tasks(X[:1000], y[:1000], 2, n_train=40, n_val=200, seed=0)
    held = sample_tasks(X[1000:], y[1000:], 1, n_train=40, n_val=200, seed=1)
    with Run.tracked("ml3", n_iter=3, tracking=False, verbose=True) as run:
        _, res = train_loss_network_ml3(
            tasks,
            n_classes=10,
            outer_steps=3,
            outer_lr=1e-2,
            inner_steps=5,
            tasks_per_step=1,
            held_out=held,
            eval_every=2,
            run=run,
        )
    assert [t.value for t in run.trials] == res.values
    assert [("held_out_accuracy" in t.metrics) for t in run.trials] == [True, False, True]  # step 0, 2 and the last
    err = capsys.readouterr().err
    assert "ml3: 3 steps" in err and "] 1/3 best" in err and "finished after 3 steps" in err

    make = lambda seed: MLPOptimizee(X[:600], y[:600], hidden=(10,), batch_size=32, seed=seed)  # noqa: E731
    with Run.tracked("l2o", n_iter=2, tracking=False, verbose=True) as run:
        hist = meta_train_optimizer(LSTMOptimizer(seed=0), make, meta_iters=2, unroll=3, horizon=6, run=run)
    assert [t.value for t in run.trials] == hist["meta_loss"]
    assert [t.metrics["regularizer"] for t in run.trials] == hist["regularizer"]
    err = capsys.readouterr().err
    assert "l2o: 2 steps" in err and "2/2 best" in err and "finished after 2 steps" in err

    with Run.tracked("l2o-wild", n_iter=2, tracking=False) as run:  # a network that diverges: rejected steps
        meta_train_optimizer(LSTMOptimizer(seed=0, output_scale=1e38), make, meta_iters=2, unroll=3, horizon=6, run=run)
    assert [t.status for t in run.trials] == ["FAILED", "FAILED"] and all("diverged" in t.error for t in run.trials)
