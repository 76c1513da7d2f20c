"""Tracking under faults: signals to a real `automl-bilevel run`, a spool written later by
`automl-bilevel sync`, and (slow) a real `mlflow server` killed and restarted mid-run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlflow import MlflowClient

TRIAL_TAG = "automl_bilevel.trial"

EXPERIMENT = """
name = "signals"
[data]
dataset = "iris"
[estimator]
learner = "sklearn"
objective = "val_error"
optimizer = "random"
n_iter = {n_iter}
random_state = 0
checkpoint = "{checkpoint}"
[search_space]
C = {{low = 0.01, high = 100.0, log = true}}
[tracking]
uri = "{uri}"
experiment = "signals"
"""


def cli() -> list[str]:
    script = Path(sys.executable).with_name("automl-bilevel")
    return [str(script)] if script.exists() else [sys.executable, "-m", "automl_bilevel.frontends.cli"]


def runs_of(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=5000) if exp else []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def assert_each_trial_once(children, n_trials: int) -> None:
    numbers = sorted(int(c.data.tags[TRIAL_TAG]) for c in children)
    assert numbers == list(range(n_trials)), f"{len(numbers)} children for {n_trials} trials"
    assert all(c.info.status in ("FINISHED", "FAILED") for c in children)


def journal_trials(path: Path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def default_sigint() -> None:
    """In the child, before it starts: SIGINT at its default, so Python raises KeyboardInterrupt on
    it. A suite started as a background job (``cmd &``, nohup) has SIGINT ignored, and children would
    inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_run(tmp_path: Path, n_iter: int = 5000, extra_env=None):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ck = tmp_path / "ck.jsonl"
    exp = tmp_path / "exp.toml"
    exp.write_text(EXPERIMENT.format(n_iter=n_iter, checkpoint=ck, uri=uri))
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(extra_env or {})}
    env.pop("AUTOML_BILEVEL_SPOOL_DIR", None)
    proc = subprocess.Popen(
        cli() + ["run", str(exp), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=default_sigint,
    )
    return proc, uri, ck


def wait_for_trials(proc, ck: Path, n: int, limit: float = 180) -> None:
    t0 = time.monotonic()
    while journal_trials(ck) < n:
        if proc.poll() is not None:
            pytest.fail(f"run ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > limit:
            proc.kill()
            pytest.fail("the run did not reach the wanted trial count")
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_keeps_the_best_and_ends_the_parent_killed(tmp_path, sig, code):
    proc, uri, ck = start_run(tmp_path)
    wait_for_trials(proc, ck, 30)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == code, err[-3000:]
    assert "[INTERRUPTED: best so far]" in out and "best val_error" in out
    n = journal_trials(ck)
    assert 30 <= n < 5000
    parents, children = runs_of(uri, "signals")
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    assert parents[0].data.metrics["final.n_trials"] == n
    assert_each_trial_once(children, n)
    assert not (tmp_path / "mlflow-spool").exists() or not any((tmp_path / "mlflow-spool").iterdir())


def test_a_second_ctrl_c_during_the_flush_leaves_consistent_records_and_sync_completes_them(tmp_path):
    # a slow flush: the background writer has thousands of trials to write when the run ends
    proc, uri, ck = start_run(tmp_path, n_iter=5000)
    wait_for_trials(proc, ck, 30)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-3000:]
    n = journal_trials(ck)
    parents, children = runs_of(uri, "signals")
    assert len(parents) == 1 and parents[0].info.status == "KILLED"  # the parent is never left RUNNING
    numbers = [int(c.data.tags[TRIAL_TAG]) for c in children]
    assert len(numbers) == len(set(numbers)) and set(numbers) <= set(range(n))  # no trial twice
    assert all(c.info.status in ("FINISHED", "FAILED") for c in children)
    sync = subprocess.run(
        cli() + ["sync", "--tracking-uri", uri],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert sync.returncode == 0, sync.stderr[-3000:]
    parents, children = runs_of(uri, "signals")
    assert_each_trial_once(children, n)
    assert parents[0].info.status == "KILLED" and "automl_bilevel.spool" not in parents[0].data.tags


# -- a real mlflow server, killed and restarted ----------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `mlflow server` on 127.0.0.1 whose store survives kill and restart."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.proc = folder, _free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend-store-uri",
                f"sqlite:///{self.folder}/server.db",
                "--artifacts-destination",
                str(self.folder / "art"),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        if wait:
            self.wait_up()

    def wait_up(self, limit: float = 120) -> None:
        import requests

        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            try:
                if requests.get(self.uri + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        pytest.fail("mlflow server did not start")

    def kill(self) -> None:  # the whole group: uvicorn's worker too
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path)
    srv.start()
    yield srv
    if srv.proc.poll() is None:
        srv.kill()


FIT = """
import sys, warnings
from sklearn.datasets import load_iris
from automl_bilevel import BilevelClassifier
uri, n = sys.argv[1], int(sys.argv[2])
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    est = BilevelClassifier("sklearn", "val_error", n_iter=n, random_state=0, tracking_uri=uri,
                            experiment_name="outage", search_space={"C": (0.01, 100.0, "log")})
    est.fit(*load_iris(return_X_y=True))
print("TRIALS", est.n_trials_)
print("WARN", " | ".join(str(x.message) for x in w if "kept in" in str(x.message)))
"""


def _fit_process(uri: str, n: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", FIT, uri, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **env},
        preexec_fn=default_sigint,
    )


@pytest.mark.slow
def test_server_killed_and_restarted_mid_run_loses_no_trial_and_logs_none_twice(server, tmp_path):
    spool = tmp_path / "spool"
    proc = _fit_process(server.uri, 400, {"AUTOML_BILEVEL_SPOOL_DIR": str(spool)})
    t0 = time.monotonic()
    while not (spool.exists() and any(spool.iterdir())):  # the parent run exists: the search is under way
        assert proc.poll() is None and time.monotonic() - t0 < 120, proc.stderr.read()[-3000:] if proc.poll() else ""
        time.sleep(0.05)
    time.sleep(1.0)
    server.kill()
    time.sleep(3.0)
    server.start()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "TRIALS 400" in out
    parents, children = runs_of(server.uri, "outage")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert_each_trial_once(children, 400)
    assert parents[0].data.metrics["final.n_trials"] == 400
    assert not any(spool.iterdir())  # everything written: the spool is gone


@pytest.mark.slow
def test_store_down_at_the_end_keeps_a_spool_that_sync_writes_once(server, tmp_path):
    spool = tmp_path / "spool"
    proc = _fit_process(server.uri, 300, {"AUTOML_BILEVEL_SPOOL_DIR": str(spool), "AUTOML_BILEVEL_FLUSH_TIMEOUT": "2"})
    t0 = time.monotonic()
    while not (spool.exists() and any(spool.iterdir())):
        assert proc.poll() is None and time.monotonic() - t0 < 120
        time.sleep(0.05)
    time.sleep(0.5)
    server.kill()  # and it stays down until the process has ended
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "TRIALS 300" in out and "automl-bilevel sync" in out and "automl-bilevel sync" in err
    folders = list(spool.iterdir())
    assert len(folders) == 1
    server.start()
    sync = subprocess.run(
        cli() + ["sync", str(folders[0])],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert sync.returncode == 0, sync.stderr[-3000:]
    assert "synced" in sync.stdout
    parents, children = runs_of(server.uri, "outage")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert_each_trial_once(children, 300)
    client = MlflowClient(server.uri)
    art = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"best_config.json", "trials.json", "optimization_trace.png"} <= art
    models = client.search_logged_models([parents[0].info.experiment_id])
    assert [(m.name, m.source_run_id) for m in models] == [("model", parents[0].info.run_id)]
    assert not folders[0].exists()


def test_a_killed_run_with_a_writer_thread_leaves_a_spool_that_sync_writes_exactly_once(tmp_path):
    proc, uri, ck = start_run(tmp_path, extra_env={"AUTOML_BILEVEL_TRACKING_WRITER": "thread"})
    wait_for_trials(proc, ck, 40)
    proc.kill()  # SIGKILL: no handler, no flush
    proc.communicate(timeout=60)
    n = journal_trials(ck)
    spools = list((tmp_path / "mlflow-spool").iterdir())
    assert len(spools) == 1
    parents, children = runs_of(uri, "signals")
    assert parents[0].info.status == "RUNNING" and len(children) <= n  # what a kill leaves
    sync = subprocess.run(
        cli() + ["sync", str(spools[0])],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert sync.returncode == 0, sync.stderr[-3000:]
    check_killed_run_complete(uri, n)
    assert not spools[0].exists()


def test_a_killed_run_with_a_writer_process_is_completed_by_the_writer(tmp_path):
    proc, uri, ck = start_run(tmp_path, extra_env={"AUTOML_BILEVEL_TRACKING_WRITER": "process"})
    wait_for_trials(proc, ck, 40)
    proc.kill()  # the search dies; its writer process notices, writes the spool and ends the run
    proc.communicate(timeout=60)
    n = journal_trials(ck)
    t0 = time.monotonic()
    while any((tmp_path / "mlflow-spool").iterdir()):
        assert time.monotonic() - t0 < 300, "the writer process did not finish"
        time.sleep(0.2)
    check_killed_run_complete(uri, n)


def check_killed_run_complete(uri: str, n: int) -> None:
    parents, children = runs_of(uri, "signals")
    # the checkpoint is written just before the spool: a kill between the two leaves one trial out
    assert len(children) in (n - 1, n)
    assert_each_trial_once(children, len(children))
    assert (
        parents[0].info.status == "KILLED"
        and "ended before the run did" in parents[0].data.tags["automl_bilevel.error"]
    )
