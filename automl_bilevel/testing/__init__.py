"""Contract checks a plugin author can run on their own components (like scikit-learn's
``check_estimator`` and optuna's sampler test suites).

    from automl_bilevel.testing import check_learner, check_optimizer
    check_learner(MyLearner())                 # raises AssertionError naming the broken rule
    check_optimizer(lambda: MyOptimizer())

Each check runs in a few seconds on small synthetic data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, cast

import numpy as np
from ConfigSpace import Configuration, ConfigurationSpace, Float

from automl_bilevel.core.components import (
    FittedModel,
    InnerLearner,
    OuterObjective,
    OuterOptimizer,
    Proposal,
    Task,
    has_predict_proba,
)
from automl_bilevel.core.problem import BilevelProblem, Split
from automl_bilevel.core.space import as_configspace, config_dict
from automl_bilevel.core.trials import FAILED, Trial
from automl_bilevel.run.engine import SearchResult, run_search


def _data(
    task: str, n: int = 90, d: int = 5, k: int = 3, seed: int = 0, shape: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray, Task]:
    """Separable blobs (classification) or a linear target (regression); examples of ``shape`` (images,
    sequences: float32) where given, else vectors of ``d``."""
    rng = np.random.default_rng(seed)
    example = tuple(shape) if shape else (d,)
    size = int(np.prod(example))
    nd = len(example) > 1
    if task == "classification":
        centers = rng.normal(scale=3.0, size=(k, *example))
        labels = np.arange(n) % k
        X = centers[labels] + rng.normal(size=(n, *example))
        return _dtype(X, nd), labels.astype(np.int64), Task(task, size, k, example if nd else ())
    X = rng.normal(size=(n, *example))
    y = X.reshape(n, -1) @ rng.normal(size=size) / np.sqrt(size / 5) + 0.1 * rng.normal(size=n)
    return _dtype(X, nd), y, Task(task, size, 1, example if nd else ())


def _dtype(X: np.ndarray, nd: bool) -> np.ndarray:
    return X.astype(np.float32) if nd else X


def _sample_task(task: str, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, Task]:
    """The user's sample data as the estimators pass it on: labels encoded 0..K-1, the example shape."""
    X = np.asarray(X)
    assert X.ndim >= 2 and len(X) == len(y), f"sample data must be X of shape (n, ...) and y of n values, got {X.shape}"
    nd = X.ndim > 2
    example = tuple(int(d) for d in X.shape[1:])
    if task == "classification":
        classes, y_enc = np.unique(np.asarray(y), return_inverse=True)
        return X, y_enc.astype(np.int64), Task(task, int(np.prod(example)), len(classes), example if nd else ())
    return X, np.asarray(y, dtype=np.float64), Task(task, int(np.prod(example)), 1, example if nd else ())


def _fitted(
    learner: InnerLearner,
    X: np.ndarray,
    y: np.ndarray,
    cfg: Mapping[str, Any],
    *,
    task: Task,
    seed: int,
    budget: float | None = None,
    what: str,
) -> FittedModel:
    """``learner.fit`` with its result checked to be a model, not ``None`` or something without predict."""
    model = learner.fit(X, y, cfg, task=task, seed=seed, budget=budget)
    assert model is not None, (
        f"{type(learner).__name__}.fit returned None ({what}); it must return the fitted model, an object "
        "with predict(X) (and predict_proba(X) for classifiers)"
    )
    assert isinstance(model, FittedModel) and callable(model.predict), (
        f"{type(learner).__name__}.fit returned {type(model).__name__} ({what}), which has no predict(X)"
    )
    return model


def _outputs(model: FittedModel, X: np.ndarray, task: Task) -> np.ndarray:
    """What a model says about X: a classifier's probabilities when it has them, else its predictions."""
    if task.is_classifier and has_predict_proba(model):
        return np.asarray(model.predict_proba(X), dtype=float)
    return np.asarray(model.predict(X), dtype=float)


def check_learner(
    learner: InnerLearner,
    task: str = "classification",
    multi_fidelity: bool = False,
    n_configs: int = 5,
    *,
    X: Any = None,
    y: Any = None,
    input_shape: tuple[int, ...] | None = None,
) -> None:
    """Check the InnerLearner contract on a small synthetic problem; an ``AssertionError`` names the
    broken rule.

    The data: ``X`` and ``y`` where given (a sample of the user's own data, any example shape:
    images ``(n, C, H, W)``, sequences ``(n, T, F)``); else synthetic blobs with examples of
    ``input_shape`` (an image learner: ``input_shape=(1, 28, 28)``), or of the learner's declared
    ``input_shape`` attribute, else 5-feature vectors.

    - ``config_space(task)`` is a ``ConfigurationSpace`` and ``param_names`` covers it;
    - ``fit`` returns a model (not ``None``) whose ``predict`` gives one encoded label 0..K-1 per row
      (classification) and that learns well-separated blobs with the default configuration;
    - classifiers have ``predict_proba`` (``n_outputs`` columns, rows summing to 1), which the default
      objective ``val_loss`` needs, unless ``learner.missing_predict_proba(task)`` says why not
      (then ``val_loss`` is refused before any trial);
    - ``fit`` is deterministic for a fixed seed;
    - the configuration matters: up to ``n_configs`` configurations sampled from the space do not
      all give the same outputs as the default (skipped for an empty space);
    - with ``multi_fidelity=True``, ``fit`` accepts ``budget=0.25``.
    """
    assert isinstance(learner, InnerLearner), f"{learner!r} is not an InnerLearner"
    name = type(learner).__name__
    shape = input_shape if input_shape is not None else getattr(learner, "input_shape", None)
    own_data = X is not None
    if own_data:
        assert y is not None, "check_learner takes X and y together"
        X, y, t = _sample_task(task, X, y)
    else:
        X, y, t = _data(task, shape=tuple(shape) if shape else None)
    space = learner.config_space(t)
    assert isinstance(space, ConfigurationSpace), f"{name}.config_space must return a ConfigurationSpace, got {space!r}"
    names = learner.param_names(t)
    assert names is None or set(space.keys()) <= names, (
        f"{name}.param_names must include every name of config_space; missing {sorted(set(space.keys()) - set(names))}"
    )
    cfg = config_dict(space.get_default_configuration()) if len(space) else {}
    model = _fitted(learner, X, y, cfg, task=t, seed=0, what="default configuration")
    pred = np.asarray(model.predict(X))
    assert pred.shape == (len(X),), f"predict must return shape ({len(X)},), got {pred.shape}"
    if task == "classification":
        assert set(np.unique(pred)) <= set(range(t.n_outputs)), (
            f"classifiers predict encoded labels 0..{t.n_outputs - 1}, got {sorted(set(np.unique(pred)))[:5]}"
        )
        why_not = learner.missing_predict_proba(t)
        if has_predict_proba(model):
            p = np.asarray(model.predict_proba(X))
            assert p.shape == (len(X), t.n_outputs), f"predict_proba must have {t.n_outputs} columns, got {p.shape}"
            assert np.allclose(p.sum(axis=1), 1.0, atol=1e-6), "predict_proba rows must sum to 1"
            assert why_not is None, (
                f"{name}.missing_predict_proba says {why_not!r}, but its model {type(model).__name__} has predict_proba"
            )
        else:
            assert why_not is not None, (
                f"the model {type(model).__name__} that {name}.fit returned has no predict_proba, which the default "
                "objective val_loss needs (cross-entropy of the probabilities). Give the model predict_proba(X) "
                f"({t.n_outputs} columns summing to 1), or, if it cannot have one, return the reason from "
                f"{name}.missing_predict_proba(task) so that val_loss is refused before any trial"
            )
        assert own_data or np.mean(pred == y) > 0.6, (
            f"the default configuration should learn separable blobs; training accuracy {np.mean(pred == y):.2f}"
        )
    again = np.asarray(_fitted(learner, X, y, cfg, task=t, seed=0, what="default configuration, again").predict(X))
    assert np.array_equal(pred, again) or np.allclose(pred, again), "fit must be deterministic for a fixed seed"
    if len(space):
        # probed away from the training points, between the blobs, where settings show
        probe = _dtype(np.random.default_rng(1).normal(scale=3.0, size=(60, *X.shape[1:])), X.ndim > 2)
        reference = _outputs(model, probe, t)
        sampler = as_configspace(space, seed=1)
        configs = [config_dict(sampler.sample_configuration()) for _ in range(max(int(n_configs), 1))]
        changed = False
        for sample in configs:
            out = _outputs(_fitted(learner, X, y, sample, task=t, seed=0, what=f"configuration {sample}"), probe, t)
            if out.shape != reference.shape or not np.allclose(out, reference, rtol=1e-7, atol=1e-9):
                changed = True
                break
        assert changed, (
            f"{name} seems to ignore its config: {len(configs)} configurations sampled from its space "
            f"({', '.join(sorted(space.keys()))}) all gave the same outputs as the default; fit must train with "
            "the hyperparameters in config"
        )
    if multi_fidelity:
        _fitted(learner, X, y, cfg, task=t, seed=0, budget=0.25, what="budget=0.25").predict(X)


class _Point:
    """The "model" of :class:`_Quadratic`: its validation value, which :class:`_Value` scores."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), self.value)


class _Quadratic(InnerLearner):
    """A learner whose validation value is (x - 0.3)² + (y - 0.6)²: known optimum, no training."""

    def config_space(self, task: Task) -> ConfigurationSpace:
        return ConfigurationSpace(space=[Float("x", (0.0, 1.0)), Float("y", (0.0, 1.0))])

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        config: Mapping[str, Any],
        *,
        task: Task,
        seed: int,
        budget: float | None = None,
    ) -> _Point:
        if config.get("x", 0.0) > 0.95:
            raise RuntimeError("deliberate failure for x > 0.95")
        return _Point((float(config["x"]) - 0.3) ** 2 + (float(config["y"]) - 0.6) ** 2)


class _Value(OuterObjective):
    def __call__(self, model: FittedModel, X: np.ndarray, y: np.ndarray, *, task: Task) -> float:
        return float(cast(_Point, model).value)


def quadratic_problem(seed: int = 0) -> BilevelProblem:
    """A cheap problem with a known optimum and a failing corner (for optimizer checks)."""
    X, y, t = _data("classification", n=6)
    lrn = _Quadratic()
    return BilevelProblem(lrn, _Value(), as_configspace(lrn.config_space(t), seed=seed), t, [Split(X, y, X, y)], seed)


class _Collect(logging.Filter):
    """Keeps the engine's "trial N failed" warnings of a check out of the user's stderr (the check's
    problem fails on purpose) and remembers them for its own messages."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.messages.append(record.getMessage())
        return False


def check_optimizer(factory: Callable[[], OuterOptimizer[Any]], n_iter: int = 30) -> None:
    """Check the OuterOptimizer contract on a cheap problem with a known optimum and a failing
    corner: ask/tell protocol, valid proposals, failed trials told and survived, determinism for a
    fixed seed, the engine's budget, and progress (best value < 0.2 after ``n_iter`` trials)."""
    opt = factory()
    assert isinstance(opt, OuterOptimizer), f"{opt!r} is not an OuterOptimizer"
    name = type(opt).__name__
    problem = quadratic_problem()
    opt.setup(problem, 0)
    props = opt.ask(1)
    assert isinstance(props, list) and 1 >= len(props) >= 0, (
        f"{name}.ask(1) must return a list of at most one Proposal, got {props!r}"
    )
    for p in props:
        assert isinstance(p, Proposal), f"{name}.ask must return Proposals, got {p!r}"
        _as_config(problem.space, p.config).check_valid_configuration()
        opt.tell(p, Trial(0, dict(p.config), math.nan, FAILED, error="RuntimeError: synthetic"))

    def run(seed: int) -> SearchResult:
        return run_search(quadratic_problem(seed), factory(), n_iter=n_iter, seed=seed)

    log = logging.getLogger("automl_bilevel")
    collect = _Collect()
    log.addFilter(collect)
    try:
        a, b = run(3), run(3)
    finally:
        log.removeFilter(collect)
    assert [t.config for t in a.trials] == [t.config for t in b.trials], "same seed must give the same trials"
    assert len(a.trials) <= n_iter, "the engine's budget must be respected"
    if not a.trials:
        raise AssertionError(
            f"{name} proposed no configuration: its first ask returned [] with no trial in "
            "flight, so the search stopped at once (an optimizer returns [] only to wait for "
            "trials it has already proposed)"
        )
    if a.best is None:
        errors = sorted({t.error for t in a.trials if t.error})
        raise AssertionError(
            f"all {len(a.trials)} trials of {name} failed (the check's problem fails only for "
            f"x > 0.95): {'; '.join(errors[:3]) or 'non-finite values'}"
        )
    assert a.best.value < 0.2, (
        f"after {len(a.trials)} trials of {name} the best value should be < 0.2 (optimum 0 at x=0.3, y=0.6), "
        f"got {a.best.value:.4g} at {dict(a.best.config)}"
    )


def _as_config(space: ConfigurationSpace, cfg: Mapping[str, Any]) -> Configuration:
    return Configuration(space, values=dict(cfg))
