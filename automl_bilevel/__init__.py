"""automl_bilevel: hyperparameter optimization and meta-learning as one bilevel problem.

Public API; see the README for a tour.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .components import FittedModel, InnerLearner, OuterObjective, OuterOptimizer, Proposal, Task
from .engine import AllTrialsFailedError, RunSession, SearchResult, run_search
from .events import RunContext, RunFinished, RunListener, RunStarted, TrackingSettings, TrialFinished
from .hookspecs import hookimpl, hookspec
from .problem import BilevelProblem, Split
from .registry import (
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    CapabilityError,
    PluginError,
    Registry,
    UnknownComponentError,
    get_plugin_manager,
    get_registry,
)
from .space import InvalidSearchSpaceError, as_configspace, config_dict
from .specs import LearnerSpec, ObjectiveSpec, OptimizerSpec
from .tracked import TrackedRun
from .trials import COMPLETE, FAILED, Evaluation, Trial, best_trial


def __getattr__(name: str) -> Any:  # estimators import scikit-learn machinery: load on first use
    if name in ("BilevelClassifier", "BilevelRegressor"):
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(name)


try:
    __version__ = version("automl-bilevel")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
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
    "ObjectiveSpec",
    "OptimizerSpec",
    "OuterObjective",
    "OuterOptimizer",
    "PluginError",
    "Proposal",
    "Registry",
    "RunContext",
    "RunFinished",
    "RunListener",
    "RunSession",
    "RunStarted",
    "SearchResult",
    "Split",
    "Task",
    "TrackedRun",
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
