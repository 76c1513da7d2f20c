"""A progress bar on stderr: best value so far, elapsed time and an estimate of the time left.

On for CLI runs and for ``verbose=1`` (``TrackingSettings.progress``). On a terminal the bar is
redrawn in place; in a log (not a terminal) one line is written every 5 s and at the end.
``verbose=2`` also writes one line per trial, as Optuna logs: its number, value, the best so far, its
duration and its configuration.

The time left comes from the trials that finished in this process: the time between the first of them
and the latest, per trial, times the trials still to run (before a second trial, the first one's own
duration). Start-up (data, plugins, the tracking store) and a slow first trial (imports, warm-up) are
left out, and so are trials replayed from a checkpoint, which arrive at once. It is capped by what is
left of a ``timeout``; there is no estimate before the first trial, nor for a run of unknown length.

A resumed run says so first (``resuming: 40 trials from ck.jsonl``); a run stopped by Ctrl-C (or
SIGTERM) ends with ``interrupted after ...``.
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
    """The progress-bar run listener, on ``stream`` (stderr by default): a line when the run starts, the bar after
    each trial (one line per trial too with ``verbose=2``), and a line when it ends."""

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
        self.resumed = int(context.resumed_trials or 0)
        self.per_trial = int(getattr(context.tracking, "verbose", 0)) >= 2
        self.seen = 0  # TrialFinished events so far (the first ``resumed`` are replays)
        self.first: tuple[float, int] | None = None  # (clock, events) when the first new trial finished
        self.first_duration = 0.0

    def remaining(self, n: int, total: int) -> float | None:
        """Seconds left after ``n`` of ``total`` trials, or None when there is nothing to go on."""
        now = self.clock()
        if n <= 0 or total <= 0 or self.first is None:
            return None
        t_first, n_first = self.first
        if n > n_first and now > t_first:
            per_trial = (now - t_first) / (n - n_first)
        elif self.first_duration > 0:  # one new trial so far: its own duration
            per_trial = self.first_duration
        else:  # nothing measured yet: the time since the start, per trial
            per_trial = (now - self.t0) / n
        left = per_trial * max(total - n, 0)
        if self.timeout is not None:
            left = min(left, max(self.timeout - (now - self.t0), 0.0))
        return left

    def trial_line(self, event: TrialFinished) -> str:
        """``trial 3: val_loss=0.25 (best 0.2 at trial 1) in 1.2s  {'lr': 0.01}``, as Optuna logs a trial."""
        t = event.trial
        config = {k: _short(v) for k, v in t.config.items()}
        if not t.ok:
            return f"{self.unit[:-1]} {t.number} failed in {t.duration:.3g}s: {t.error or t.status}  {config}"
        best = event.best
        best_s = f"best {best.value:.5g} at {self.unit[:-1]} {best.number}" if best is not None else "no best yet"
        head = f"{self.unit[:-1]} {t.number}: {self.context.objective}={t.value:.5g}"
        return f"{head} ({best_s}) in {t.duration:.3g}s  {config}"

    def line(self, n: int, total: int, best: float | None, failed: int) -> str:
        """The bar: trials done of ``total``, the best value, failures, elapsed time and the estimated time left."""
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
        """Write the run's header (and what a resumed run replays), the bar after each new trial (its own line with
        ``verbose=2``), and how the run ended."""
        if isinstance(event, RunStarted):
            ctx = event.context
            size = f"{ctx.n_iter} {self.unit}" if ctx.n_iter else f"{self.unit} until stopped"
            limit = f", at most {duration(self.timeout)}" if self.timeout else ""
            self.stream.write(f"{ctx.name}: {size}{limit} (learner {ctx.learner}, optimizer {ctx.optimizer})\n")
            if self.resumed:
                where = (ctx.params or {}).get("checkpoint")
                self.stream.write(f"resuming: {self.resumed} {self.unit} from {where or 'the checkpoint'}\n")
            self.stream.flush()
        elif isinstance(event, TrialFinished):
            self.failed += not event.trial.ok
            self.seen += 1
            now = self.clock()
            if self.seen <= self.resumed:  # a replayed trial: no line of its own, no time
                return
            if self.first is None:
                self.first, self.first_duration = (now, event.n_trials), float(event.trial.duration)
            if self.per_trial:
                if self.tty:
                    self.stream.write("\r\033[K")
                self.stream.write(self.trial_line(event) + "\n")
            # on a terminal redraw in place; in a log, one line every 5 s and at the end
            if self.tty or now - self._last >= self.every or event.n_trials == event.n_iter:
                self._last = now
                self._write(
                    self.line(event.n_trials, event.n_iter, event.best.value if event.best else None, self.failed)
                )
        elif isinstance(event, RunFinished):
            if self.tty:
                self.stream.write("\n")
            word = {"KILLED": "interrupted", "FAILED": "failed", "FINISHED": "finished"}.get(event.status, event.status)
            n_iter = self.context.n_iter
            of = f" of {n_iter}" if event.status != "FINISHED" and n_iter else ""
            self.stream.write(f"{word} after {len(event.trials)}{of} {self.unit} in {duration(event.duration)}\n")
            self.stream.flush()


def _short(value: Any) -> Any:
    """A configuration value for a log line: numbers to 4 significant digits, tensors by their size."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    size = getattr(value, "size", None)
    if isinstance(value, (list, tuple)) or isinstance(size, int):
        n = len(value) if isinstance(value, (list, tuple)) else size
        return f"<{n} values>"
    return value


@hookimpl
def bilevel_run_listener(context: RunContext) -> RunListener | None:
    """A progress bar with the best value so far and the time left (stderr; verbose=1 and the CLI)."""
    return ProgressBar(context) if context.tracking.progress else None
