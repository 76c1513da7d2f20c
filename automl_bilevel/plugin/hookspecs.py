"""The hooks a plugin may implement.

Every hook is prefixed ``bilevel_``. Hooks only ever gain arguments (pluggy passes a hook
implementation only the arguments it names), never lose or rename one. None of these hooks is
``firstresult``: every plugin's answer is collected.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from automl_bilevel.core.events import RunContext, RunListener
    from automl_bilevel.plugin.specs import LearnerSpec, MetaLearnerSpec, ObjectiveSpec, OptimizerSpec

PROJECT = "automl_bilevel"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def bilevel_register_learners() -> Iterable[LearnerSpec]:  # type: ignore[empty-body]  # a spec: pluggy never runs its body
    """Return the inner learners this plugin provides, as :class:`LearnerSpec` records.

    Called once when the registry is built. Names must be unique across all plugins.
    """


@hookspec
def bilevel_register_objectives() -> Iterable[ObjectiveSpec]:  # type: ignore[empty-body]  # a spec: pluggy never runs its body
    """Return the outer objectives this plugin provides, as :class:`ObjectiveSpec` records."""


@hookspec
def bilevel_register_optimizers() -> Iterable[OptimizerSpec]:  # type: ignore[empty-body]  # a spec: pluggy never runs its body
    """Return the outer optimizers this plugin provides, as :class:`OptimizerSpec` records."""


@hookspec
def bilevel_register_meta_learners() -> Iterable[MetaLearnerSpec]:  # type: ignore[empty-body]  # a spec: pluggy never runs its body
    """Return the meta-learners (episodic few-shot learners) this plugin provides, as
    :class:`MetaLearnerSpec` records."""


@hookspec
def bilevel_run_listener(context: RunContext) -> RunListener | None:
    """Return a listener for one run, or ``None`` to sit this run out.

    Called once at the start of every ``fit`` and CLI run, before any work is done. The listener's
    ``handle(event)`` then receives every event of the run (:mod:`automl_bilevel.core.events`). An
    exception raised here aborts the run before it starts (for example an unreachable tracking
    store); an exception raised from ``handle`` is reported as a warning and the listener is
    dropped, while the run goes on.
    """


@hookspec
def bilevel_sync_spool(path: str | None, uri: str | None, force: bool) -> list[dict[str, Any]] | None:
    """Write the runs a tracking plugin kept locally (its spool) because the store could not take
    them; ``path`` is a spool folder (``None``: the plugin's default one), ``uri`` overrides the store
    recorded with each run, ``force`` writes a run whose process still seems to be alive.

    Called by ``automl-bilevel sync``. Return one summary dict per run written (``run_id``, ``uri``,
    ``trials``, ``written``, ``status``), or ``None`` when this plugin keeps no spool.
    """
