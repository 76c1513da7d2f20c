"""The ``function`` inner learner: a plain function ``fit(X, y, config, seed) -> fitted model`` as a
black-box learner, the way Optuna users write an objective.

The estimators take such a function as ``learner=`` directly (``BilevelClassifier(learner=fit,
search_space={...})``). The function gets the training data, the trial's configuration (a dict of the
search space's values) and a seed, and returns any object with ``predict`` (and ``predict_proba`` for
``val_loss`` on classification; a classifier's labels arrive encoded 0..K-1 and must be predicted so).
It has no default search space (``search_space`` is required) and cannot be differentiated: the
gradient optimizers (``hypergradient``, ``hybrid``) refuse it and say what to implement instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from ConfigSpace import ConfigurationSpace

from automl_bilevel import InnerLearner, LearnerSpec, Task, hookimpl
from automl_bilevel.core.components import FittedModel

FitFunction = Callable[[np.ndarray, np.ndarray, dict[str, Any], int], Any]

#: what a gradient optimizer needs instead of a plain function
GRADIENT_ADVICE = (
    "a plain fit function is a black box: gradient optimizers need the training written in torch. Use "
    "learner='torch' with your nn.Module (learner_params={'module': MyModule}), or implement an "
    "InnerLearner with the DifferentiableLearner protocol (differentiable(...), "
    "differentiable_hyperparameters(task)); or search the function with 'random', 'smac' or 'es'"
)


class FunctionLearner(InnerLearner):
    """A function ``fit(X, y, config, seed) -> model`` as an inner learner (``fit`` is called with those
    four arguments by position; ``budget`` is passed as a keyword when the function takes one)."""

    #: the function receives X as the estimator has it, whatever its shape
    accepts_nd = True

    def __init__(self, fit: FitFunction) -> None:
        if not callable(fit):
            raise TypeError(f"fit must be a function fit(X, y, config, seed) -> model, got {type(fit).__name__}")
        try:
            params = inspect.signature(fit).parameters
        except (TypeError, ValueError):  # a builtin without a signature: trust it
            params = None
        if params is not None:
            positional = [
                p
                for p in params.values()
                if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            ]
            varargs = any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params.values())
            if len(positional) < 4 and not varargs:
                raise TypeError(
                    f"{getattr(fit, '__name__', fit)!r} takes {len(positional)} positional argument(s); a fit "
                    "function takes (X, y, config, seed)"
                )
        self.fit_function = fit
        self.takes_budget = params is not None and "budget" in params

    def config_space(self, task: Task) -> ConfigurationSpace:
        """None of its own: raises, asking for ``search_space``."""
        raise ValueError(
            f"a fit function ({getattr(self.fit_function, '__name__', 'fit')}) has no default search space; "
            "give search_space={'name': (low, high), ...}"
        )

    def param_names(self, task: Task) -> set[str] | None:
        """Any name: the function reads what it wants from its config."""
        return None

    def missing_capability(self, capability: str) -> str | None:
        """What to implement instead of a fit function when an optimizer needs ``capability``."""
        return GRADIENT_ADVICE if capability == "differentiable" else None

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        config: Mapping[str, Any],
        *,
        task: Task,
        seed: int,
        budget: float | None = None,
    ) -> FittedModel:
        """Call the function; its model must have ``predict``."""
        kwargs = {"budget": budget} if self.takes_budget else {}
        model = self.fit_function(X, y, dict(config), seed, **kwargs)
        if not callable(getattr(model, "predict", None)):
            raise TypeError(
                f"the fit function {getattr(self.fit_function, '__name__', '')!r} returned "
                f"{type(model).__name__}, which has no predict(X); return a fitted model"
            )
        return model


@hookimpl
def bilevel_register_learners() -> list[LearnerSpec]:
    """The ``function`` learner: a plain ``fit(X, y, config, seed)`` searched as a black box."""
    return [
        LearnerSpec(
            "function",
            FunctionLearner,
            "a plain function fit(X, y, config, seed) -> fitted model, searched as a black box",
        )
    ]
