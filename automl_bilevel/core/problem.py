"""The bilevel problem: an inner learner, an outer objective, data and a search space."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from ConfigSpace import ConfigurationSpace

from automl_bilevel.core.components import InnerLearner, OuterObjective, Task
from automl_bilevel.core.trials import Evaluation


@dataclass
class Split:
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray


@dataclass
class BilevelProblem:
    """min over config of objective(learner.fit(train, config), val), over one or more splits.

    With several splits (cross-validation) the value is their mean.
    """

    learner: InnerLearner
    objective: OuterObjective
    space: ConfigurationSpace
    task: Task
    splits: list[Split]
    seed: int = 0

    def evaluate(self, config: Mapping[str, Any], budget: float | None = None) -> Evaluation:
        """The mean objective over the splits (a non-finite value fails the trial in the loop)."""
        values, t0 = [], time.perf_counter()
        for split in self.splits:
            model = self.learner.fit(
                split.X_train, split.y_train, config, task=self.task, seed=self.seed, budget=budget
            )
            values.append(float(self.objective(model, split.X_val, split.y_val, task=self.task)))
        metrics = {"fit_time": time.perf_counter() - t0}
        if len(values) > 1:
            metrics["value_std"] = float(np.std(values))
        return Evaluation(float(np.mean(values)), metrics)
