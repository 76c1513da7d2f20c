"""Dask faults: a worker lost while the problem is scattered is a retried (or failed) trial, never a crash;
the scheduler we tell users to start binds this machine only (issue 24)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from automl_bilevel.run.engine import run_search
from automl_bilevel.run.parallel import SCHEDULER_COMMAND, WORKER_COMMAND, DaskExecutor, check_address
from automl_bilevel.testing import quadratic_problem
from automl_bilevel_plugins.optimizers.random_search import RandomSearch


def _kill_one_worker_then(client, scatter_real):
    """``client.scatter`` that first SIGKILLs a worker process: the scatter then meets a worker the
    scheduler still lists but that is gone (what a worker killed mid-scatter looks like)."""
    calls = []

    def scatter(*args, **kwargs):
        if not calls:
            pids = client.run(os.getpid)
            os.kill(next(iter(pids.values())), signal.SIGKILL)
        calls.append(kwargs)
        return scatter_real(*args, **kwargs)

    return scatter, calls


def test_a_worker_killed_while_the_problem_is_scattered_does_not_crash_the_search():
    with DaskExecutor(2) as ex:
        patched, calls = _kill_one_worker_then(ex.client, ex.client.scatter)
        ex.client.scatter = patched
        result = run_search(quadratic_problem(), RandomSearch(), n_iter=6, seed=0, executor=ex)
    assert len(result.trials) == 6
    assert calls  # the scatter did happen with a worker killed under it
    assert sum(t.ok for t in result.trials) >= 1


def test_the_suggested_commands_bind_this_machine_only():
    assert "--host 127.0.0.1" in SCHEDULER_COMMAND and "--dashboard-address 127.0.0.1:0" in SCHEDULER_COMMAND
    assert "--host 127.0.0.1" in WORKER_COMMAND and "--dashboard-address 127.0.0.1:0" in WORKER_COMMAND
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=r"dask scheduler --host 127\.0\.0\.1 --dashboard-address 127\.0\.0\.1:0"):
        check_address(f"tcp://127.0.0.1:{port}", timeout=1)


def _listening(pid: int) -> set[str]:
    """The local addresses process ``pid`` listens on (TCP, from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        with open(f"/proc/net/{table}") as fh:
            for line in fh.readlines()[1:]:
                f = line.split()
                if f[3] == "0A" and f[9] in inodes:  # LISTEN
                    host, port = f[1].split(":")
                    out.add(f"{host[:width]}:{int(port, 16)}")
    return out


def _family(pid: int) -> list[int]:
    """``pid`` and its descendants (a worker's nanny starts the worker process)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:  # children of every thread (the nanny starts its worker from another thread)
            try:
                with open(f"/proc/{p}/task/{t}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
            except OSError:
                pass
    return out


def _wait_listening(pid: int, n: int) -> set[str]:
    deadline, addrs = time.time() + 60, set()
    while time.time() < deadline and len(addrs) < n:
        time.sleep(0.5)
        addrs = set().union(*(_listening(p) for p in _family(pid)))
    return addrs


def test_the_suggested_scheduler_and_worker_commands_listen_on_loopback_only(tmp_path):
    """Real ``dask scheduler`` and ``dask worker`` processes started with the commands we print:
    every socket they listen on (scheduler, dashboards, nanny, worker) is on 127.0.0.1."""
    dask = [sys.executable, "-m", "dask"]  # this interpreter's dask (a venv's dask script may name another)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scheduler = subprocess.Popen(
        [*dask, *SCHEDULER_COMMAND.split()[1:], "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    worker = None
    try:
        addrs = _wait_listening(scheduler.pid, 2)  # the scheduler and its dashboard
        assert len(addrs) >= 2 and all(a.startswith("0100007F:") for a in addrs), addrs  # not 0.0.0.0 or [::]
        worker_cmd = WORKER_COMMAND.replace("8786", str(port)).split()[1:]
        worker = subprocess.Popen(
            [*dask, *worker_cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path
        )
        addrs = _wait_listening(worker.pid, 3)  # nanny, worker and the worker's dashboard
        assert len(addrs) >= 3 and all(a.startswith("0100007F:") for a in addrs), addrs
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)


LOST_SCHEDULER_FIT = r"""
import sys, warnings
warnings.filterwarnings("ignore")
from sklearn.datasets import load_iris
from automl_bilevel import BilevelClassifier
X, y = load_iris(return_X_y=True)
address, checkpoint, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
kw = {"dask_address": address} if address != "-" else {}
try:
    est = BilevelClassifier("logistic", "val_loss", "random", n_iter=int(sys.argv[4]), checkpoint=checkpoint,
                            tracking=False, random_state=0, learner_params={"epochs": epochs}, **kw)
    est.fit(X.astype("float32"), y)
    print("FINISHED", est.n_trials_)
except Exception as exc:
    print("RAISED", type(exc).__name__, exc)
"""


@pytest.mark.slow
def test_a_lost_scheduler_ends_the_fit_with_one_line_naming_the_checkpoint(tmp_path):
    """Real ``dask scheduler`` and ``dask worker`` processes; the scheduler is SIGKILLed mid-search."""
    dask = [sys.executable, "-m", "dask"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": tmp_path}
    scheduler = subprocess.Popen([*dask, *SCHEDULER_COMMAND.split()[1:], "--port", str(port)], **quiet)
    worker = None
    script, checkpoint = tmp_path / "fit.py", tmp_path / "search.jsonl"
    script.write_text(LOST_SCHEDULER_FIT)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    try:
        assert _wait_listening(scheduler.pid, 2)
        worker = subprocess.Popen([*dask, *WORKER_COMMAND.replace("8786", str(port)).split()[1:]], **quiet)
        assert len(_wait_listening(worker.pid, 3)) >= 3
        fit = subprocess.Popen(
            [sys.executable, str(script), f"tcp://127.0.0.1:{port}", str(checkpoint), "3000", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.time() + 120
        while time.time() < deadline and (not checkpoint.exists() or len(checkpoint.read_text().splitlines()) < 3):
            time.sleep(0.2)
        scheduler.kill()  # SIGKILL, mid-search
        out, err = fit.communicate(timeout=120)
    finally:
        for proc in (worker, scheduler):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    kept = len(checkpoint.read_text().splitlines()) - 1
    assert kept >= 2
    assert "RAISED SchedulerLostError the Dask scheduler at tcp://127.0.0.1" in out, out + err[-3000:]
    assert f"the checkpoint {checkpoint} holds" in out and "to resume" in out
    assert "Traceback" not in err  # no tracebacks, only the one line (and Dask's own log line)
    resumed = subprocess.run(
        [sys.executable, str(script), "-", str(checkpoint), "3000", str(kept + 1)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert f"FINISHED {kept + 1}" in resumed.stdout, resumed.stdout + resumed.stderr[-3000:]
