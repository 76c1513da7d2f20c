"""No tracked trial lost (issue 24 items 2 and 3): private spool files written without following links,
a spool that cannot be written said loudly at the end, runs of a SIGKILLed process ended KILLED by the
next fit or by sync (spooled children written), sync completing the parent's steps."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
from sklearn.datasets import load_iris

from automl_bilevel import BilevelClassifier
from automl_bilevel.frontends.cli import main
from automl_bilevel_plugins.tracking.mlflow.spool import Spool
from automl_bilevel_plugins.tracking.mlflow.store import TRIAL_TAG, TrackingError
from mlflow import MlflowClient

EXPERIMENT = """
[data]
dataset = "iris"
[estimator]
learner = "sklearn"
objective = "val_error"
n_iter = 100000
random_state = 0
[tracking]
uri = "{uri}"
experiment = "{experiment}"
"""


def _runs(uri, experiment):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    parents = [r for r in runs if TRIAL_TAG not in r.data.tags]
    children = [r for r in runs if TRIAL_TAG in r.data.tags]
    return client, parents, children


def test_spool_files_are_private_and_never_written_through_a_link(tmp_path):
    spool = Spool.create(tmp_path / "root", "run1", {"uri": "x"})
    assert stat.S_IMODE(spool.folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in spool.folder.iterdir()) == ["spool.jsonl"]  # no temporary file left
    spool.append({"kind": "trial", "number": 0})
    assert [r["kind"] for r in spool.records()] == ["run", "trial"]
    # a link planted where a run's folder would go is refused, not written through
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "root" / "run2").symlink_to(target)
    with pytest.raises(TrackingError, match="already exists"):
        Spool.create(tmp_path / "root", "run2", {"uri": "x"})
    assert not any(target.iterdir())
    # a link planted at the spool file: the append fails (O_NOFOLLOW) and the target is untouched
    victim = tmp_path / "victim"
    victim.write_text("keep")
    spool.path.unlink()
    spool.path.symlink_to(victim)
    with pytest.raises(OSError) as info:
        spool.append({"kind": "trial", "number": 1})
    assert info.value.errno == errno.ELOOP and victim.read_text() == "keep"


def _full_disk_after(monkeypatch, n_ok):
    real = Spool.append
    calls = {"n": 0}

    def append(self, record):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, record)

    monkeypatch.setattr(Spool, "append", append)


def test_a_spool_that_cannot_be_written_is_said_loudly_with_the_untracked_trials(
    tracking, tmp_path, monkeypatch, capsys
):
    uri, experiment = tracking
    monkeypatch.setenv("AUTOML_BILEVEL_TRACKING_WRITER", "process")  # the spool is its only channel
    monkeypatch.setenv("AUTOML_BILEVEL_SPOOL_DIR", str(tmp_path / "spool"))
    _full_disk_after(monkeypatch, 2)  # two trials spooled, then the disk is full
    ck = tmp_path / "ck.jsonl"
    with pytest.warns(RuntimeWarning, match="NOT TRACKED"):
        est = BilevelClassifier(
            "sklearn",
            "val_error",
            n_iter=5,
            random_state=0,
            tracking_uri=uri,
            experiment_name=experiment,
            checkpoint=str(ck),
            log_plots=False,
        ).fit(*load_iris(return_X_y=True))
    err = capsys.readouterr().err
    assert "3 trial(s) are NOT TRACKED" in err and "No space left on device" in err
    assert f"they are in the checkpoint {ck}" in err
    assert len(est.trials_) == 5
    _, parents, _ = _runs(uri, experiment)
    assert [p.info.status for p in parents] == ["FINISHED"]  # ended, not left RUNNING


def test_with_the_writer_thread_a_full_spool_loses_nothing(tracking, tmp_path, monkeypatch, capsys):
    uri, experiment = tracking
    monkeypatch.setenv("AUTOML_BILEVEL_TRACKING_WRITER", "thread")
    monkeypatch.setenv("AUTOML_BILEVEL_SPOOL_DIR", str(tmp_path / "spool"))
    _full_disk_after(monkeypatch, 2)
    BilevelClassifier(
        "sklearn", "val_error", n_iter=5, random_state=0, tracking_uri=uri, experiment_name=experiment, log_plots=False
    ).fit(*load_iris(return_X_y=True))
    assert "NOT TRACKED" not in capsys.readouterr().err
    _, parents, children = _runs(uri, experiment)
    assert sorted(int(c.data.tags[TRIAL_TAG]) for c in children) == [0, 1, 2, 3, 4]


def _start_and_kill(tmp_path, uri, experiment, n_trials=3):
    exp = tmp_path / "e.toml"
    exp.write_text(EXPERIMENT.format(uri=uri, experiment=experiment))
    env = {
        **os.environ,
        "AUTOML_BILEVEL_SPOOL_DIR": str(tmp_path / "spool"),
        "AUTOML_BILEVEL_TRACKING_WRITER": "thread",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "automl_bilevel.frontends.cli", "run", str(exp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 120
    spooled = 0
    while time.monotonic() < deadline and spooled < n_trials:
        files = list((tmp_path / "spool").glob("*/spool.jsonl"))
        spooled = sum('"kind": "trial"' in line for line in files[0].read_text().splitlines()) if files else 0
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    (folder,) = [p.parent for p in (tmp_path / "spool").glob("*/spool.jsonl")]
    return folder, len(Spool(folder).records()) - 1


@pytest.mark.slow  # a real `automl-bilevel run` SIGKILLed: 20-50 s on a loaded machine
def test_a_sigkilled_run_is_ended_killed_by_the_next_fit_with_its_children(tracking, tmp_path, monkeypatch, capsys):
    uri, experiment = tracking
    folder, n = _start_and_kill(tmp_path, uri, experiment)
    client, parents, _ = _runs(uri, experiment)
    assert [p.info.status for p in parents] == ["RUNNING"]  # what SIGKILL leaves
    monkeypatch.setenv("AUTOML_BILEVEL_SPOOL_DIR", str(tmp_path / "spool"))
    BilevelClassifier(
        "sklearn", "val_error", n_iter=1, random_state=0, tracking_uri=uri, experiment_name=experiment, log_plots=False
    ).fit(*load_iris(return_X_y=True))
    assert "which is gone, written from its spool" in capsys.readouterr().err
    dead = client.get_run(parents[0].info.run_id)
    assert dead.info.status == "KILLED" and "best.C" in dead.data.params
    kids = [c for c in _runs(uri, experiment)[2] if c.data.tags["mlflow.parentRunId"] == dead.info.run_id]
    assert sorted(int(c.data.tags[TRIAL_TAG]) for c in kids) == list(range(n))  # every spooled trial, once
    assert not folder.exists()


# a real `automl-bilevel run` SIGKILLed: 5 s on a quiet machine, about 20 s on a loaded one
def test_sync_ends_a_sigkilled_run_and_runs_without_a_spool_and_says_so_in_one_line(
    tracking, tmp_path, monkeypatch, capsys
):
    uri, experiment = tracking
    folder, n = _start_and_kill(tmp_path, uri, experiment)
    client, parents, _ = _runs(uri, experiment)
    # a run of a process that died on this machine without a spool left to write
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = client.create_run(
        parents[0].info.experiment_id,
        tags={"automl_bilevel.pid": str(gone.pid), "automl_bilevel.host": socket.gethostname()},
    )
    monkeypatch.setenv("AUTOML_BILEVEL_SPOOL_DIR", str(tmp_path / "spool"))
    assert main(["sync", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    # (the killed process's writer may have written some children before the kill: sync writes the rest)
    assert "View run" not in out and re.search(rf"\(KILLED\): \d+ of {n} trials written now", out)
    kids = [c for c in _runs(uri, experiment)[2] if c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id]
    assert sorted(int(c.data.tags[TRIAL_TAG]) for c in kids) == list(range(n))  # every spooled trial, once
    assert f"ended   run {orphan.info.run_id} ended KILLED" in out
    assert out.splitlines()[-1].startswith("sync: 1 spooled run(s) written")
    assert client.get_run(parents[0].info.run_id).info.status == "KILLED"
    history = client.get_metric_history(parents[0].info.run_id, "best_value")
    assert sorted({m.step for m in history}) == list(range(n + 1))  # every step, and the final best
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert "its process" in client.get_run(orphan.info.run_id).data.tags["automl_bilevel.error"]
    assert not folder.exists()


def test_runs_of_dead_processes_are_ended_and_live_ones_left_alone(tracking, tmp_path, monkeypatch):
    from automl_bilevel_plugins.tracking.mlflow.reap import end_dead_runs

    uri, experiment = tracking
    monkeypatch.setenv("AUTOML_BILEVEL_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("AUTOML_BILEVEL_STALE_AFTER", "600")
    client = MlflowClient(uri)
    exp = client.create_experiment(experiment)
    now = int(time.time() * 1000)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = socket.gethostname()

    def run(pid, host, beat_ms):
        tags = {"automl_bilevel.pid": str(pid), "automl_bilevel.host": host, "automl_bilevel.heartbeat": str(beat_ms)}
        return client.create_run(exp, tags=tags).info.run_id

    alive_here = run(os.getpid(), here, now - 3_600_000)  # an old heartbeat, but the process is alive
    dead_here = run(gone.pid, here, now)
    stale_there = run(1, "another-machine", now - 1_200_000)  # 20 min without a heartbeat
    fresh_there = run(1, "another-machine", now - 60_000)
    users_own = client.create_run(exp).info.run_id  # not ours: no pid tag
    lines = end_dead_runs(client, uri, [exp])
    status = {r: client.get_run(r).info.status for r in (alive_here, dead_here, stale_there, fresh_there, users_own)}
    assert status == {
        alive_here: "RUNNING",
        dead_here: "KILLED",
        stale_there: "KILLED",
        fresh_there: "RUNNING",
        users_own: "RUNNING",
    }
    assert len(lines) == 2 and any(re.search(r"no heartbeat from another-machine for 12\d\d s", x) for x in lines)
    monkeypatch.setenv("AUTOML_BILEVEL_STALE_AFTER", "soon")
    with pytest.raises(TrackingError, match="AUTOML_BILEVEL_STALE_AFTER='soon' is not a number"):
        end_dead_runs(client, uri, [exp])


def test_the_end_message_names_the_cause_not_interrupted(tracking, tmp_path, monkeypatch, capsys):
    from automl_bilevel_plugins.tracking.mlflow.store import RunWriter

    uri, experiment = tracking
    monkeypatch.setenv("AUTOML_BILEVEL_TRACKING_WRITER", "thread")
    monkeypatch.setenv("AUTOML_BILEVEL_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("AUTOML_BILEVEL_FLUSH_TIMEOUT", "1")

    def down(self, records, should_stop=None):
        raise ConnectionError("store down")

    monkeypatch.setattr(RunWriter, "write_trials", down)
    with pytest.warns(RuntimeWarning, match="the store failed or was unreachable: ConnectionError: store down"):
        BilevelClassifier(
            "sklearn",
            "val_error",
            n_iter=2,
            random_state=0,
            tracking_uri=uri,
            experiment_name=experiment,
            log_plots=False,
        ).fit(*load_iris(return_X_y=True))
    err = capsys.readouterr().err
    assert "interrupted" not in err and "automl-bilevel sync" in err
    assert len(list((tmp_path / "spool").glob("*/spool.jsonl"))) == 1  # the trials wait in the spool


def test_ctrl_c_while_only_the_store_is_waited_for_does_not_interrupt_a_finished_fit(
    tracking, tmp_path, monkeypatch, capsys
):
    import threading

    from automl_bilevel_plugins.tracking.mlflow import writers
    from automl_bilevel_plugins.tracking.mlflow.store import RunWriter

    uri, experiment = tracking
    monkeypatch.setenv("AUTOML_BILEVEL_TRACKING_WRITER", "thread")
    monkeypatch.setenv("AUTOML_BILEVEL_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("AUTOML_BILEVEL_FLUSH_TIMEOUT", "60")

    def down(self, records, should_stop=None):
        raise ConnectionError("store down")

    monkeypatch.setattr(RunWriter, "write_trials", down)
    put = writers.BackgroundWriter.put

    def put_then_ctrl_c(self, item):
        put(self, item)
        if isinstance(item, tuple):  # the end: the fit now waits for the store; Ctrl-C then
            threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()

    monkeypatch.setattr(writers.BackgroundWriter, "put", put_then_ctrl_c)
    t0 = time.monotonic()
    with pytest.warns(RuntimeWarning, match="the store failed or was unreachable: ConnectionError: store down"):
        est = BilevelClassifier(
            "sklearn",
            "val_error",
            n_iter=3,
            random_state=0,
            tracking_uri=uri,
            experiment_name=experiment,
            log_plots=False,
        ).fit(*load_iris(return_X_y=True))
    assert time.monotonic() - t0 < 40  # not the 60 s flush timeout
    assert len(est.trials_) == 3 and not est.interrupted_
    assert MlflowClient(uri).get_run(est.mlflow_run_id_).info.status == "FINISHED"
    assert "automl-bilevel sync" in capsys.readouterr().err
