"""A progress bar on stderr: best value so far, elapsed time and an estimate of the time left.

On for CLI runs and for ``verbose=1`` (``TrackingSettings.progress``). On a terminal the bar is
redrawn in place; in a log (not a terminal) one line is written every 5 s and at the end. The time
left is the mean wall-clock time per trial so far times the trials still to run, capped by what is
left of a ``timeout``; there is no estimate before the first trial, nor for a run of unknown length.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from automl_bilevel import RunContext, RunFinished, RunListener, RunStarted, TrialFinished, hookimpl


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class ProgressBar:
    info: Mapping[str, Any] = {}

    def __init__(
        self,
        context: RunContext,
        stream: TextIO | None = None,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
        every: float = 5.0,
    ) -> None:
        self.context = context
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.clock = clock
        self.every = every
        self.t0 = clock()
        self._last = -math.inf
        self.failed = 0
        timeout = (context.params or {}).get("timeout")
        self.timeout = float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None
        self.unit = "steps" if context.trials_are_steps else "trials"

    def remaining(self, n: int, total: int) -> float | None:
        """Seconds left, or None when there is nothing to go on."""
        elapsed = self.clock() - self.t0
        if n <= 0 or total <= 0:
            return None
        left = elapsed / n * max(total - n, 0)
        if self.timeout is not None:
            left = min(left, max(self.timeout - elapsed, 0.0))
        return left

    def line(self, n: int, total: int, best: float | None, failed: int) -> str:
        elapsed = self.clock() - self.t0
        best_s = f"{best:.5g}" if best is not None else "n/a"
        if total > 0:
            filled = int(self.width * min(n, total) / total)
            head = f"[{'#' * filled}{'-' * (self.width - filled)}] {n}/{total}"
        else:
            head = f"{n} {self.unit}"
        left = self.remaining(n, total)
        eta = f", ~{duration(left)} left" if left is not None and n < total else ""
        return f"{head} best {self.context.objective}={best_s} failed={failed} {duration(elapsed)} elapsed{eta}"

    def _write(self, text: str) -> None:
        self.stream.write(("\r" + text + "\033[K") if self.tty else text + "\n")
        self.stream.flush()

    def handle(self, event: RunStarted | TrialFinished | RunFinished) -> None:
        if isinstance(event, RunStarted):
            ctx = event.context
            size = f"{ctx.n_iter} {self.unit}" if ctx.n_iter else f"{self.unit} until stopped"
            limit = f", at most {duration(self.timeout)}" if self.timeout else ""
            self.stream.write(f"{ctx.name}: {size}{limit} (learner {ctx.learner}, optimizer {ctx.optimizer})\n")
            self.stream.flush()
        elif isinstance(event, TrialFinished):
            self.failed += not event.trial.ok
            now = self.clock()
            # on a terminal redraw in place; in a log, one line every 5 s and at the end
            if self.tty or now - self._last >= self.every or event.n_trials == event.n_iter:
                self._last = now
                self._write(
                    self.line(event.n_trials, event.n_iter, event.best.value if event.best else None, self.failed)
                )
        elif isinstance(event, RunFinished):
            if self.tty:
                self.stream.write("\n")
            self.stream.write(
                f"{event.status.lower()} after {len(event.trials)} {self.unit} in {duration(event.duration)}\n"
            )
            self.stream.flush()


@hookimpl
def bilevel_run_listener(context: RunContext) -> RunListener | None:
    """A progress bar with the best value so far and the time left (stderr; verbose=1 and the CLI)."""
    return ProgressBar(context) if context.tracking.progress else None
