"""The writers the listener drives: a thread (:class:`BackgroundWriter`) or a separate process
(:class:`ProcessWriter`, which follows the spool file). Both write through
:class:`~automl_bilevel_plugins.tracking.mlflow.store.RunWriter`."""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from automl_bilevel_plugins.tracking.mlflow.store import (
    BATCH_TRIALS,
    HEARTBEAT_EVERY,
    SPOOL_TAG,
    WRITER_PID_FILE,
    RunWriter,
    TrackingError,
)

if TYPE_CHECKING:
    import subprocess

log = logging.getLogger("automl_bilevel.tracking")


# -- the background writer ------------------------------------------------------------------------
_STOP = object()
# The writer runs at normal priority. A niced writer (it was niceness 10) starved on a busy machine, and
# its run's end waited for it: 22.6 s to write 100 trials with two other busy processes on 2 cores. The
# priority cannot be raised back when the search ends (that needs privileges), and the end is what the
# user waits for.


class _Done(Protocol):
    def wait(self, timeout: float | None = None) -> bool: ...

    def is_set(self) -> bool: ...


class _Abort(Protocol):
    def set(self) -> None: ...


class Writer(Protocol):
    """What the listener drives: :class:`BackgroundWriter` (a thread) or :class:`ProcessWriter` (a process).
    ``put`` a trial record or the end; ``done`` is set once the writer has stopped; ``abort.set()`` stops
    writing trials (the parent is still ended); ``completed``: everything was written."""

    @property
    def done(self) -> _Done:
        """Set once the writer has stopped."""
        ...

    @property
    def abort(self) -> _Abort:
        """``set()`` stops writing trials; the parent run is still ended."""
        ...

    @property
    def completed(self) -> bool:
        """Whether everything was written, the end of the parent run included."""
        ...

    @property
    def last_error(self) -> str | None:
        """The last error of the store, if any."""
        ...

    def put(self, item: Any) -> None:
        """Hand the writer a trial record or the end."""
        ...


class BackgroundWriter:
    """A daemon thread that drains a queue of trial records (and the end) into a :class:`RunWriter`."""

    def __init__(self, writer: RunWriter) -> None:
        self.writer = writer
        self.queue: queue.Queue[Any] = queue.Queue()
        self.abort = threading.Event()  # stop writing trials: end the parent, leave the rest spooled
        self.done = threading.Event()
        self.completed = False  # everything was written, the parent included
        self.terminated = False  # the parent run has a terminal status
        self.last_error: str | None = None
        self.unwritten = 0
        self.thread = threading.Thread(target=self._run, name="automl-bilevel-mlflow-writer", daemon=True)
        self.thread.start()

    def put(self, item: Any) -> None:
        """Queue a trial record or the end for the writer thread."""
        self.queue.put(item)

    def _gather(self, pending: list[Any], wait: float | None) -> Any:
        """Move queued items into ``pending``; return the end item if it came."""
        end = None
        try:
            item = self.queue.get(timeout=wait) if wait is None or wait > 0 else self.queue.get_nowait()
            while True:
                if isinstance(item, tuple) and item and item[0] is _STOP:
                    end = item
                else:
                    pending.append(item)
                item = self.queue.get_nowait()
        except queue.Empty:
            pass
        return end

    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        end = None
        delay, next_try = 0.0, 0.0
        last_beat = time.monotonic()
        try:
            while True:
                if self.abort.is_set():
                    break
                wait = None if not pending and end is None else max(0.0, next_try - time.monotonic())
                got = self._gather(pending, min(wait, 0.2) if wait is not None else 0.2)
                end = end or got
                if not pending and end is None and time.monotonic() - last_beat > HEARTBEAT_EVERY:
                    last_beat = time.monotonic()  # idle (a long trial): tell later fits this run is alive
                    try:
                        self.writer.beat()
                    except Exception as exc:
                        log.debug("heartbeat failed: %s", exc)
                if self.abort.is_set():
                    break
                if (not pending and end is None) or time.monotonic() < next_try:
                    continue
                try:
                    if pending:
                        batch = pending[:BATCH_TRIALS]
                        self.writer.write_trials(batch, self.abort.is_set)
                        if self.abort.is_set():
                            break
                        del pending[: len(batch)]
                    else:
                        assert end is not None  # (nothing pending and no end: the loop went on above)
                        self.writer.finish(end[1], end[2])
                        self.completed = self.terminated = True
                        return
                    delay = 0.0
                    self.last_error = None
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    delay = min(max(2 * delay, 0.5), 5.0)
                    next_try = time.monotonic() + delay
                    log.debug("tracking store failed (%s); retrying in %.1f s", self.last_error, delay)
            # aborted: end the parent at least, and say how much is left in the spool
            end = self._gather(pending, 0) or end
            self.unwritten = len(pending)
            if end is not None:
                try:
                    self.writer.client.set_tag(self.writer.run_id, SPOOL_TAG, end[3])
                    self.writer.client.set_terminated(self.writer.run_id, end[1]["status"], end_time=end[1]["time_ms"])
                    self.terminated = True
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()


# -- the writer process ---------------------------------------------------------------------------
WRITER_ENV = "AUTOML_BILEVEL_TRACKING_WRITER"
PROCESS_MIN_TRIALS = 200  # "auto": runs of at least this many trials get a writer process


def writer_kind(n_iter: int) -> str:
    """``"thread"`` or ``"process"``, from ``AUTOML_BILEVEL_TRACKING_WRITER`` (``auto`` by default: a process for
    runs of at least 200 trials); raises TrackingError on any other value."""
    raw = os.environ.get(WRITER_ENV, "auto").strip().lower()
    if raw not in ("auto", "thread", "process"):
        raise TrackingError(f"{WRITER_ENV}={raw!r}: use 'thread', 'process' or 'auto'")
    if raw == "auto":
        return "process" if int(n_iter) >= PROCESS_MIN_TRIALS else "thread"
    return raw


class _ProcessDone:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def wait(self, timeout: float | None = None) -> bool:
        import subprocess

        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def is_set(self) -> bool:
        return self.proc.poll() is not None


class _ProcessAbort:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def set(self) -> None:
        if self.proc.poll() is None:
            import signal

            self.proc.send_signal(signal.SIGTERM)


class ProcessWriter:
    """The writer as a separate process that follows the spool file (``python -m
    automl_bilevel_plugins.tracking.mlflow.follow FOLDER PID``): it shares no interpreter lock with
    the search, and ends the run itself (KILLED) if this process dies first. Same interface as
    :class:`BackgroundWriter`."""

    def __init__(self, folder: Path) -> None:
        import subprocess

        self.folder = Path(folder)
        self.log = self.folder / "writer.log"
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "automl_bilevel_plugins.tracking.mlflow.follow",
                    str(self.folder),
                    str(os.getpid()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )  # a Ctrl-C in the terminal is for the search, not for the writer
        (self.folder / WRITER_PID_FILE).write_text(str(self.proc.pid))  # a later sync must not write beside it
        self.done = _ProcessDone(self.proc)
        self.abort = _ProcessAbort(self.proc)

    def put(self, item: Any) -> None:  # the spool is the channel
        """Nothing to do: the writer process reads the records from the spool."""
        pass

    @property
    def completed(self) -> bool:
        """Whether the writer process exited with status 0 (everything written)."""
        return self.proc.poll() == 0

    @property
    def last_error(self) -> str | None:
        """The last line of the writer process's log (``writer.log``), if any."""
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return None
        return lines[-1][:500] if lines else None
