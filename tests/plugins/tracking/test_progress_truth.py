"""Progress that tells the truth (issue 25 item 3): one line per trial at verbose=2, a time left from the
trials that finished (not the start-up), a resumed run that says so, Ctrl-C that says "interrupted", and
--checkpoint / --resume on the command line."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest
from sklearn.datasets import load_iris

from automl_bilevel import (
    BilevelClassifier,
    RunContext,
    RunFinished,
    RunStarted,
    TrackingSettings,
    Trial,
    TrialFinished,
)
from automl_bilevel.frontends.cli import main
from automl_bilevel_plugins.tracking.progress import ProgressBar


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _context(n_iter=10, verbose=1, resumed=0, **params):
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
        tracking=TrackingSettings(progress=True, verbose=verbose),
        resumed_trials=resumed,
    )


def test_time_left_is_within_2x_of_the_truth_once_a_tenth_is_done():
    """30 s of start-up, a first trial of 10 s (imports, warm-up), then trials of 1 s: the mean time since
    the start said 4.9x the truth at a tenth of the run; the time between finished trials is exact."""
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(_context(100), stream=out, clock=clock)
    bar.handle(RunStarted(bar.context))
    clock.now += 30  # data, plugins, the tracking store
    best = None
    for i in range(100):
        d = 10.0 if i == 0 else 1.0
        clock.now += d
        t = Trial(i, {"lr": 0.1}, 1.0 / (i + 1), duration=d)
        best = t
        bar.handle(TrialFinished(t, best, i + 1, 100))
        truth = 100 - (i + 1)  # seconds left: one per trial to go
        left = bar.remaining(i + 1, 100)
        if i + 1 >= 10:
            assert truth / 2 <= left <= truth * 2, (i, left, truth)
    old_estimate = (30 + 10 + 9) / 10 * 90  # what elapsed / n said after 10 trials
    assert old_estimate > 4 * 90


def test_verbose_2_writes_one_line_per_trial_as_optuna_does():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(_context(3, verbose=2), stream=out, clock=clock)
    bar.handle(RunStarted(bar.context))
    a = Trial(0, {"lr": 0.012345678, "w": [1.0, 2.0]}, 0.5, duration=1.25)
    b = Trial(1, {"lr": 0.2}, float("nan"), status="FAILED", duration=0.5, error="diverged")
    c = Trial(2, {"lr": 0.05}, 0.25, duration=2.0)
    for n, (t, best) in enumerate(((a, a), (b, a), (c, c)), start=1):
        clock.now += t.duration
        bar.handle(TrialFinished(t, best, n, 3))
    lines = out.getvalue().splitlines()
    assert "trial 0: val_loss=0.5 (best 0.5 at trial 0) in 1.25s  {'lr': 0.01235, 'w': '<2 values>'}" in lines
    assert "trial 1 failed in 0.5s: diverged  {'lr': 0.2}" in lines
    assert "trial 2: val_loss=0.25 (best 0.25 at trial 2) in 2s  {'lr': 0.05}" in lines


def test_a_resumed_run_says_so_and_its_replayed_trials_take_no_time():
    clock, out = Clock(), io.StringIO()
    bar = ProgressBar(_context(10, verbose=2, resumed=4, checkpoint="ck.jsonl"), stream=out, clock=clock)
    bar.handle(RunStarted(bar.context))
    for i in range(4):  # replayed at once
        bar.handle(TrialFinished(Trial(i, {}, 1.0, duration=3.0), None, i + 1, 10))
    for i in range(4, 6):
        clock.now += 3.0
        bar.handle(TrialFinished(Trial(i, {}, 1.0, duration=3.0), None, i + 1, 10))
    lines = out.getvalue().splitlines()
    assert lines[1] == "resuming: 4 trials from ck.jsonl"
    assert not any(line.startswith(("trial 0", "trial 3")) for line in lines)  # no line per replayed trial
    assert any(line.startswith("trial 4:") for line in lines)
    assert bar.remaining(6, 10) == pytest.approx(12.0)  # 4 to go at 3 s, not at 6 s / 6 trials


def test_an_interrupted_run_says_interrupted():
    out = io.StringIO()
    bar = ProgressBar(_context(10), stream=out, clock=Clock())
    bar.handle(RunFinished("KILLED", tuple(Trial(i, {}, 1.0) for i in range(4)), None, 62.0))
    assert out.getvalue().splitlines()[-1] == "interrupted after 4 of 10 trials in 1m02s"


def test_a_verbose_2_fit_logs_every_trial(capsys):
    BilevelClassifier("sklearn", "val_error", n_iter=3, tracking=False, verbose=2, random_state=0).fit(
        *load_iris(return_X_y=True)
    )
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err if line.startswith("trial ")] == ["trial 0", "trial 1", "trial 2"]


def _toml(tmp_path, n_iter):
    path = tmp_path / "e.toml"
    path.write_text(
        f'[data]\ndataset = "iris"\n[estimator]\nlearner = "sklearn"\nobjective = "val_error"\nn_iter = {n_iter}\n'
        "random_state = 0\n[tracking]\nenabled = false\n"
    )
    return path


def test_cli_checkpoint_and_resume(tmp_path, capsys):
    exp, ck = _toml(tmp_path, 2), tmp_path / "ck.jsonl"
    assert main(["run", str(exp), "--checkpoint", str(ck)]) == 0
    assert len(ck.read_text().splitlines()) == 3  # the header and two trials
    capsys.readouterr()
    assert main(["run", str(exp), "--checkpoint", str(ck)]) == 2
    assert "already holds a run: pass --resume" in capsys.readouterr().err
    assert main(["run", str(exp), "--checkpoint", str(ck), "--resume", "--n-iter", "3"]) == 0
    err = capsys.readouterr().err
    assert f"resuming: 2 trials from {ck}" in err and "finished after 3 trials" in err
    assert main(["run", str(exp), "--resume"]) == 2
    assert "--resume needs a checkpoint" in capsys.readouterr().err
    assert main(["run", str(exp), "--checkpoint", str(tmp_path / "none.jsonl"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_ctrl_c_of_a_real_cli_run_says_interrupted(tmp_path):
    exp = _toml(tmp_path, 100000)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "automl_bilevel.frontends.cli",
            "run",
            str(exp),
            "--checkpoint",
            str(tmp_path / "c.jsonl"),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for a few trials in the checkpoint
        if (tmp_path / "c.jsonl").exists() and len((tmp_path / "c.jsonl").read_text().splitlines()) > 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    last = [line for line in err.splitlines() if "after" in line]
    assert any(line.startswith("interrupted after ") and "of 100000 trials" in line for line in last), err[-2000:]
    assert "killed" not in err.lower()
