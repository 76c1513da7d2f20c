"""The one engine: every outer method runs through the one search loop, resumable and tracked."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

import mlflow
from automl_bilevel import BilevelClassifier
from automl_bilevel.methods.learned import LSTMOptimizer, MLPOptimizee, meta_train_optimizer
from automl_bilevel.methods.learned.loss import LossNetwork
from automl_bilevel.methods.learned.tasks import sample_tasks
from automl_bilevel.methods.recipes.metaloss import train_loss_network_ml3
from automl_bilevel.run.checkpoint import Checkpoint

HOST = Path(__file__).resolve().parents[2] / "automl_bilevel"


def test_the_host_never_imports_a_plugin_by_module_name():
    offenders = []
    for path in HOST.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(HOST.parent)}:{node.lineno}: {n}"
                for n in names
                if n.split(".")[0] == "automl_bilevel_plugins"
            ]
    assert not offenders, offenders


def test_keyboard_interrupt_is_caught_in_the_loop_only():
    places = [
        f"{p.relative_to(HOST.parent)}" for p in HOST.rglob("*.py") if "except KeyboardInterrupt" in p.read_text()
    ]
    allowed = {
        "automl_bilevel/run/engine.py",
        "automl_bilevel/frontends/cli.py",
        "automl_bilevel/frontends/experiment.py",
    }
    assert set(places) <= allowed
    assert "automl_bilevel/run/engine.py" in places


DIGITS = {"scaled": True}  # the slice of the shared ``digits`` fixture (tests/conftest.py)


def _ckpt(path, name):
    c = Checkpoint(path, {"recipe": name})
    c.open(0)
    return c


def test_ml3_continues_exactly_from_its_checkpoint(digits, tmp_path):
    X, y = digits
    tasks = sample_tasks(X[:1000], y[:1000], 4, n_train=40, n_val=200, seed=0)
    kw = dict(n_classes=10, outer_lr=3e-2, inner_steps=5, tasks_per_step=2, truncate=3)
    p = tmp_path / "ml3.jsonl"
    train_loss_network_ml3(tasks, outer_steps=3, checkpoint=_ckpt(p, "ml3"), **kw)
    net, resumed = train_loss_network_ml3(tasks, outer_steps=6, checkpoint=_ckpt(p, "ml3"), **kw)
    whole_net, whole = train_loss_network_ml3(tasks, outer_steps=6, **kw)
    assert len(resumed.search.trials) == 6
    np.testing.assert_allclose(resumed.values, whole.values, rtol=1e-5)
    np.testing.assert_allclose(net.flat().numpy(), whole_net.flat().numpy(), rtol=1e-5, atol=1e-7)


def test_l2o_meta_training_continues_exactly_from_its_checkpoint(digits, tmp_path):
    X, y = digits

    def make(seed):
        return MLPOptimizee(X[:600], y[:600], hidden=(8,), batch_size=32, seed=seed)

    kw = dict(unroll=4, horizon=8, meta_lr=3e-3, regularizer="trace", alpha=1e-3, reg_options={"samples": 1})
    p = tmp_path / "l2o.jsonl"
    first = LSTMOptimizer(seed=0)
    meta_train_optimizer(first, make, meta_iters=3, checkpoint=_ckpt(p, "l2o"), **kw)
    net = LSTMOptimizer(seed=0)
    resumed = meta_train_optimizer(net, make, meta_iters=7, checkpoint=_ckpt(p, "l2o"), **kw)
    whole_net = LSTMOptimizer(seed=0)
    whole = meta_train_optimizer(whole_net, make, meta_iters=7, **kw)
    assert len(resumed["trials"]) == 7
    np.testing.assert_allclose(resumed["meta_loss"], whole["meta_loss"], rtol=1e-5)
    for a, b in zip(net.parameters(), whole_net.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_one_loss_network_trained_by_es_on_dask_and_by_hypergradients_through_one_estimator(digits, tracking):
    # the same estimator, learner and data; only the outer optimizer differs; each fit is one MLflow run
    from automl_bilevel_plugins.learners.torch_learners import MLPLearner

    uri, experiment = tracking
    X, y = digits
    X, y = X[:400], y[:400]
    learner = MLPLearner(
        hidden_units=32,
        n_layers=1,
        optimizer="sgd",
        lr=0.1,
        weight_decay=0.0,
        epochs=5,
        batch_size=4096,
        loss=LossNetwork(10, seed=0),
    )
    kw = dict(search_space={}, random_state=0, tracking_uri=uri, experiment_name=experiment)
    es = BilevelClassifier(
        learner, "val_loss", "es", n_iter=8, n_workers=2, optimizer_params={"population_size": 4, "sigma0": 0.003}, **kw
    ).fit(X, y)
    hg = BilevelClassifier(
        learner,
        "val_loss",
        "hypergradient",
        n_iter=4,
        optimizer_params={"tensor_hyperparameters": ["loss_net"], "outer_lr": 1e-3},
        **kw,
    ).fit(X, y)
    n = LossNetwork(10, seed=0).flat().numel()
    assert es.best_params_["loss_net"].shape == (n,) and hg.best_params_["loss_net"].shape == (n,)
    assert not np.allclose(hg.best_params_["loss_net"], LossNetwork(10, seed=0).flat().numpy())
    assert hg.history_["status"] == ["COMPLETE"] * 4
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    parents = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.run_id for r in parents) == sorted([es.mlflow_run_id_, hg.mlflow_run_id_])
    assert all(r.info.status == "FINISHED" for r in parents)
