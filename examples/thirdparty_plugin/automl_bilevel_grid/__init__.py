"""An example third-party plugin: a ``grid`` outer optimizer and a ``knn`` inner learner.

Install it (``pip install examples/thirdparty_plugin``) and ``automl-bilevel plugins`` lists both;
``BilevelClassifier(learner="knn", optimizer="grid")`` uses them.
"""

from __future__ import annotations

import numpy as np
from ConfigSpace import Categorical, ConfigurationSpace, Integer
from ConfigSpace.util import generate_grid
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

from automl_bilevel import (
    InnerLearner,
    LearnerSpec,
    OptimizerSpec,
    OuterOptimizer,
    Proposal,
    config_dict,
    hookimpl,
)

__version__ = "0.1.0"


class GridSearch(OuterOptimizer):
    """Every point of a grid over the space, in a shuffled order (so a cut-short run still spreads)."""

    def __init__(self, steps: int = 5):
        if int(steps) < 2:
            raise ValueError(f"steps must be >= 2, got {steps}")
        self.steps = int(steps)

    def setup(self, problem, seed):
        super().setup(problem, seed)
        steps = {name: self.steps for name in problem.space.keys()}
        grid = [config_dict(c) for c in generate_grid(problem.space, steps)] if len(problem.space) else [{}]
        order = np.random.default_rng(seed).permutation(len(grid))
        self._queue = [grid[i] for i in order]

    def ask(self, n=1):
        out, self._queue = self._queue[:n], self._queue[n:]
        return [Proposal(c) for c in out]

    def tell(self, proposal, trial):
        pass


class _Model:
    def __init__(self, est):
        self.est = est

    def predict(self, X):
        return self.est.predict(X)

    def predict_proba(self, X):
        return self.est.predict_proba(X)


class KNNLearner(InnerLearner):
    """k nearest neighbours; ``n_outputs`` columns in predict_proba even if a class is missing."""

    def config_space(self, task):
        return ConfigurationSpace(
            space=[Integer("n_neighbors", (1, 30), default=5), Categorical("weights", ["uniform", "distance"])]
        )

    def fit(self, X, y, config, *, task, seed, budget=None):
        k = min(int(config.get("n_neighbors", 5)), len(X))
        cls = KNeighborsClassifier if task.is_classifier else KNeighborsRegressor
        est = cls(n_neighbors=k, weights=config.get("weights", "uniform")).fit(X, y)
        if task.is_classifier and len(est.classes_) < task.n_outputs:
            raise ValueError("training split lacks a class")
        return _Model(est)


@hookimpl
def bilevel_register_optimizers():
    return [OptimizerSpec("grid", GridSearch, "grid search (example third-party plugin)")]


@hookimpl
def bilevel_register_learners():
    return [LearnerSpec("knn", KNNLearner, "k nearest neighbours (example third-party plugin)")]
