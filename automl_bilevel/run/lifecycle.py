"""The run object: one tracked run, for every estimator, recipe, CLI run and user-written loop.

A :class:`Run` holds the listeners the plugins give for it (MLflow tracking, progress; an unreachable
tracking store fails when the run is made, before any work), sends them every event, and guarantees
exactly one ``RunFinished`` with a terminal status: FINISHED (or what :meth:`Run.finish` says), KILLED
when its block ends with KeyboardInterrupt (Ctrl-C, or SIGTERM in the CLI), FAILED with the error
otherwise. The trials found so far and the model set on the run go with it.

The package's own searches run through the one loop, :func:`automl_bilevel.run.engine.run_search`,
given the run::

    with Run(context) as run:
        result = run_search(problem, optimizer, n_iter=50, seed=0, run=run, checkpoint=checkpoint)
        run.model = refit(result.best)
        run.finish(result.status, artifacts=...)

A loop written outside the package records its outer steps on a run made by :meth:`Run.tracked`
(started on creation; ``with`` is optional)::

    with Run.tracked("my-loop", optimizer="mine", n_iter=60) as run:
        for i in range(60):
            run.step(loss_i, {"accuracy": acc_i})
        run.finish(artifacts={"loss_network": net})
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from automl_bilevel.core.components import LearnedComponent
from automl_bilevel.core.events import (
    RunContext,
    RunFinished,
    RunListener,
    RunStarted,
    TrackingSettings,
    TrialFinished,
    plain,
)
from automl_bilevel.core.trials import COMPLETE, FAILED, Trial, best_trial

if TYPE_CHECKING:  # pragma: no cover
    from automl_bilevel.plugin.registry import Registry


class Run:
    """One run: its listeners, its trials and model, and exactly one ``RunFinished``.

    ``Run(context)`` asks every plugin of ``registry`` (default: the installed plugins) for a listener
    of this run; ``listeners`` given explicitly (pairs of a plugin name and a
    :class:`~automl_bilevel.core.events.RunListener`) are used instead, and ``Run()`` is a run nobody
    listens to. A listener that raises is dropped with a warning; the run goes on.
    """

    def __init__(
        self,
        context: RunContext | None = None,
        registry: Registry | None = None,
        *,
        listeners: Iterable[tuple[str, Any]] | None = None,
    ) -> None:
        if listeners is None and context is not None:
            if registry is None:
                from automl_bilevel.plugin.registry import get_registry

                registry = get_registry()
            listeners = registry.run_listeners(context)  # an unusable store fails here
        self.context = context
        self.listeners: list[tuple[str, Any]] = list(listeners or ())
        self.trials: list[Trial] = []
        self.model: Any = None
        self.finished = False
        self.started = False
        self._t0 = time.perf_counter()
        self._last = self._t0

    @classmethod
    def tracked(
        cls,
        name: str,
        *,
        learner: str = "",
        objective: str = "",
        optimizer: str = "",
        params: Mapping[str, Any] | None = None,
        n_iter: int = 0,
        tracking: bool = True,
        tracking_uri: str | None = None,
        experiment_name: str = "automl-bilevel",
        trials_are_steps: bool = True,
        verbose: bool = False,
    ) -> Run:
        """A started run for a loop of your own, tracked like the package's: record its outer steps
        with :meth:`step` and end it with :meth:`finish` (or by leaving its ``with`` block)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a tracked run needs a non-empty name, got {name!r}")
        if int(n_iter) < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        context = RunContext(
            name=name,
            task="meta",
            learner=learner,
            objective=objective,
            optimizer=optimizer,
            params=plain(dict(params or {})),
            plugins={},
            search_space={},
            n_iter=int(n_iter),
            tracking=TrackingSettings(bool(tracking), tracking_uri, experiment_name, progress=verbose),
            trials_are_steps=trials_are_steps,
        )
        return cls(context).__enter__()

    @property
    def info(self) -> dict[str, Any]:
        """What the listeners tell about the run (an MLflow run id, its URI), merged."""
        out: dict[str, Any] = {}
        for _, listener in self.listeners:
            if isinstance(listener, RunListener):  # a listener without ``info`` adds nothing
                out.update(listener.info or {})
        return out

    def emit(self, event: Any) -> None:
        """Send ``event`` to every listener; one that raises is dropped with a warning."""
        for entry in list(self.listeners):
            name, listener = entry
            try:
                listener.handle(event)
            except Exception as exc:  # a broken listener must not end the run
                warnings.warn(
                    f"listener of plugin {name!r} failed on {type(event).__name__} and is dropped: "
                    f"{type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.listeners.remove(entry)

    def __enter__(self) -> Run:
        if not self.started:
            self.started = True
            self._t0 = self._last = time.perf_counter()
            if self.context is not None:
                self.emit(RunStarted(self.context))
        return self

    def step(self, value: float, metrics: Mapping[str, float] | None = None, error: str | None = None) -> None:
        """One outer step of a loop of your own: its objective ``value`` (lower is better), extra
        metrics, or why it failed."""
        now = time.perf_counter()
        value = float(value)
        ok = error is None and math.isfinite(value)
        trial = Trial(
            len(self.trials),
            {},
            value,
            COMPLETE if ok else FAILED,
            now - self._last,
            metrics=dict(metrics or {}),
            error=error,
        )
        self._last = now
        self.trials.append(trial)
        n_iter = self.context.n_iter if self.context is not None else 0
        self.emit(TrialFinished(trial, best_trial(self.trials), len(self.trials), n_iter))

    def finish(
        self,
        status: str = "FINISHED",
        *,
        artifacts: Mapping[str, LearnedComponent] | None = None,
        error: str | None = None,
        best: Trial | None = None,
        trials: Iterable[Trial] | None = None,
    ) -> None:
        """End the run (once; later calls do nothing) with ``status``, its trials (``trials`` replaces
        them), ``self.model`` and ``artifacts``. ``best`` is the trial whose result the run keeps, when
        that is not simply the lowest value (validation-selected steps). ``artifacts`` that are not
        :class:`~automl_bilevel.core.components.LearnedComponent` objects are refused before anything
        is sent (the run stays open, so it can still be finished)."""
        if self.finished:
            return
        wrong = {k: type(v).__name__ for k, v in (artifacts or {}).items() if not isinstance(v, LearnedComponent)}
        if wrong:
            raise TypeError(
                f"artifacts must be learned components with save(path) and settings() "
                f"(automl_bilevel.core.components.LearnedComponent); these are not: {wrong}"
            )
        if trials is not None:
            self.trials = list(trials)
        self.finished = True
        done = tuple(self.trials)
        self.emit(
            RunFinished(
                status,
                done,
                best or best_trial(done),
                time.perf_counter() - self._t0,
                self.model,
                error,
                dict(artifacts or {}),
            )
        )

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc is None:
            self.finish()
        elif isinstance(exc, KeyboardInterrupt):
            self.finish(status="KILLED")
        else:
            self.model = None
            self.finish(status="FAILED", error=f"{type(exc).__name__}: {exc}")
        return False
