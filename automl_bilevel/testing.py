"""Contract checks a plugin author can run on their own components (like scikit-learn's
``check_estimator`` and optuna's sampler test suites).

    from automl_bilevel.testing import check_learner, check_optimizer
    check_learner(MyLearner())                 # raises AssertionError naming the broken rule
    check_optimizer(lambda: MyOptimizer())

Each check runs in a few seconds on small synthetic data.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from ConfigSpace import ConfigurationSpace, Float

from .components import InnerLearner, OuterObjective, OuterOptimizer, Proposal, Task
from .engine import run_search
from .problem import BilevelProblem, Split
from .space import as_configspace, config_dict
from .trials import FAILED, Trial


def _data(task: str, n: int = 90, d: int = 5, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    if task == "classification":
        centers = rng.normal(scale=3.0, size=(k, d))
        y = np.arange(n) % k
        X = centers[y] + rng.normal(size=(n, d))
        return X, y.astype(np.int64), Task(task, d, k)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    return X, y, Task(task, d, 1)


def check_learner(learner: InnerLearner, task: str = "classification", multi_fidelity: bool = False) -> None:
    """Check the InnerLearner contract on a small synthetic problem."""
    assert isinstance(learner, InnerLearner), f"{learner!r} is not an InnerLearner"
    X, y, t = _data(task)
    space = learner.config_space(t)
    assert isinstance(space, ConfigurationSpace), "config_space must return a ConfigurationSpace"
    names = learner.param_names(t)
    assert names is None or set(space.keys()) <= names, "param_names must include every name of config_space"
    cfg = config_dict(space.get_default_configuration()) if len(space) else {}
    model = learner.fit(X, y, cfg, task=t, seed=0)
    pred = np.asarray(model.predict(X))
    assert pred.shape == (len(X),), f"predict must return shape ({len(X)},), got {pred.shape}"
    if task == "classification":
        assert set(np.unique(pred)) <= set(range(t.n_outputs)), "classifiers predict encoded labels 0..K-1"
        if hasattr(model, "predict_proba"):
            p = np.asarray(model.predict_proba(X))
            assert p.shape == (len(X), t.n_outputs), f"predict_proba must have {t.n_outputs} columns, got {p.shape}"
            assert np.allclose(p.sum(axis=1), 1.0, atol=1e-6), "predict_proba rows must sum to 1"
        assert np.mean(pred == y) > 0.6, "the default config should learn separable blobs"
    again = np.asarray(learner.fit(X, y, cfg, task=t, seed=0).predict(X))
    assert np.array_equal(pred, again) or np.allclose(pred, again), "fit must be deterministic for a fixed seed"
    if len(space):
        sample = config_dict(as_configspace(space, seed=1).sample_configuration())
        learner.fit(X, y, sample, task=t, seed=1).predict(X)
    if multi_fidelity:
        learner.fit(X, y, cfg, task=t, seed=0, budget=0.25).predict(X)


class _Quadratic(InnerLearner):
    """A learner whose validation value is (x - 0.3)² + (y - 0.6)²: known optimum, no training."""

    def config_space(self, task):
        return ConfigurationSpace(space=[Float("x", (0.0, 1.0)), Float("y", (0.0, 1.0))])

    def fit(self, X, y, config, *, task, seed, budget=None):
        if config.get("x", 0.0) > 0.95:
            raise RuntimeError("deliberate failure for x > 0.95")
        return (float(config["x"]) - 0.3) ** 2 + (float(config["y"]) - 0.6) ** 2


class _Value(OuterObjective):
    def __call__(self, model, X, y, *, task):
        return float(model)


def quadratic_problem(seed: int = 0) -> BilevelProblem:
    """A cheap problem with a known optimum and a failing corner (for optimizer checks)."""
    X, y, t = _data("classification", n=6)
    lrn = _Quadratic()
    return BilevelProblem(lrn, _Value(), as_configspace(lrn.config_space(t), seed=seed), t,
                          [Split(X, y, X, y)], seed)


def check_optimizer(factory: Callable[[], OuterOptimizer], n_iter: int = 30) -> None:
    """Check the OuterOptimizer contract: ask/tell protocol, failed trials, determinism, progress."""
    opt = factory()
    assert isinstance(opt, OuterOptimizer), f"{opt!r} is not an OuterOptimizer"
    problem = quadratic_problem()
    opt.setup(problem, 0)
    props = opt.ask(1)
    assert isinstance(props, list) and 1 >= len(props) >= 0, "ask(1) returns a list of at most one Proposal"
    for p in props:
        assert isinstance(p, Proposal), f"ask must return Proposals, got {p!r}"
        _as_config(problem.space, p.config).check_valid_configuration()
        opt.tell(p, Trial(0, dict(p.config), math.nan, FAILED, error="RuntimeError: synthetic"))

    def run(seed: int):
        return run_search(quadratic_problem(seed), factory(), n_iter=n_iter, seed=seed)

    a, b = run(3), run(3)
    assert [t.config for t in a.trials] == [t.config for t in b.trials], "same seed must give the same trials"
    assert len(a.trials) <= n_iter, "the engine's budget must be respected"
    assert a.best is not None and a.best.value < 0.2, f"after {n_iter} trials the best value should be < 0.2, got {a.best}"


def _as_config(space, cfg):
    from ConfigSpace import Configuration

    return Configuration(space, values=dict(cfg))
