"""Dask from plain scripts (no `if __name__ == "__main__":` guard, or piped to `python -`), no
dashboard unless asked, and a scheduler address that cannot be reached found before any run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from sklearn.datasets import load_breast_cancer

from automl_bilevel import BilevelClassifier
from automl_bilevel.run.parallel import DaskExecutor
from mlflow import MlflowClient

SCRIPT = """
from sklearn.datasets import load_breast_cancer
from automl_bilevel import BilevelClassifier

class Scaled:  # defined in the script itself: travels to the workers by value
    pass

est = BilevelClassifier("sklearn", "val_error", "random", n_iter=4, n_workers=2, tracking=False,
                        random_state=0).fit(*load_breast_cancer(return_X_y=True))
print("TRIALS", est.n_trials_, flush=True)
"""


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_n_workers_from_a_script_without_a_main_guard(tmp_path, how):
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    if how == "file":
        path = tmp_path / "plain.py"
        path.write_text(SCRIPT)
        proc = subprocess.run(
            [sys.executable, str(path)], capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path
        )
    else:
        proc = subprocess.run(
            [sys.executable, "-"], input=SCRIPT, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("TRIALS 4") == 1  # the fit ran once: the workers did not run the script again


def test_a_local_cluster_starts_no_dashboard_on_8787():
    with DaskExecutor(1) as ex:
        scheduler = ex._cluster.scheduler
        ports = [s.getsockname()[1] for s in scheduler.http_server._sockets.values()]
        hosts = {s.getsockname()[0] for s in scheduler.http_server._sockets.values()}
        assert 8787 not in ports and hosts <= {"127.0.0.1"}
        import requests

        assert requests.get(f"http://127.0.0.1:{ports[0]}/status", timeout=10).status_code == 404  # no dashboard


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "address, error, message",
    [
        ("tcp://127.0.0.1:{port}", ConnectionError, "no Dask scheduler answers at"),
        ("127.0.0.1:8786", ValueError, "must look like 'tcp://host:8786'"),
        ("tcp://127.0.0.1:notaport", ValueError, "invalid port"),
    ],
)
def test_a_bad_dask_address_fails_fast_before_a_run_exists(tracking, address, error, message):
    uri, experiment = tracking
    est = BilevelClassifier(
        "sklearn",
        "val_error",
        "random",
        n_iter=2,
        dask_address=address.format(port=_closed_port()),
        tracking_uri=uri,
        experiment_name=experiment,
    )
    t0 = time.perf_counter()
    with pytest.raises(error, match=message):
        est.fit(*load_breast_cancer(return_X_y=True))
    assert time.perf_counter() - t0 < 10
    assert MlflowClient(uri).get_experiment_by_name(experiment) is None  # no run was started
