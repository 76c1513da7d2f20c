"""The bilevel problem: an inner learner, an outer objective, data and a search space."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from ConfigSpace import ConfigurationSpace

from .components import InnerLearner, OuterObjective, Task
from .trials import Evaluation


class NonFiniteObjectiveError(FloatingPointError):
    """The objective came back NaN or infinite: the trial is recorded as failed."""


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
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def evaluate(self, config: Mapping[str, Any], budget: float | None = None) -> Evaluation:
        learner_cfg = {**self.fixed, **config}
        values, t0 = [], time.perf_counter()
        for split in self.splits:
            model = self.learner.fit(
                split.X_train, split.y_train, learner_cfg, task=self.task, seed=self.seed, budget=budget
            )
            value = float(self.objective(model, split.X_val, split.y_val, task=self.task))
            if not math.isfinite(value):
                raise NonFiniteObjectiveError(f"objective is {value} for config {dict(config)}")
            values.append(value)
        metrics = {"fit_time": time.perf_counter() - t0}
        if len(values) > 1:
            metrics["value_std"] = float(np.std(values))
        return Evaluation(float(np.mean(values)), metrics)
