"""The plugin manager and the registry of components it yields.

``get_plugin_manager()`` builds a fresh pluggy manager (no import-time global): it loads every
entry point of the ``automl_bilevel`` group (built-ins come through the same group as third-party
plugins), skips a plugin that fails to import (recorded in ``load_errors`` and warned about by
name) and honours ``AUTOML_BILEVEL_DISABLE_PLUGINS`` (comma-separated plugin names).

``Registry`` collects the registration hooks' records and checks all of them in one place.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from automl_bilevel.core.components import (
    DIFFERENTIABLE_PROTOCOLS,
    DeclaresRequirements,
    InnerLearner,
    OuterObjective,
    OuterOptimizer,
    Task,
)
from automl_bilevel.plugin import hookspecs
from automl_bilevel.plugin.specs import LEARNER_CAPABILITIES, SPEC_TYPES, TASKS, Component, PluginInfo, Registered

ENTRY_POINT_GROUP = "automl_bilevel"
_HOST_PACKAGE = "automl-bilevel"  # the distribution whose entry points are the built-in plugins
DISABLE_ENV = "AUTOML_BILEVEL_DISABLE_PLUGINS"


class PluginError(Exception):
    """A plugin broke the plugin contract; the message names the plugin."""


class UnknownComponentError(KeyError, ValueError):
    """No registered component has that name; the message lists the available ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CapabilityError(ValueError):
    """The chosen components do not fit together (task kind, required capabilities)."""


@dataclass(frozen=True)
class LoadError:
    """A plugin that failed to load: its entry-point name, the distribution that installed it, and the error."""

    plugin: str
    package: str | None
    error: str


#: plugin name -> (distribution name, version) of the package that installed it
PluginOrigins = dict[str, tuple[str | None, str | None]]


class BilevelPluginManager(pluggy.PluginManager):
    """pluggy's manager plus what loading the entry points found: the plugins that failed to import
    (``load_errors``) and where each loaded plugin came from (``plugin_origins``)."""

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.load_errors: list[LoadError] = []
        self.plugin_origins: PluginOrigins = {}


def plugin_origins(pm: pluggy.PluginManager | None) -> PluginOrigins:
    """Where each plugin of ``pm`` came from; empty for a manager not made by :func:`get_plugin_manager`."""
    return pm.plugin_origins if isinstance(pm, BilevelPluginManager) else {}


def blocked_plugins(env: Mapping[str, str] | None = None) -> set[str]:
    """The plugin names blocked by the environment variable ``AUTOML_BILEVEL_DISABLE_PLUGINS`` (comma-separated)
    in ``env`` (default: ``os.environ``)."""
    raw = (env if env is not None else os.environ).get(DISABLE_ENV, "")
    return {p.strip() for p in raw.split(",") if p.strip()}


def get_plugin_manager(*, load_entry_points: bool = True, blocked: Iterable[str] | None = None) -> BilevelPluginManager:
    """A new plugin manager with the hookspecs and every installed, unblocked plugin loaded."""
    pm = BilevelPluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked_plugins() | set(blocked or ()):
        pm.set_blocked(name)
    if load_entry_points:
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
                continue
            dist = getattr(ep, "dist", None)
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not take the host down
                pm.load_errors.append(LoadError(ep.name, dist.name if dist else None, f"{type(exc).__name__}: {exc}"))
                warnings.warn(
                    f"automl_bilevel plugin {ep.name!r} ({ep.value}) failed to import and is skipped: "
                    f"{type(exc).__name__}: {exc} (set {DISABLE_ENV}={ep.name} to silence this)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            pm.register(plugin, name=ep.name)
            pm.plugin_origins[ep.name] = (dist.name, dist.version) if dist else (None, None)
            unknown = _unknown_hooks(pm, plugin)
            if unknown:  # a misspelt hook would never be called: report the plugin and skip it whole
                known = sorted(n for n in dir(pm.hook) if n.startswith("bilevel_"))
                error = (
                    f"PluginValidationError: unknown hook(s) {unknown} (misspelt? the hooks are: {', '.join(known)})"
                )
                pm.unregister(plugin)
                pm.load_errors.append(LoadError(ep.name, dist.name if dist else None, error))
                warnings.warn(
                    f"automl_bilevel plugin {ep.name!r} ({ep.value}) is skipped: {error} "
                    f"(set {DISABLE_ENV}={ep.name} to silence this)",
                    RuntimeWarning,
                    stacklevel=2,
                )
    return pm


def _unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """The hook implementations of ``plugin`` that match no hookspec (pluggy's ``check_pending``,
    attributed to this plugin; ``optionalhook=True`` ones are allowed)."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        pass
    else:
        return []
    out = []
    for name in dir(pm.hook):
        caller = getattr(pm.hook, name)
        if not isinstance(caller, pluggy.HookCaller) or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and not impl.optionalhook:
                out.append(name)
    return sorted(out)


def _origin(pm: pluggy.PluginManager, plugin: Any) -> PluginInfo:
    name = pm.get_name(plugin) or repr(plugin)
    package, version = plugin_origins(pm).get(name, (None, None))
    return PluginInfo(name, package, version)


def _check_spec(kind: str, spec: Any, origin: PluginInfo) -> None:
    expected = SPEC_TYPES[kind]
    who = f"plugin {origin.plugin!r}"
    if not isinstance(spec, expected):
        raise PluginError(
            f"{who} returned {type(spec).__name__} {spec!r} from bilevel_register_{kind}s; expected {expected.__name__}"
        )
    if not isinstance(spec.name, str) or not spec.name or not spec.name.replace("_", "").replace("-", "").isalnum():
        raise PluginError(f"{who}: {kind} name must be a non-empty identifier-like string, got {spec.name!r}")
    if not callable(spec.factory):
        raise PluginError(f"{who}: {kind} {spec.name!r} has a factory that is not callable: {spec.factory!r}")
    for attr in ("tasks", "capabilities", "requires"):  # not every kind of record has all three
        value: object = getattr(spec, attr, frozenset())
        if not isinstance(value, frozenset) or not all(isinstance(v, str) for v in value):
            raise PluginError(f"{who}: {kind} {spec.name!r} field {attr} must be a frozenset of strings, got {value!r}")
    tasks: frozenset[str] = getattr(spec, "tasks", TASKS)
    if not tasks or not tasks <= TASKS:
        raise PluginError(f"{who}: {kind} {spec.name!r} declares tasks {sorted(tasks)}; allowed: {sorted(TASKS)}")


_BASES = {"learner": InnerLearner, "objective": OuterObjective, "optimizer": OuterOptimizer}


def _base(kind: str) -> type:
    if kind == "meta_learner":  # torch networks: imported when first asked for
        from automl_bilevel.methods.meta.base import MetaLearner

        return MetaLearner
    return _BASES[kind]


@dataclass
class Registry:
    """Every registered learner, objective and optimizer, checked."""

    components: dict[str, dict[str, Registered]] = field(default_factory=dict)
    load_errors: list[LoadError] = field(default_factory=list)
    pm: pluggy.PluginManager | None = None

    @classmethod
    def from_plugin_manager(cls, pm: pluggy.PluginManager) -> Registry:
        """Collect every plugin's records. A plugin whose registration hook raises, returns an invalid
        record, or registers a name another plugin already has is reported by name (a warning and
        ``load_errors``) and skipped whole, like a plugin that fails to import: the rest still works.
        Built-in plugins are registered first, so a third-party plugin cannot shadow one of them."""
        reg = cls({k: {} for k in SPEC_TYPES}, list(pm.load_errors if isinstance(pm, BilevelPluginManager) else []), pm)
        builtin = {n for n, (package, _) in plugin_origins(pm).items() if package == _HOST_PACKAGE}
        plugins = sorted(pm.get_plugins(), key=lambda p: (pm.get_name(p) not in builtin, pm.get_name(p) or ""))
        for plugin in plugins:
            origin = _origin(pm, plugin)
            try:
                found = reg._collect(pm, plugin, origin)
            except PluginError as exc:
                reg._skip(pm, plugin, origin, str(exc))
                continue
            for kind, spec in found:
                reg.components[kind][spec.name] = Registered(spec, origin)
        return reg

    def _collect(self, pm: pluggy.PluginManager, plugin: Any, origin: PluginInfo) -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = []
        for kind in SPEC_TYPES:
            hook = getattr(pm.hook, f"bilevel_register_{kind}s")
            for impl in hook.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                try:
                    records = impl.function()
                except Exception as exc:
                    raise PluginError(
                        f"plugin {origin.plugin!r} raised in bilevel_register_{kind}s: {type(exc).__name__}: {exc}"
                    ) from exc
                if records is None:
                    continue
                try:
                    records = list(records)
                except TypeError:
                    raise PluginError(
                        f"plugin {origin.plugin!r}: bilevel_register_{kind}s must return an iterable of specs, "
                        f"got {records!r}"
                    ) from None
                for spec in records:
                    _check_spec(kind, spec, origin)
                    taken = self.components[kind].get(spec.name)
                    if taken is not None or any(k == kind and s.name == spec.name for k, s in found):
                        a, b = sorted([taken.origin.plugin if taken else origin.plugin, origin.plugin])
                        raise PluginError(
                            f"{kind} name {spec.name!r} is registered by both plugin {a!r} and plugin {b!r}"
                        )
                    found.append((kind, spec))
        return found

    def _skip(self, pm: pluggy.PluginManager, plugin: Any, origin: PluginInfo, error: str) -> None:
        self.load_errors.append(LoadError(origin.plugin, origin.package, f"PluginError: {error}"))
        warnings.warn(
            f"automl_bilevel plugin {origin.plugin!r} is skipped: {error} "
            f"(set {DISABLE_ENV}={origin.plugin} to silence this)",
            RuntimeWarning,
            stacklevel=3,
        )
        pm.unregister(plugin)  # its listener and other hooks do not run either

    def names(self, kind: str) -> list[str]:
        """The registered names of one kind (``learner``, ``objective`` or ``optimizer``), sorted."""
        return sorted(self.components[kind])

    def get(self, kind: str, name: str) -> Registered:
        """The registration of ``name`` among components of ``kind``; raises ``UnknownComponentError``
        naming the available ones."""
        try:
            return self.components[kind][name]
        except KeyError:
            raise UnknownComponentError(
                f"unknown {kind} {name!r}; available {kind}s: {', '.join(self.names(kind)) or '(none)'}"
            ) from None

    def make(self, kind: str, name_or_instance: Any, params: Mapping[str, Any] | None = None) -> Component:
        """Instantiate a component by name (with ``params``) or accept an instance as is."""
        base = _base(kind)
        if isinstance(name_or_instance, base):
            if params:
                raise ValueError(f"{kind}_params cannot be combined with a {kind} instance; configure the instance")
            return Component(name_or_instance, None, kind)
        if not isinstance(name_or_instance, str):
            raise TypeError(f"{kind} must be a registered name or a {base.__name__} instance, got {name_or_instance!r}")
        reg = self.get(kind, name_or_instance)
        try:
            obj = reg.spec.factory(**dict(params or {}))
        except TypeError as exc:
            raise ValueError(
                f"{kind} {reg.name!r} (plugin {reg.origin.plugin!r}) rejected its parameters "
                f"{dict(params or {})}: {exc}"
            ) from exc
        if not isinstance(obj, base):
            raise PluginError(
                f"plugin {reg.origin.plugin!r}: factory of {kind} {reg.name!r} returned {type(obj).__name__}, "
                f"not an {base.__name__}"
            )
        return Component(obj, reg, kind)

    def records(self) -> list[dict[str, Any]]:
        """Every component as a plain record (for ``automl-bilevel plugins``)."""
        rows = []
        for kind in SPEC_TYPES:
            for name in self.names(kind):
                r = self.components[kind][name]
                rows.append(
                    {
                        "kind": kind,
                        "name": name,
                        "plugin": r.origin.plugin,
                        "package": r.origin.package,
                        "version": r.origin.version,
                        "description": r.spec.description,
                    }
                )
        return rows

    def run_listeners(self, context: Any) -> list[tuple[str, Any]]:
        """Ask every plugin for a listener for this run. An exception aborts the run before it starts
        (it propagates, naming the plugin in a note); listeners already created are first sent a
        FAILED ``RunFinished`` so that none leaves a run open, whatever the load order."""
        from automl_bilevel.core.events import RunFinished

        out: list[tuple[str, Any]] = []
        if self.pm is None:
            return out
        for impl in reversed(self.pm.hook.bilevel_run_listener.get_hookimpls()):
            try:
                listener = impl.function(context=context)
            except BaseException as exc:
                why = f"listener of plugin {impl.plugin_name!r} could not be created: {type(exc).__name__}: {exc}"
                for name, made in out:
                    try:
                        made.handle(
                            RunFinished(
                                "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED", (), None, 0.0, error=why
                            )
                        )
                    except Exception as inner:  # still tell the others
                        warnings.warn(
                            f"listener of plugin {name!r} failed to end its run: {inner}", RuntimeWarning, stacklevel=2
                        )
                if isinstance(exc, Exception) and hasattr(exc, "add_note"):
                    exc.add_note(
                        f"(from the bilevel_run_listener hook of plugin {impl.plugin_name!r}; "
                        f"{DISABLE_ENV}={impl.plugin_name} disables it)"
                    )
                raise
            if listener is not None:
                out.append((impl.plugin_name, listener))
        return out


def get_registry(blocked: Iterable[str] | None = None) -> Registry:
    """A registry of the components of every installed plugin, except the ``blocked`` plugins and those
    blocked by the environment."""
    return Registry.from_plugin_manager(get_plugin_manager(blocked=blocked))


def capabilities(component: Component, needed: frozenset[str] = frozenset()) -> frozenset[str]:
    """What a learner or objective can do: its declared capabilities; a differentiable one must
    implement the kind's protocol, and an instance that implements it has the capability."""
    declared: frozenset[str] = component.declared("capabilities")
    protocol = DIFFERENTIABLE_PROTOCOLS.get(component.kind)
    if protocol is not None:
        if "differentiable" in declared & needed and not isinstance(component.obj, protocol):
            raise CapabilityError(
                f"{component.who} declares 'differentiable' but does not implement the {protocol.__name__} protocol"
            )
        if component.registered is None and isinstance(component.obj, protocol):
            declared = declared | {"differentiable"}
    return declared


def check_compatible(task: Task, learner: Component, objective: Component, optimizer: Component) -> None:
    """Raise CapabilityError, naming the plugin, when the components do not fit together."""
    for component in (learner, objective):
        tasks = component.declared("tasks")
        if task.kind not in tasks:
            raise CapabilityError(f"{component.who} does not support {task.kind}; it supports {sorted(tasks)}")
    # what the registered spec requires, plus what this instance's settings require (a facade)
    extra = optimizer.obj.requires if isinstance(optimizer.obj, DeclaresRequirements) else None
    needed: frozenset[str] = optimizer.declared("requires") | frozenset(extra or ())
    for component in (learner, objective):
        missing = needed - capabilities(component, needed)
        if component.kind == "objective":
            missing -= LEARNER_CAPABILITIES
        if missing:
            advice = getattr(component.obj, "missing_capability", None)  # what to implement instead, if it says
            hints = [h for h in (advice(c) for c in sorted(missing)) if h] if callable(advice) else []
            raise CapabilityError(
                f"optimizer {optimizer.name!r} needs capability {sorted(missing)}, which {component.who} lacks"
                + "".join(f"; {h}" for h in hints)
            )
    check_predict_proba(task, learner, objective)


def check_predict_proba(task: Task, learner: Component, objective: Component) -> None:
    """Refuse, before any trial, an objective that scores ``predict_proba`` (``val_loss``) with a
    learner whose models have none (``sklearn`` with ``RidgeClassifier``): the learner's
    ``missing_predict_proba(task)`` says why not, and what to use instead."""
    if not task.is_classifier or not (isinstance(objective.obj, OuterObjective) and objective.obj.needs_predict_proba):
        return
    reason = learner.obj.missing_predict_proba(task) if isinstance(learner.obj, InnerLearner) else None
    if reason:
        raise CapabilityError(f"{objective.who} scores predict_proba, which the models of {learner.who} lack: {reason}")
