"""MLflow tracking against a real SQLite store (and, marked slow, a real `mlflow server`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import mlflow.sklearn
import numpy as np
import pytest

import mlflow
from automl_bilevel import BilevelClassifier
from automl_bilevel_plugins.tracking.mlflow.store import TrackingError
from mlflow import MlflowClient


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
    history = client.get_metric_history(parent.info.run_id, "best_value")  # best so far per trial
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 4]  # and the run's best at step n_trials
    assert "value" not in parent.data.metrics  # a trial's own value is on its child only
    child_values = sorted(c.data.metrics["value"] for c in children)
    assert child_values == pytest.approx(sorted(est.history_["value"]))
    assert all(set(c.data.params) == {"lr", "weight_decay"} for c in children)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best_config.json", "search_space.json", "trials.json", "optimization_trace.png"} <= artifacts
    models = client.search_logged_models([parent.info.experiment_id])  # an MLflow 3 logged model
    assert [(m.name, m.source_run_id, m.status.value) for m in models] == [("model", parent.info.run_id, "READY")]
    info = mlflow.models.get_model_info(f"models:/{models[0].model_id}")
    assert info.signature.inputs.to_dict()[0]["type"] == "tensor" and info.saved_input_example_info
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
    BilevelClassifier(
        search_space={"lr": [1e6, 0.05], "optimizer": ["sgd"]},
        n_iter=3,
        random_state=0,
        tracking_uri=uri,
        experiment_name=experiment,
    ).fit(*iris)
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


@pytest.mark.parametrize(
    "uri, message",
    [
        ("http://127.0.0.1:{port}", "unreachable"),
        ("sqlite:////nonexistent-dir-xyz/mlflow.db", "does not exist"),
        ("sqlite://", "names no database file"),
        ("sqlite:///:memory:", "names no database file"),
        ("sqlite:///{tmp}", "is a folder, not a database file"),
    ],
)
def test_unreachable_store_fails_before_any_work(iris, uri, message, monkeypatch):
    import automl_bilevel.frontends.base as base

    called = []
    monkeypatch.setattr(base, "run_search", lambda *a, **k: called.append(1))
    est = BilevelClassifier(n_iter=2, tracking_uri=uri.format(port=_closed_port(), tmp=tempfile.mkdtemp()))
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
        BilevelClassifier(
            search_space={"lr": [1e6], "optimizer": ["sgd"]}, n_iter=1, tracking_uri=uri, experiment_name=experiment
        ).fit(*iris)
    _, parents, _ = runs_of(uri, experiment)
    assert parents[0].info.status == "FAILED" and "all 1 trials failed" in parents[0].data.tags["automl_bilevel.error"]


@pytest.mark.slow
def test_against_a_real_mlflow_server(iris, tmp_path):
    port = _closed_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(tmp_path / "art"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
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
        assert sorted(int(c.data.tags["automl_bilevel.trial"]) for c in children) == [0, 1, 2]
        mlflow.set_tracking_uri(uri)
        model = mlflow.sklearn.load_model(f"runs:/{est.mlflow_run_id_}/model")
        np.testing.assert_array_equal(model.predict(iris[0]), est.predict(iris[0]))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_fit_inside_an_active_mlflow_run_nests_under_it(iris, tracking):
    uri, experiment = tracking
    from sklearn.model_selection import cross_val_score

    mlflow.set_tracking_uri(uri)  # the same as MLFLOW_TRACKING_URI here
    with mlflow.start_run(experiment_id=MlflowClient(uri).create_experiment(experiment)) as outer:
        scores = cross_val_score(
            BilevelClassifier(
                "sklearn", "val_error", n_iter=2, random_state=0, tracking_uri=uri, experiment_name="elsewhere"
            ),
            *iris,
            cv=2,
        )
    assert len(scores) == 2
    client = MlflowClient(uri)
    runs = client.search_runs([outer.info.experiment_id], max_results=100)
    tops = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    fits = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == outer.info.run_id]
    assert [r.info.run_id for r in tops] == [outer.info.run_id]  # no new top-level runs
    assert len(fits) == 2 and all(r.info.status == "FINISHED" for r in fits)
    assert client.get_experiment_by_name("elsewhere") is None


def test_the_model_is_registrable(iris, tracking):
    uri, experiment = tracking
    est = BilevelClassifier(
        "sklearn", "val_error", n_iter=2, random_state=0, tracking_uri=uri, experiment_name=experiment
    ).fit(*iris)
    mlflow.set_tracking_uri(uri)  # the same as MLFLOW_TRACKING_URI here
    version = mlflow.register_model(f"runs:/{est.mlflow_run_id_}/model", f"reg-{experiment}")
    loaded = mlflow.pyfunc.load_model(f"models:/reg-{experiment}/{version.version}")
    np.testing.assert_array_equal(loaded.predict(iris[0]), est.predict(iris[0]))


def test_a_resumed_run_says_so_and_tags_the_replayed_trials(iris, tracking, tmp_path):
    uri, experiment = tracking
    ck = tmp_path / "ck.jsonl"
    kw = dict(
        search_space={"C": (0.01, 100.0, "log")},
        random_state=0,
        checkpoint=ck,
        tracking_uri=uri,
        experiment_name=experiment,
    )
    BilevelClassifier("sklearn", "val_error", n_iter=2, **kw).fit(*iris)
    est = BilevelClassifier("sklearn", "val_error", n_iter=3, **kw).fit(*iris)
    client = MlflowClient(uri)
    run = client.get_run(est.mlflow_run_id_)
    assert run.data.tags["automl_bilevel.resumed_trials"] == "2"
    kids = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    replayed = sorted(
        int(k.data.tags["automl_bilevel.trial"]) for k in kids if k.data.tags.get("automl_bilevel.replayed")
    )
    assert replayed == [0, 1] and len(kids) == 3


def test_the_spool_is_removed_once_everything_is_written(iris, tracking, tmp_path, monkeypatch):
    uri, experiment = tracking
    monkeypatch.setenv("AUTOML_BILEVEL_SPOOL_DIR", str(tmp_path / "spool"))
    est = BilevelClassifier(
        "sklearn", "val_error", n_iter=3, random_state=0, tracking_uri=uri, experiment_name=experiment
    ).fit(*iris)
    assert est.run_info_["mlflow_spool"].startswith(str(tmp_path / "spool"))
    assert not any((tmp_path / "spool").iterdir())


def test_the_trace_plot_has_whole_trial_ticks_and_survives_an_outlier(tmp_path):
    from automl_bilevel import Trial
    from automl_bilevel_plugins.tracking.mlflow.plots import save_trace_plot

    few = [Trial(i, {}, v) for i, v in enumerate([0.5, 0.4, 0.45])]
    fig = save_trace_plot(few, tmp_path / "a.png", steps=False, ylabel="val", title="t")
    ticks = fig.axes[0].get_xticks()
    assert all(float(t).is_integer() for t in ticks) and (tmp_path / "a.png").stat().st_size > 0
    outlier = [
        Trial(i, {}, v)
        for i, v in enumerate(
            [
                0.31,
                0.30,
                0.29,
                0.32,
                0.28,
                0.3,
                0.27,
                0.26,
                0.31,
                0.29,
                0.3,
                0.28,
                0.27,
                0.3,
                0.29,
                0.28,
                0.3,
                0.31,
                0.29,
                0.28,
                -0.5,
                900.0,
            ]
        )
    ]
    ax = save_trace_plot(outlier, tmp_path / "b.png", steps=False, ylabel="val", title="t").axes[0]
    lo, hi = ax.get_ylim()
    assert ax.get_yscale() == "linear" and hi < 10  # the 900 does not flatten the rest
    decades = [Trial(i, {}, 10.0**-i) for i in range(6)]
    assert save_trace_plot(decades, tmp_path / "c.png", steps=True, ylabel="v", title="t").axes[0].get_yscale() == "log"
