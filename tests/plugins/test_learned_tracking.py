"""Learned components are stored with their MLflow run (a real SQLite store) and load back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from automl_bilevel import BilevelClassifier, Run
from automl_bilevel.evolution import vector_to_module
from automl_bilevel.methods.learned import LossNetwork, LSTMOptimizer
from automl_bilevel.methods.recipes.metaloss import mlp_learner
from mlflow import MlflowClient


def test_the_best_evolved_loss_network_is_logged_with_the_fit(tracking, tmp_path):
    uri, experiment = tracking
    X, y = load_digits(return_X_y=True)
    start = LossNetwork(10, init="one_minus_p", gain=10.0, activation="relu")
    est = BilevelClassifier(
        mlp_learner(start, inner_steps=10),
        "val_error",
        "es",
        n_iter=6,
        random_state=0,
        optimizer_params={"strategy": "mu_plus_lambda", "population_size": 3, "sigma0": 0.1},
        tracking_uri=uri,
        experiment_name=experiment,
    ).fit(X[:300] / 16, y[:300])
    client = MlflowClient(uri)
    names = {f.path for f in client.list_artifacts(est.mlflow_run_id_, "learned")}
    assert names == {"learned/loss_network.pt", "learned/loss_network.json"}
    folder = client.download_artifacts(est.mlflow_run_id_, "learned", str(tmp_path))
    back = LossNetwork.load(f"{folder}/loss_network.pt")
    expect = LossNetwork(10, init="one_minus_p", gain=10.0, activation="relu")
    vector_to_module(np.asarray(est.best_params_["loss_net"]), expect)
    assert torch.allclose(back.flat(), expect.flat())
    assert not torch.allclose(back.flat(), start.flat())  # the evolved weights, not the start
    info = json.load(open(f"{folder}/loss_network.json"))
    assert info["class"].endswith("LossNetwork") and info["settings"]["activation"] == "relu"


def test_a_tracked_run_logs_steps_and_the_learned_optimizer(tracking, tmp_path):
    uri, experiment = tracking
    opt = LSTMOptimizer(seed=4)
    with Run.tracked(
        "l2o",
        learner="mlp",
        objective="meta_loss",
        optimizer="l2o",
        n_iter=3,
        params={"alpha": 0.1},
        tracking_uri=uri,
        experiment_name=experiment,
    ) as run:
        for v in (2.0, 1.5, float("nan")):
            run.step(v, {"regularizer": 0.5})
        run.finish(artifacts={"learned_optimizer": opt})
    client = MlflowClient(uri)
    r = client.get_run(run.info["mlflow_run_id"])
    assert r.info.status == "FINISHED" and r.data.params["alpha"] == "0.1"
    assert [m.value for m in client.get_metric_history(r.info.run_id, "value")] == [2.0, 1.5]  # NaN: a failed step
    assert r.data.metrics["final.n_failed"] == 1 and r.data.metrics["final.best_value"] == 1.5
    folder = client.download_artifacts(r.info.run_id, "learned", str(tmp_path))
    back = LSTMOptimizer.load(f"{folder}/learned_optimizer.pt")
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), opt.state_dict().values(), strict=True))


def test_a_tracked_run_that_raises_ends_failed_with_its_steps(tracking):
    uri, experiment = tracking
    with pytest.raises(RuntimeError, match="meta-training broke"):
        with Run.tracked("ml3", n_iter=5, tracking_uri=uri, experiment_name=experiment) as run:
            run.step(1.0)
            raise RuntimeError("meta-training broke")
    r = MlflowClient(uri).get_run(run.info["mlflow_run_id"])
    assert r.info.status == "FAILED" and "meta-training broke" in r.data.tags["automl_bilevel.error"]
    assert r.data.metrics["final.n_trials"] == 1
    with pytest.raises(ValueError, match="non-empty name"):
        Run.tracked("", tracking=False)
