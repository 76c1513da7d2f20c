"""A tracked run for outer loops that are not an estimator's ``fit``: ML3, meta-training a learned
optimizer, evolving a meta-loss network. It reaches the same listeners as a fit (MLflow, progress),
records outer steps as metric steps (or, with ``trials_are_steps=False``, a search's trials as child
runs) and stores learned components with the run when it finishes::

    with TrackedRun("ml3", learner="mlp", objective="val_ce", optimizer="ml3", n_iter=60) as run:
        net, res = train_loss_network_ml3(tasks, n_classes=10, outer_steps=60)
        for v in res.values:
            run.step(v)
        run.finish(artifacts={"loss_network": net})

Leaving the block with an exception ends the run as FAILED (KILLED for Ctrl-C) with the steps so far.
"""
from __future__ import annotations

import math
import time
from typing import Any, Iterable, Mapping

from .engine import RunSession
from .events import RunContext, TrackingSettings, TrialFinished, plain
from .registry import get_registry
from .trials import COMPLETE, FAILED, Trial, best_trial


class TrackedRun:
    def __init__(self, name: str, *, learner: str = "", objective: str = "", optimizer: str = "",
                 params: Mapping[str, Any] | None = None, n_iter: int = 0, tracking: bool = True,
                 tracking_uri: str | None = None, experiment_name: str = "automl-bilevel",
                 trials_are_steps: bool = True, verbose: bool = False):
        if not isinstance(name, str) or not name:
            raise ValueError(f"a tracked run needs a non-empty name, got {name!r}")
        if int(n_iter) < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        self.context = RunContext(
            name=name, task="meta", learner=learner, objective=objective, optimizer=optimizer,
            params=plain(dict(params or {})), plugins={}, search_space={}, n_iter=int(n_iter),
            tracking=TrackingSettings(bool(tracking), tracking_uri, experiment_name, progress=verbose),
            trials_are_steps=trials_are_steps)
        self.session = RunSession(get_registry().run_listeners(self.context))  # an unusable store fails here
        self.info = self.session.info
        self.trials: list[Trial] = []
        self._t0 = self._last = time.perf_counter()
        self.session.start(self.context)

    def step(self, value: float, metrics: Mapping[str, float] | None = None, error: str | None = None) -> None:
        """One outer step: its objective ``value`` (lower is better), extra metrics, or why it failed."""
        now = time.perf_counter()
        value = float(value)
        ok = error is None and math.isfinite(value)
        t = Trial(len(self.trials), {}, value, COMPLETE if ok else FAILED, now - self._last,
                  metrics=dict(metrics or {}), error=error)
        self._last = now
        self.trials.append(t)
        self.session.emit(TrialFinished(t, best_trial(self.trials), len(self.trials), self.context.n_iter))

    def finish(self, artifacts: Mapping[str, Any] | None = None, status: str = "FINISHED",
               trials: Iterable[Trial] | None = None, error: str | None = None) -> None:
        """End the run (once); ``trials`` replaces the recorded steps (a search's trials)."""
        if trials is not None:
            self.trials = list(trials)
        self.session.finish(status, self.trials, time.perf_counter() - self._t0, error=error, artifacts=artifacts)

    def __enter__(self) -> "TrackedRun":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if exc is not None:
            self.finish(status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED",
                        error=f"{type(exc).__name__}: {exc}")
        else:
            self.finish()
