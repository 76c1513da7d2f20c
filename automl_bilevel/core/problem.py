"""What the one search loop evaluates: the ``Problem`` protocols, and the bilevel problem of
hyperparameter optimization (an inner learner, an outer objective, data and a search space).

Two kinds of problem run through :func:`automl_bilevel.run.engine.run_search`:

- a :class:`SearchProblem` evaluates one configuration of its search space (black-box optimizers:
  ``random``, ``smac``, ``es``; :class:`BilevelProblem` is the one of HO and cross-validation);
- a :class:`GradientProblem` also gives the value and the gradient of the outer objective in named
  tensor outer variables (gradient optimizers; episodic meta-training, ML3, L2O meta-training and the
  hyperparameter view of a :class:`BilevelProblem` are such problems, written as subclasses of
  :class:`automl_bilevel.gradient.DifferentiableProblem`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from ConfigSpace import ConfigurationSpace

from automl_bilevel.core.components import InnerLearner, OuterObjective, Task
from automl_bilevel.core.trials import Evaluation

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


@runtime_checkable
class Problem(Protocol):
    """What the search loop evaluates; every random draw of an evaluation comes from ``seed``."""

    seed: int


@runtime_checkable
class SearchProblem(Problem, Protocol):
    """A problem a black-box optimizer searches: a configuration space and the value of a point."""

    space: ConfigurationSpace

    def evaluate(self, config: Mapping[str, Any], budget: float | None = None) -> Evaluation:
        """The outer objective at ``config`` (lower is better), at a fidelity ``budget`` in (0, 1]."""
        ...


@dataclass(frozen=True)
class GradientResult:
    """What a :class:`GradientProblem` returns for one outer step."""

    value: float
    grads: Mapping[str, Tensor]
    metrics: Mapping[str, float] = field(default_factory=dict)
    state: Mapping[str, Tensor] = field(default_factory=dict)  # new values of the non-trainable variables


@runtime_checkable
class GradientProblem(Problem, Protocol):
    """A problem whose outer objective is differentiable in named tensor outer variables."""

    def outer_variables(self) -> dict[str, Tensor]:
        """The initial outer variables (raw, unconstrained), by name."""
        ...

    def value_and_grad(self, outer: Mapping[str, Tensor], *, step: int) -> GradientResult:
        """The outer objective at ``outer`` and its gradient on the trainable variables."""
        ...


@dataclass
class Split:
    """One train/validation split of the data (one fold of cross-validation)."""

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
