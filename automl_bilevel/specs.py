"""Typed, frozen records that plugins return from the registration hooks.

A plugin never hands the host a bare class: it hands a record saying what the component is
called, what it builds, which tasks it supports and which capabilities it has or needs. The host
checks every record in one place (:mod:`automl_bilevel.registry`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

#: Task kinds a learner or objective may support.
TASKS = frozenset({"classification", "regression"})

#: Capabilities the host knows about. Third-party plugins may declare more; the host only
#: interprets these.
#:
#: - ``differentiable``: a learner whose inner training can be unrolled and differentiated, or an
#:   objective with a differentiable ``loss_tensor``; hypergradient optimizers require both.
#: - ``multi_fidelity``: a learner that accepts a ``budget`` in (0, 1] (a fraction of its epochs,
#:   steps or training data, as the learner documents).
#: - ``parallel``: an optimizer whose evaluations may run on Dask workers (several at once where its
#:   ``ask`` returns several; a gradient method's one outer step at a time).
KNOWN_CAPABILITIES = frozenset({"differentiable", "multi_fidelity", "parallel"})

#: Capabilities an optimizer's ``requires`` asks of the learner only (not of the objective).
LEARNER_CAPABILITIES = frozenset({"multi_fidelity"})


@dataclass(frozen=True)
class _ComponentSpec:
    name: str
    factory: Callable[..., Any]
    description: str = ""

    kind = "component"


@dataclass(frozen=True)
class LearnerSpec(_ComponentSpec):
    """An inner learner: a model plus its training loss and inner optimizer.

    ``factory(**learner_params)`` must return an :class:`automl_bilevel.InnerLearner`.
    """

    tasks: frozenset[str] = TASKS
    capabilities: frozenset[str] = frozenset()

    kind = "learner"


@dataclass(frozen=True)
class ObjectiveSpec(_ComponentSpec):
    """An outer objective (always minimised).

    ``factory(**objective_params)`` must return an :class:`automl_bilevel.OuterObjective`.
    """

    tasks: frozenset[str] = TASKS
    capabilities: frozenset[str] = frozenset()

    kind = "objective"


@dataclass(frozen=True)
class OptimizerSpec(_ComponentSpec):
    """An outer optimizer.

    ``factory(**optimizer_params)`` must return an :class:`automl_bilevel.OuterOptimizer`.
    ``requires`` lists the capabilities the learner and objective must both have
    (``{"differentiable"}`` for hypergradients). ``trials_are_steps`` says that each evaluation
    is one step of a single trajectory (gradient methods) rather than an independent trial
    (black-box search); trackers log steps as metrics and trials as child runs.
    """

    requires: frozenset[str] = frozenset()
    capabilities: frozenset[str] = frozenset()
    trials_are_steps: bool = False

    kind = "optimizer"


@dataclass(frozen=True)
class MetaLearnerSpec(_ComponentSpec):
    """A meta-learner (:class:`automl_bilevel.meta.base.MetaLearner`): a network shared across
    tasks and how it adapts to a task's support set. ``factory(in_channels=, image_size=, **params)``."""

    tasks: frozenset[str] = frozenset({"classification"})
    capabilities: frozenset[str] = frozenset()


SPEC_TYPES = {"learner": LearnerSpec, "objective": ObjectiveSpec, "optimizer": OptimizerSpec,
              "meta_learner": MetaLearnerSpec}


@dataclass(frozen=True)
class PluginInfo:
    """Where a registered component comes from."""

    plugin: str
    package: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Registered:
    spec: LearnerSpec | ObjectiveSpec | OptimizerSpec
    origin: PluginInfo = field(default_factory=lambda: PluginInfo("?"))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind
