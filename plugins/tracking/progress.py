"""A progress bar on stderr showing best-so-far; on for CLI runs (``TrackingSettings.progress``)."""
from __future__ import annotations

import sys
import time

from automl_bilevel import RunFinished, TrialFinished, hookimpl


class ProgressBar:
    info: dict = {}

    def __init__(self, context, stream=None, width: int = 30):
        self.context = context
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self._last = 0.0
        self.failed = 0

    def line(self, n: int, total: int, best: float | None, failed: int) -> str:
        filled = int(self.width * n / max(total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        best_s = f"{best:.5g}" if best is not None else "n/a"
        return (f"[{bar}] {n}/{total} best {self.context.objective}={best_s}"
                f" failed={failed} {time.monotonic() - self.t0:.1f}s")

    def handle(self, event):
        if isinstance(event, TrialFinished):
            self.failed += not event.trial.ok
            now = time.monotonic()
            # on a terminal redraw in place; in a log, one line every 5 s or at the end
            if self.tty or now - self._last >= 5 or event.n_trials == event.n_iter:
                self._last = now
                text = self.line(event.n_trials, event.n_iter, event.best.value if event.best else None, self.failed)
                self.stream.write(("\r" + text) if self.tty else text + "\n")
                self.stream.flush()
        elif isinstance(event, RunFinished) and self.tty:
            self.stream.write("\n")
            self.stream.flush()


@hookimpl
def bilevel_run_listener(context):
    return ProgressBar(context) if context.tracking.progress else None
