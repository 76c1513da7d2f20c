"""automl_bilevel: hyperparameter optimization and meta-learning as one bilevel problem.

Public API; see the README for a tour.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from automl_bilevel.core.components import FittedModel, InnerLearner, OuterObjective, OuterOptimizer, Proposal, Task
from automl_bilevel.core.events import RunContext, RunFinished, RunListener, RunStarted, TrackingSettings, TrialFinished
from automl_bilevel.core.problem import BilevelProblem, Split
from automl_bilevel.core.space import InvalidSearchSpaceError, as_configspace, config_dict
from automl_bilevel.core.trials import COMPLETE, FAILED, Evaluation, Trial, best_trial
from automl_bilevel.plugin.hookspecs import hookimpl, hookspec
from automl_bilevel.plugin.registry import (
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    CapabilityError,
    PluginError,
    Registry,
    UnknownComponentError,
    get_plugin_manager,
    get_registry,
)
from automl_bilevel.plugin.specs import LearnerSpec, ObjectiveSpec, OptimizerSpec
from automl_bilevel.run.engine import AllTrialsFailedError, SearchResult, run_search
from automl_bilevel.run.lifecycle import Run


def __getattr__(name: str) -> Any:  # estimators import scikit-learn machinery: load on first use
    if name in ("BilevelClassifier", "BilevelRegressor"):
        from automl_bilevel.frontends import estimators

        return getattr(estimators, name)
    if name in ("MetaLearnerClassifier", "AdaptedClassifier"):
        from automl_bilevel.frontends import meta_estimator

        return getattr(meta_estimator, name)
    raise AttributeError(name)


try:
    __version__ = version("automl-bilevel")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "AdaptedClassifier",
    "AllTrialsFailedError",
    "BilevelClassifier",
    "BilevelProblem",
    "BilevelRegressor",
    "COMPLETE",
    "CapabilityError",
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "Evaluation",
    "FAILED",
    "FittedModel",
    "InnerLearner",
    "InvalidSearchSpaceError",
    "LearnerSpec",
    "MetaLearnerClassifier",
    "ObjectiveSpec",
    "OptimizerSpec",
    "OuterObjective",
    "OuterOptimizer",
    "PluginError",
    "Proposal",
    "Registry",
    "RunContext",
    "RunFinished",
    "Run",
    "RunListener",
    "RunStarted",
    "SearchResult",
    "Split",
    "Task",
    "TrackingSettings",
    "Trial",
    "TrialFinished",
    "UnknownComponentError",
    "as_configspace",
    "best_trial",
    "config_dict",
    "get_plugin_manager",
    "get_registry",
    "hookimpl",
    "hookspec",
    "run_search",
]
