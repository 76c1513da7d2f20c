"""The ``sklearn`` inner learner: any scikit-learn estimator as a black-box inner learner.

Its hyperparameters are the estimator's ``set_params`` names (``svc__C`` inside a Pipeline). Common
estimators come with a default ConfigSpace; for others pass ``search_space``.

Multi-fidelity: a ``budget`` in (0, 1] trains on that fraction of the training data (a seeded,
stratified subsample for classifiers, keeping every class).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from ConfigSpace import ConfigurationSpace
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.linear_model import LogisticRegression, Ridge

from automl_bilevel import InnerLearner, LearnerSpec, Task, as_configspace, hookimpl

_LOG_C = (1e-3, 1e3, "log")
DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "SVC": {"C": _LOG_C, "gamma": (1e-5, 1.0, "log")},
    "SVR": {"C": _LOG_C, "gamma": (1e-5, 1.0, "log"), "epsilon": (1e-3, 1.0, "log")},
    "LogisticRegression": {"C": (1e-4, 1e4, "log")},
    "Ridge": {"alpha": (1e-4, 1e4, "log")},
    "Lasso": {"alpha": (1e-5, 10.0, "log")},
    "KNeighborsClassifier": {"n_neighbors": (1, 50), "weights": ["uniform", "distance"]},
    "KNeighborsRegressor": {"n_neighbors": (1, 50), "weights": ["uniform", "distance"]},
    "RandomForestClassifier": {
        "n_estimators": (10, 300, "log"),
        "max_depth": (2, 32, "log"),
        "min_samples_leaf": (1, 20),
    },
    "RandomForestRegressor": {
        "n_estimators": (10, 300, "log"),
        "max_depth": (2, 32, "log"),
        "min_samples_leaf": (1, 20),
    },
    "HistGradientBoostingClassifier": {
        "learning_rate": (1e-3, 1.0, "log"),
        "max_leaf_nodes": (4, 128, "log"),
        "l2_regularization": (1e-8, 1.0, "log"),
    },
    "HistGradientBoostingRegressor": {
        "learning_rate": (1e-3, 1.0, "log"),
        "max_leaf_nodes": (4, 128, "log"),
        "l2_regularization": (1e-8, 1.0, "log"),
    },
    "MLPClassifier": {"alpha": (1e-6, 1e-1, "log"), "learning_rate_init": (1e-4, 1e-1, "log")},
    "MLPRegressor": {"alpha": (1e-6, 1e-1, "log"), "learning_rate_init": (1e-4, 1e-1, "log")},
}


def no_predict_proba(estimator: BaseEstimator) -> str | None:
    """Why ``estimator`` has no ``predict_proba`` and what to use instead, naming it; ``None`` if it has one."""
    if hasattr(estimator, "predict_proba"):
        return None
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    name = type(final).__name__
    where = f"the pipeline's last step {name}" if final is not estimator else name
    if "probability" in final.get_params(deep=False):  # SVC, NuSVC
        return (
            f"{where} has no predict_proba unless probability=True; use objective='val_error' or "
            f"{name}(probability=True)"
        )
    return (
        f"{where} has no predict_proba; use objective='val_error' or an estimator with predict_proba "
        "(LogisticRegression, SVC(probability=True), ...)"
    )


@dataclass
class SklearnModel:
    """A fitted scikit-learn estimator; ``predict_proba`` is aligned to all ``n_outputs`` classes."""

    estimator: BaseEstimator
    task: Task

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The estimator's predictions for ``X`` (class labels or regression values)."""
        return self.estimator.predict(X)

    @property
    def predict_proba(self) -> Callable[[np.ndarray], np.ndarray]:
        """``hasattr(model, "predict_proba")`` is False when the estimator has none (the error says why)."""
        reason = no_predict_proba(self.estimator)
        if reason:
            raise AttributeError(reason)
        return self._predict_proba

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = self.estimator.predict_proba(X)
        out = np.zeros((len(p), self.task.n_outputs))
        out[:, np.asarray(self.estimator.classes_, dtype=int)] = p
        return out


class SklearnLearner(InnerLearner):
    """The ``sklearn`` inner learner: fits a clone of ``estimator`` with a trial's configuration as ``set_params``.

    Without an estimator it uses LogisticRegression (classification) or Ridge (regression). Raises TypeError when
    ``estimator`` is not a scikit-learn estimator, and ValueError when it is a classifier for a regression task or the
    other way round.
    """

    def __init__(self, estimator: BaseEstimator | None = None) -> None:
        if estimator is not None and not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
            raise TypeError(f"estimator must be a scikit-learn estimator, got {estimator!r}")
        self.estimator = estimator

    def _estimator(self, task: Task) -> BaseEstimator:
        if self.estimator is not None:
            if task.is_classifier != is_classifier(self.estimator):
                raise ValueError(
                    f"{type(self.estimator).__name__} is not a {'classifier' if task.is_classifier else 'regressor'}"
                )
            return self.estimator
        return LogisticRegression(max_iter=1000) if task.is_classifier else Ridge()

    def missing_predict_proba(self, task: Task) -> str | None:
        """Why this learner's models would have no ``predict_proba`` on a classification ``task`` (see
        :func:`no_predict_proba`); ``None`` when they have one or the task is a regression."""
        return no_predict_proba(self._estimator(task)) if task.is_classifier else None

    def config_space(self, task: Task) -> ConfigurationSpace:
        """The default search space of the estimator's class (:data:`DEFAULT_SPACES`); empty for a class not in it."""
        return as_configspace(DEFAULT_SPACES.get(type(self._estimator(task)).__name__, {}))

    def param_names(self, task: Task) -> set[str]:
        """Every name the task's estimator accepts in ``set_params`` (deep: ``svc__C`` inside a Pipeline)."""
        return set(self._estimator(task).get_params(deep=True))

    @staticmethod
    def subsample(
        X: np.ndarray, y: np.ndarray, budget: float, *, task: Task, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The first ``budget`` fraction of a seeded permutation, with at least one example per class."""
        if not 0 < float(budget) <= 1:
            raise ValueError(f"budget must be in (0, 1], got {budget}")
        n = len(y)
        m = max(int(round(float(budget) * n)), 1)
        if m >= n:
            return X, y
        order = np.random.default_rng(seed).permutation(n)
        keep = order[:m]
        if task.is_classifier:  # every class present, so predict_proba keeps its columns
            first = {int(c): i for i in order[::-1] for c in [y[i]]}
            keep = np.union1d(keep, np.fromiter(first.values(), dtype=int))
        return X[keep], y[keep]

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        config: Mapping[str, Any],
        *,
        task: Task,
        seed: int,
        budget: float | None = None,
    ) -> SklearnModel:
        """Fit a clone of the estimator with ``config`` on (X, y), or on a ``budget`` fraction of it
        (:meth:`subsample`); ``random_state`` is set to ``seed`` unless ``config`` sets it."""
        if budget is not None:
            X, y = self.subsample(X, y, budget, task=task, seed=seed)
        est = clone(self._estimator(task)).set_params(**dict(config))
        if "random_state" in est.get_params() and "random_state" not in config:
            est.set_params(random_state=seed)
        return SklearnModel(est.fit(X, y), task)


@hookimpl
def bilevel_register_learners() -> list[LearnerSpec]:
    """Register the ``sklearn`` learner (capability ``multi_fidelity``)."""
    return [
        LearnerSpec(
            "sklearn",
            SklearnLearner,
            "any scikit-learn estimator (default LogisticRegression / Ridge) as a black-box learner",
            capabilities=frozenset({"multi_fidelity"}),
        )
    ]
