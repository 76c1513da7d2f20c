"""A tracked run for outer loops written outside the package (a user's own training loop), on the
one run lifecycle (:class:`automl_bilevel.run.lifecycle.Run`). The package's own outer methods run in the
search loop and are tracked through ``Run.search``; a loop of your own records its steps with
``step``::

    with TrackedRun("my-loop", optimizer="mine", n_iter=60) as run:
        for i in range(60):
            run.step(loss_i, {"accuracy": acc_i})
        run.finish(artifacts={"loss_network": net})

Leaving the block with an exception ends the run as FAILED (KILLED for Ctrl-C) with the steps so far.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from automl_bilevel.core.components import LearnedComponent
from automl_bilevel.core.events import RunContext, TrackingSettings, TrialFinished, plain
from automl_bilevel.core.trials import COMPLETE, FAILED, Trial, best_trial
from automl_bilevel.run.lifecycle import Run


class TrackedRun(Run):
    def __init__(
        self,
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
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a tracked run needs a non-empty name, got {name!r}")
        if int(n_iter) < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        super().__init__(
            RunContext(
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
        )
        self._last = time.perf_counter()
        self.__enter__()  # started on creation; ``with`` is optional

    def step(self, value: float, metrics: Mapping[str, float] | None = None, error: str | None = None) -> None:
        """One outer step: its objective ``value`` (lower is better), extra metrics, or why it failed."""
        now = time.perf_counter()
        value = float(value)
        ok = error is None and math.isfinite(value)
        t = Trial(
            len(self.trials),
            {},
            value,
            COMPLETE if ok else FAILED,
            now - self._last,
            metrics=dict(metrics or {}),
            error=error,
        )
        self._last = now
        self.trials.append(t)
        self.session.emit(TrialFinished(t, best_trial(self.trials), len(self.trials), self.context.n_iter))

    def finish(
        self,
        status: str = "FINISHED",
        *,
        artifacts: Mapping[str, LearnedComponent] | None = None,
        error: str | None = None,
        best: Trial | None = None,
        trials: Iterable[Trial] | None = None,
    ) -> None:
        """End the run (once); ``trials`` replaces the recorded steps. The arguments are
        :meth:`Run.finish`'s, in the same order, so a ``TrackedRun`` works wherever a ``Run`` does."""
        if trials is not None:
            self.trials = list(trials)
        super().finish(status, artifacts=artifacts, error=error, best=best)

    def __enter__(self) -> TrackedRun:
        if not getattr(self, "_started", False):
            self._started = True
            super().__enter__()
        return self
