"""MLflow tracking against a real SQLite store (and, marked slow, a real `mlflow server`)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import mlflow
import mlflow.sklearn
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_iris

from automl_bilevel import BilevelClassifier
from automl_bilevel_plugins.tracking.mlflow_tracking import TrackingError


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


def runs_of(uri, experiment):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def test_a_tracked_fit_leaves_one_parent_and_one_child_per_trial(iris, tracking):
    uri, experiment = tracking
    X, y = iris
    est = BilevelClassifier(n_iter=4, random_state=0, tracking_uri=uri, experiment_name=experiment).fit(X, y)
    client, parents, children = runs_of(uri, experiment)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.run_id == est.mlflow_run_id_ and parent.info.status == "FINISHED"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert parent.data.params["learner"] == "logistic" and "plugin.optimizer" in parent.data.params
    assert parent.data.metrics["final.best_value"] == pytest.approx(est.best_value_)
    history = client.get_metric_history(parent.info.run_id, "value")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    child_values = sorted(c.data.metrics["value"] for c in children)
    assert child_values == pytest.approx(sorted(est.history_["value"]))
    assert all(set(c.data.params) == {"lr", "weight_decay"} for c in children)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best_config.json", "search_space.json", "trials.json", "optimization_trace.png", "model"} <= artifacts
    best = mlflow.artifacts.load_dict(f"{parent.info.artifact_uri}/best_config.json")
    assert best["params"] == pytest.approx(est.best_params_)
    mlflow.set_tracking_uri(uri)
    model = mlflow.sklearn.load_model(f"runs:/{est.mlflow_run_id_}/model")
    np.testing.assert_array_equal(model.predict(X), est.predict(X))


def test_env_variable_is_the_default_uri(iris, tracking, monkeypatch):
    uri, experiment = tracking
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    est = BilevelClassifier(n_iter=1, random_state=0, experiment_name=experiment).fit(*iris)
    assert est.run_info_["mlflow_tracking_uri"] == uri


def test_failed_trials_become_failed_child_runs(iris, tracking):
    uri, experiment = tracking
    BilevelClassifier(search_space={"lr": [1e6, 0.05], "optimizer": ["sgd"]}, n_iter=3, random_state=0,
                      tracking_uri=uri, experiment_name=experiment).fit(*iris)
    _, parents, children = runs_of(uri, experiment)
    statuses = sorted(c.info.status for c in children)
    assert statuses == ["FAILED", "FINISHED"]
    failed = [c for c in children if c.info.status == "FAILED"][0]
    assert "diverged" in failed.data.tags["automl_bilevel.error"]


def test_tracking_can_be_switched_off(iris, tracking, monkeypatch, tmp_path):
    uri, experiment = tracking
    est = BilevelClassifier(n_iter=1, tracking=False, tracking_uri=uri, experiment_name=experiment).fit(*iris)
    assert est.mlflow_run_id_ is None and MlflowClient(uri).get_experiment_by_name(experiment) is None
    monkeypatch.setenv("AUTOML_BILEVEL_DISABLE_PLUGINS", "mlflow_tracking")
    monkeypatch.chdir(tmp_path)
    BilevelClassifier(n_iter=1, experiment_name=experiment).fit(*iris)
    assert not (tmp_path / "mlflow.db").exists()


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("uri, message", [
    ("http://127.0.0.1:{port}", "unreachable"),
    ("sqlite:////nonexistent-dir-xyz/mlflow.db", "does not exist"),
])
def test_unreachable_store_fails_before_any_work(iris, uri, message, monkeypatch):
    import automl_bilevel.lifecycle as lifecycle

    called = []
    monkeypatch.setattr(lifecycle, "run_search", lambda *a, **k: called.append(1))
    est = BilevelClassifier(n_iter=2, tracking_uri=uri.format(port=_closed_port()))
    t0 = time.perf_counter()
    with pytest.raises(TrackingError, match=message):
        est.fit(*iris)
    assert not called and time.perf_counter() - t0 < 10 and not hasattr(est, "model_")


def test_ctrl_c_keeps_the_best_and_ends_the_run_killed(iris, tracking, monkeypatch):
    uri, experiment = tracking
    from automl_bilevel_plugins.learners import torch_learners

    real_fit, calls = torch_learners.TorchLearner.fit, {"n": 0}

    def fit(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_fit(self, *a, **k)

    monkeypatch.setattr(torch_learners.TorchLearner, "fit", fit)
    est = BilevelClassifier(n_iter=10, random_state=0, tracking_uri=uri, experiment_name=experiment)
    with pytest.raises(KeyboardInterrupt), pytest.warns(RuntimeWarning, match="interrupted after 2 trials"):
        est.fit(*iris)
    assert est.interrupted_ and est.n_trials_ == 2 and est.score(*iris) > 0.5  # refitted on the best so far
    _, parents, children = runs_of(uri, experiment)
    assert parents[0].info.status == "KILLED" and len(children) == 2


def test_a_failing_fit_ends_the_run_failed(iris, tracking):
    uri, experiment = tracking
    with pytest.raises(Exception, match="all 1 trials failed"):
        BilevelClassifier(search_space={"lr": [1e6], "optimizer": ["sgd"]}, n_iter=1, tracking_uri=uri,
                          experiment_name=experiment).fit(*iris)
    _, parents, _ = runs_of(uri, experiment)
    assert parents[0].info.status == "FAILED" and "all 1 trials failed" in parents[0].data.tags["automl_bilevel.error"]


@pytest.mark.slow
def test_against_a_real_mlflow_server(iris, tmp_path):
    port = _closed_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "art"),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    uri = f"http://127.0.0.1:{port}"
    try:
        import requests

        for _ in range(120):
            try:
                if requests.get(uri + "/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        est = BilevelClassifier(n_iter=3, random_state=0, tracking_uri=uri, experiment_name="server").fit(*iris)
        _, parents, children = runs_of(uri, "server")
        assert len(parents) == 1 and len(children) == 3 and parents[0].info.status == "FINISHED"
        mlflow.set_tracking_uri(uri)
        model = mlflow.sklearn.load_model(f"runs:/{est.mlflow_run_id_}/model")
        np.testing.assert_array_equal(model.predict(iris[0]), est.predict(iris[0]))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
