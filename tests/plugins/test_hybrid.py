"""The `hybrid` outer optimizer: black-box search over the discrete part of a space, hypergradient
steps over the continuous part inside each trial."""

from __future__ import annotations

import numpy as np
import pytest
from ConfigSpace import Categorical, ConfigurationSpace, EqualsCondition, Float, Integer

from automl_bilevel import BilevelClassifier, BilevelRegressor, CapabilityError
from automl_bilevel.plugin.registry import UnknownComponentError
from automl_bilevel_plugins.optimizers.hybrid import split_space

SMALL_MLP = {"epochs": 4, "batch_size": 4096, "hidden_units": 12}
DIFF = {"lr": "positive", "weight_decay": "positive", "momentum": "unit", "l2_per_feature": "positive_per_feature"}


DIGITS = {"n": 360}  # the slice of the shared ``digits`` fixture (tests/conftest.py)


def mixed_space() -> ConfigurationSpace:
    """Architecture and inner optimizer (black-box), learning rate, weight decay and momentum (floats
    the MLP differentiates); momentum only exists for the momentum optimizer."""
    s = ConfigurationSpace(
        space=[
            Integer("n_layers", (1, 2), default=1),
            Categorical("activation", ["relu", "tanh"], default="relu"),
            Categorical("optimizer", ["sgd", "momentum", "adam"], default="adam"),
            Float("lr", (1e-3, 0.3), log=True, default=1e-2),
            Float("weight_decay", (1e-6, 1e-1), log=True, default=1e-4),
            Float("momentum", (0.0, 0.99), default=0.9),
        ]
    )
    s.add(EqualsCondition(s["momentum"], s["optimizer"], "momentum"))
    return s


def hybrid(n_iter=4, space=None, **opt):
    params = {"blackbox": "random", "steps": 2, **opt}
    return BilevelClassifier(
        "mlp",
        "val_loss",
        "hybrid",
        search_space=space or mixed_space(),
        n_iter=n_iter,
        tracking=False,
        random_state=0,
        learner_params=SMALL_MLP,
        optimizer_params=params,
    )


# -- the split ---------------------------------------------------------------------------------------------
def test_the_split_comes_from_the_learners_differentiable_floats_and_the_space():
    space = mixed_space()
    names, bb = split_space(space, DIFF)
    assert sorted(names) == ["lr", "momentum", "weight_decay"]
    assert sorted(bb.keys()) == ["activation", "n_layers", "optimizer"] and not bb.conditions
    # the user overrides it: weight decay stays black-box (and keeps its range there)
    names, bb = split_space(space, DIFF, ["lr"])
    assert names == ["lr"] and sorted(bb.keys()) == ["activation", "momentum", "n_layers", "optimizer", "weight_decay"]
    assert len(bb.conditions) == 1  # momentum's condition goes with it
    # a float other hyperparameters are conditioned on is not derived as continuous, and refused if named
    from ConfigSpace import GreaterThanCondition

    s = ConfigurationSpace(
        space=[
            Float("lr", (1e-3, 1.0), log=True),
            Categorical("a", ["x", "y"]),
            Float("weight_decay", (1e-6, 1e-1), log=True),
        ]
    )
    s.add(GreaterThanCondition(s["a"], s["weight_decay"], 1e-3))
    names, bb = split_space(s, DIFF)
    assert names == ["lr"] and sorted(bb.keys()) == ["a", "weight_decay"] and len(bb.conditions) == 1
    with pytest.raises(ValueError, match="conditioned on it"):
        split_space(s, DIFF, ["weight_decay"])


@pytest.mark.parametrize(
    "continuous, match",
    [
        (["activation"], "CategoricalHyperparameter, not a float range"),
        (["n_layers"], "not a float range"),
        (["nope"], "not in the search space"),
        (["lr", "lr"], "twice"),
    ],
)
def test_a_bad_continuous_override_is_refused_with_the_reason(continuous, match):
    with pytest.raises(ValueError, match=match):
        split_space(mixed_space(), DIFF, continuous)


def test_a_float_the_learner_does_not_differentiate_cannot_be_continuous():
    s = ConfigurationSpace(space=[Float("dropout", (0.0, 0.5)), Categorical("a", ["x"])])
    with pytest.raises(ValueError, match="does not differentiate it"):
        split_space(s, DIFF, ["dropout"])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"optimizer_params": {"blackbox": "nosuch"}}, UnknownComponentError, "unknown optimizer 'nosuch'"),
        ({"optimizer_params": {"blackbox": "hypergradient"}}, ValueError, "black-box optimizer"),
        ({"optimizer_params": {"blackbox": "random", "steps": 0}}, ValueError, "steps"),
        ({"optimizer_params": {"blackbox": "random", "continuous": "lr"}}, ValueError, "list of hyperparameter names"),
        ({"optimizer_params": {"blackbox": "random", "mode": "sideways"}}, ValueError, "mode must be one of"),
        ({"optimizer_params": {"blackbox": "smac", "blackbox_params": {"facade": "xx"}}}, ValueError, "facade"),
        ({"optimizer_params": {"blackbox": "random", "continuous": ["activation"]}}, ValueError, "not a float range"),
        (
            {"optimizer_params": {"blackbox": "random", "tensor_hyperparameters": ["lr"]}},
            ValueError,
            "not a tensor hyperparameter",
        ),
        ({"search_space": {"lr": (1e-3, 1.0, "log")}}, ValueError, "nothing left for the black-box optimizer"),
        ({"search_space": {"activation": ["relu", "tanh"]}}, ValueError, "nothing to tune by hypergradients"),
        ({"learner": "sklearn"}, CapabilityError, "differentiable"),
    ],
)
def test_bad_input_is_refused_before_any_trial(digits, kwargs, error, match):
    args = dict(
        learner="mlp",
        objective="val_loss",
        optimizer="hybrid",
        search_space=mixed_space(),
        n_iter=2,
        tracking=False,
        learner_params=SMALL_MLP,
        optimizer_params={"blackbox": "random"},
    )
    args.update(kwargs)
    if args["learner"] == "sklearn":
        args.pop("learner_params"), args.pop("search_space")
    with pytest.raises(error, match=match):
        BilevelClassifier(**args).fit(*digits)


# -- through the estimator -------------------------------------------------------------------------------
@pytest.mark.parametrize("blackbox", ["random", "smac"])
def test_hybrid_on_a_mixed_space_tunes_the_floats_and_refits_with_the_tuned_values(digits, blackbox):
    est = hybrid(n_iter=4, blackbox=blackbox, tensor_hyperparameters=["l2_per_feature"]).fit(*digits)
    assert est.n_trials_ == 4 and all(t.ok for t in est.trials_)
    archs = {(t.config["n_layers"], t.config["activation"], t.config["optimizer"]) for t in est.trials_}
    assert len(archs) > 1  # the black-box part explores the discrete choices
    for t in est.trials_:
        # conditions: momentum exists (and is tuned) only for the momentum optimizer
        assert ("momentum" in t.config) == (t.config["optimizer"] == "momentum")
        assert ("tuned.momentum" in t.metrics) == (t.config["optimizer"] == "momentum")
        steps = [t.metrics[f"outer_value.{k}"] for k in range(int(t.metrics["outer_steps"]))]
        assert len(steps) == 2 and t.value == min(steps)  # the best value the steps reached
        assert t.config["lr"] == 1e-2 and t.metrics["tuned.lr"] != 1e-2  # moved from the proposed start
        assert t.metrics["tuned.l2_per_feature.mean"] > 0
    best = est.best_trial_
    assert best.value == min(t.value for t in est.trials_)
    p = est.best_params_
    assert {k: p[k] for k in ("n_layers", "activation", "optimizer")} == {
        k: best.config[k] for k in ("n_layers", "activation", "optimizer")
    }
    assert p["lr"] == pytest.approx(best.metrics["tuned.lr"]) and p["lr"] != best.config["lr"]
    assert p["l2_per_feature"].shape == (64,) and np.ptp(p["l2_per_feature"]) > 0
    # the refit uses the tuned values: refitting with them gives the estimator's model, with the start does not
    X, y = digits
    learner = est.learner_
    task = learner_task(X, y)
    tuned = learner.fit(X, y, p, task=task, seed=est_seed(est)).predict_proba(X)
    start = learner.fit(X, y, {k: v for k, v in best.config.items()}, task=task, seed=est_seed(est)).predict_proba(X)
    np.testing.assert_allclose(est.predict_proba(X), tuned, rtol=1e-5, atol=1e-6)
    assert np.abs(est.predict_proba(X) - start).max() > 1e-4


def learner_task(X, y):
    from automl_bilevel.core.components import Task

    return Task("classification", X.shape[1], len(np.unique(y)))


def est_seed(est):
    return int(np.random.RandomState(est.random_state).randint(np.iinfo(np.int32).max))


def test_warm_start_begins_each_trial_from_the_best_tuned_values(digits):
    est = hybrid(n_iter=3, warm_start=True, continuous=["lr"]).fit(*digits)
    first, second = est.trials_[0], est.trials_[1]
    assert first.config["lr"] == 1e-2
    assert second.config["lr"] == pytest.approx(first.metrics["tuned.lr"])  # its start: trial 0's tuned lr


def test_a_diverging_step_is_rejected_and_the_trial_keeps_its_best_value():
    # SGD on least squares diverges once lr passes 2/λmax: a huge unclipped outer step throws lr past it;
    # the hypergradient part rejects that step (back to the previous lr) and the trial reports its best value
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    est = BilevelRegressor(
        "mlp",
        "val_loss",
        "hybrid",
        n_iter=2,
        tracking=False,
        random_state=0,
        search_space={"lr": {"low": 1e-4, "high": 100.0, "log": True, "default": 0.05}, "standardize": [True, False]},
        learner_params={"n_layers": 0, "optimizer": "sgd", "momentum": 0.0, "epochs": 30, "batch_size": 4096},
        optimizer_params={"blackbox": "random", "steps": 4, "outer_lr": 3.0, "clip": None},
    ).fit(X, y)
    standardized = [t for t in est.trials_ if t.config["standardize"] is True]
    assert standardized, [t.config for t in est.trials_]
    t = standardized[0]
    assert t.ok and t.metrics["rejected_steps"] >= 1
    values = [t.metrics[f"outer_value.{k}"] for k in range(4)]
    assert any(np.isnan(v) for v in values) and t.value == np.nanmin(values)
    assert np.isfinite(est.best_value_)


def test_a_trial_whose_every_step_fails_fails_with_the_reason():
    from sklearn.datasets import load_diabetes

    from automl_bilevel import AllTrialsFailedError

    X, y = load_diabetes(return_X_y=True)
    est = BilevelRegressor(
        "mlp",
        "val_loss",
        "hybrid",
        n_iter=2,
        tracking=False,
        random_state=0,
        search_space={"lr": {"low": 1e-4, "high": 100.0, "log": True, "default": 90.0}, "optimizer": ["sgd"]},
        learner_params={"n_layers": 0, "momentum": 0.0, "epochs": 30, "batch_size": 4096},
        optimizer_params={"blackbox": "random", "steps": 3, "max_backoffs": 1},
    )
    with pytest.raises(AllTrialsFailedError, match="no hypergradient step of the trial succeeded"):
        est.fit(X, y)
    err = est.trials_[0].error
    assert est.trials_[0].status == "FAILED" and ("diverged" in err or "objective is" in err), err


def test_a_budget_scales_the_hypergradient_steps(digits):
    # successive halving at eta=2 from a quarter of the budget: budgets 1/4, 1/2 and 1
    est = hybrid(
        n_iter=7, blackbox="smac", steps=4, blackbox_params={"facade": "mf", "min_budget": 0.25, "eta": 2}
    ).fit(*digits)
    budgets = {t.budget for t in est.trials_}
    assert len(budgets) > 1 and min(budgets) < 1, budgets
    for t in est.trials_:
        assert t.metrics["outer_steps"] == max(1, round(4 * t.budget))
    assert est.best_trial_.budget == max(budgets)


def test_a_multi_fidelity_black_box_needs_a_multi_fidelity_learner(digits):
    X, y = digits
    with pytest.raises(CapabilityError, match="multi_fidelity"):
        BilevelClassifier(
            _NoBudgetMLP(**SMALL_MLP),
            "val_loss",
            "hybrid",
            search_space=mixed_space(),
            n_iter=2,
            tracking=False,
            optimizer_params={"blackbox": "smac_mf"},
        ).fit(X, y)


def _mlp_class():
    from automl_bilevel_plugins.learners.torch_learners import MLPLearner

    return MLPLearner


class _NoBudgetMLP(_mlp_class()):
    """An MLP instance: an instance declares no capabilities but the protocol it implements."""


def test_hybrid_runs_its_trials_on_two_dask_workers(digits):
    est = hybrid(n_iter=4, tensor_hyperparameters=["l2_per_feature"]).set_params(n_workers=2).fit(*digits)
    assert est.n_trials_ == 4 and all(t.ok for t in est.trials_)
    assert all("outer_value.1" in t.metrics for t in est.trials_)
    assert est.best_params_["lr"] == pytest.approx(est.best_trial_.metrics["tuned.lr"])


def test_a_resumed_search_continues_and_refits_with_the_restored_tuned_values(digits, tmp_path):
    path = tmp_path / "hybrid.jsonl"
    opt = dict(blackbox="random", tensor_hyperparameters=["l2_per_feature"])
    whole = hybrid(n_iter=4, **opt).fit(*digits)
    first = hybrid(n_iter=2, **opt).set_params(checkpoint=str(path)).fit(*digits)
    resumed = hybrid(n_iter=4, **opt).set_params(checkpoint=str(path)).fit(*digits)
    assert [t.config for t in resumed.trials_[:2]] == [t.config for t in first.trials_]
    # the black-box part continues where it stopped: the same proposals as one uninterrupted run
    assert [t.config for t in resumed.trials_] == [t.config for t in whole.trials_]
    np.testing.assert_allclose([t.value for t in resumed.trials_], [t.value for t in whole.trials_], rtol=1e-5)
    # with nothing left to run, the refit still uses the restored tuned values (the tensor too)
    again = hybrid(n_iter=4, **opt).set_params(checkpoint=str(path)).fit(*digits)
    assert again.n_trials_ == 4
    for k in ("lr", "weight_decay"):
        assert again.best_params_[k] == pytest.approx(resumed.best_params_[k])
    np.testing.assert_allclose(again.best_params_["l2_per_feature"], resumed.best_params_["l2_per_feature"])


def test_an_experiment_file_runs_hybrid_through_the_cli_with_outer_steps_in_each_child_run(tmp_path, capsys, tracking):
    from automl_bilevel.frontends.cli import main
    from mlflow import MlflowClient

    uri, experiment = tracking
    path = tmp_path / "hybrid.toml"
    path.write_text(f"""
name = "digits-mlp-hybrid"
[data]
dataset = "digits"
max_samples = 300
[estimator]
learner = "mlp"
objective = "val_loss"
optimizer = "hybrid"
n_iter = 2
random_state = 0
learner_params = {{ epochs = 3, batch_size = 4096, hidden_units = 8 }}
optimizer_params = {{ blackbox = "random", steps = 2 }}
[search_space]
activation = ["relu", "tanh"]
lr = {{ low = 0.001, high = 0.3, log = true, default = 0.01 }}
[tracking]
uri = "{uri}"
experiment = "{experiment}"
""")
    assert main(["run", str(path), "-q"]) == 0
    assert "optimizer=hybrid" in capsys.readouterr().out
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for r in children:
        assert {"outer_value.0", "outer_value.1", "tuned.lr"} <= set(r.data.metrics)


def test_a_budget_scales_the_inner_training_of_the_gradient_part(digits):
    from automl_bilevel import BilevelProblem
    from automl_bilevel.core.problem import Split
    from automl_bilevel.gradient.outer import HyperparameterProblem
    from automl_bilevel.plugin.registry import get_registry

    X, y = digits
    reg = get_registry()
    learner = reg.make("learner", "mlp", {**SMALL_MLP, "epochs": 8}).obj
    problem = BilevelProblem(
        learner,
        reg.make("objective", "val_loss").obj,
        mixed_space(),
        learner_task(X, y),
        [Split(X[:300], y[:300], X[300:], y[300:])],
    )
    full = HyperparameterProblem(problem).tasks()[0][0].dynamics.T
    quarter = HyperparameterProblem(problem, budget=0.25).tasks()[0][0].dynamics.T
    assert (full, quarter) == (8, 2)  # one full-batch step per epoch; the budget scales the epochs


def test_replayed_trials_restore_the_tuned_scalars_from_their_metrics(digits):
    from automl_bilevel import BilevelProblem
    from automl_bilevel.core.problem import Split
    from automl_bilevel.plugin.registry import get_registry

    est = hybrid(n_iter=3).fit(*digits)
    X, y = digits
    reg = get_registry()
    problem = BilevelProblem(
        reg.make("learner", "mlp", SMALL_MLP).obj,
        reg.make("objective", "val_loss").obj,
        mixed_space(),
        learner_task(X, y),
        [Split(X[:300], y[:300], X[300:], y[300:])],
    )
    opt = reg.make("optimizer", "hybrid", {"blackbox": "random", "steps": 2}).obj
    opt.setup(problem, 0)
    assert opt.best_config() is None
    opt.replay(list(est.trials_))
    assert opt.best_config() == pytest.approx(est.best_params_)
    seen = {tuple(sorted(t.config.items())) for t in est.trials_}
    fresh = opt.ask(1)[0]  # random search does not propose a replayed configuration again
    assert tuple(sorted({k: v for k, v in fresh.config.items()}.items())) not in seen


def test_a_float_in_a_forbidden_clause_stays_black_box():
    from ConfigSpace import ForbiddenAndConjunction, ForbiddenEqualsClause, ForbiddenInClause

    s = ConfigurationSpace(
        space=[
            Float("lr", (1e-3, 1.0), log=True),
            Float("weight_decay", (1e-6, 0.1), log=True),
            Categorical("a", ["x", "y"]),
        ]
    )
    s.add(ForbiddenAndConjunction(ForbiddenEqualsClause(s["a"], "x"), ForbiddenInClause(s["weight_decay"], [5e-3])))
    names, bb = split_space(s, DIFF)
    assert names == ["lr"] and sorted(bb.keys()) == ["a", "weight_decay"] and len(bb.forbidden_clauses) == 1
    with pytest.raises(ValueError, match="forbidden clause"):
        split_space(s, DIFF, ["weight_decay"])
