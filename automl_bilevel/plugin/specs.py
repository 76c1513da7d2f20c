"""Typed, frozen records that plugins return from the registration hooks.

A plugin never hands the host a bare class: it hands a record saying what the component is
called, what it builds, which tasks it supports and which capabilities it has or needs. The host
checks every record in one place (:mod:`automl_bilevel.plugin.registry`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: Task kinds a learner or objective may support.
TASKS = frozenset({"classification", "regression"})

#: Capabilities the host interprets (third-party plugins may declare more):
#:
#: - ``differentiable``: a learner whose inner training can be unrolled and differentiated, or an
#:   objective with a differentiable ``loss_tensor`` (the ``DifferentiableLearner`` and
#:   ``DifferentiableObjective`` protocols of :mod:`automl_bilevel.core.components`); gradient optimizers
#:   require both.
#: - ``multi_fidelity``: a learner that accepts a ``budget`` in (0, 1] (a fraction of its epochs,
#:   steps or training data, as the learner documents).
#: - ``parallel``: an optimizer whose evaluations may run on Dask workers (several at once where its
#:   ``ask`` returns several; a gradient method's one outer step at a time).
#:
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
    """A meta-learner (:class:`automl_bilevel.methods.meta.base.MetaLearner`): a network shared across
    tasks and how it adapts to a task's support set. ``factory(in_channels=, image_size=, **params)``."""

    tasks: frozenset[str] = frozenset({"classification"})
    capabilities: frozenset[str] = frozenset()


SPEC_TYPES: dict[str, type[_ComponentSpec]] = {
    "learner": LearnerSpec,
    "objective": ObjectiveSpec,
    "optimizer": OptimizerSpec,
    "meta_learner": MetaLearnerSpec,
}


@dataclass(frozen=True)
class PluginInfo:
    """Where a registered component comes from."""

    plugin: str
    package: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Registered:
    """One registered component: its spec (learner, objective or optimizer) and the plugin it came from."""

    spec: LearnerSpec | ObjectiveSpec | OptimizerSpec
    origin: PluginInfo = field(default_factory=lambda: PluginInfo("?"))

    @property
    def name(self) -> str:
        """The name the component is registered under."""
        return self.spec.name

    @property
    def kind(self) -> str:
        """The component's kind: ``learner``, ``objective`` or ``optimizer``."""
        return self.spec.kind


_DEFAULTS: dict[str, Any] = {
    "capabilities": frozenset(),
    "requires": frozenset(),
    "tasks": TASKS,
    "trials_are_steps": False,
}


@dataclass(frozen=True)
class Component:
    """One resolved component: the object, its registration (``None`` for a user's instance) and its
    kind. What it declares (capabilities, requirements, tasks) comes from the registration, or for an
    instance from the object's attributes of the same names. Unpacks as ``obj, registered``."""

    obj: Any
    registered: Registered | None
    kind: str

    def __iter__(self) -> Iterator[Any]:
        return iter((self.obj, self.registered))

    def __getitem__(self, i: int) -> Any:
        return (self.obj, self.registered)[i]

    @property
    def name(self) -> str:
        """The registered name, or the class name of a user's instance."""
        return self.registered.name if self.registered else type(self.obj).__name__

    def declared(self, attr: str) -> Any:
        """What the component declares under ``attr`` (``capabilities``, ``requires``, ``tasks`` or
        ``trials_are_steps``): from its registration, or for an instance from its attribute of that name;
        the default when it declares nothing."""
        if self.registered is not None:
            return getattr(self.registered.spec, attr, _DEFAULTS[attr])
        value = getattr(self.obj, attr, None)
        return _DEFAULTS[attr] if value is None else (frozenset(value) if attr != "trials_are_steps" else value)

    @property
    def who(self) -> str:
        """How errors name it: ``learner 'mlp' (plugin 'torch_learners')`` or ``learner MyLearner``."""
        if self.registered is not None:
            return f"{self.kind} {self.name!r} (plugin {self.registered.origin.plugin!r})"
        return f"{self.kind} {self.name}"

    def info(self) -> dict[str, Any]:
        """Where it came from, for tracking: name, plugin, package, version."""
        if self.registered is not None:
            o = self.registered.origin
            return {"name": self.name, "plugin": o.plugin, "package": o.package, "version": o.version}
        return {"name": self.name, "plugin": None, "package": type(self.obj).__module__, "version": None}
