"""MLflow tracking, as a plugin: one parent run per fit or CLI run, one child run per trial.

Where runs go: the estimator's ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else
``sqlite:///mlflow.db`` in the working directory. The store is checked before any work is done.
A ``fit`` inside an active MLflow run (``with mlflow.start_run():``) nests its parent run under it.

The search never waits on the store:

- every trial is first appended to a local **spool** (JSON lines, one ``os.write`` per record, so a
  kill leaves at most a torn last line) and put on a queue;
- a background **writer** thread takes the queue in batches and writes children and the parent's
  step metrics (``log_batch``); when the store fails it backs off and retries, never blocking the
  search;
- at the end the writer is given ``AUTOML_BILEVEL_FLUSH_TIMEOUT`` seconds (default 60) to write the
  rest, the final artifacts and the parent's terminal status. A second Ctrl-C during that wait stops
  writing trials, still ends the parent, and leaves the rest in the spool;
- the spool is deleted once everything is written. Otherwise its folder is named in a warning and
  ``automl-bilevel sync`` writes it later.

Each trial appears exactly once: a child carries its trial number as the tag
``automl_bilevel.trial``; after any failure the writer reads back which children exist before it
creates more, and at the end (and in ``sync``) a child duplicated by an HTTP retry is deleted.
Metrics carry the trial's own timestamp, so writing them again is a no-op for the store.

The spool folder: ``AUTOML_BILEVEL_SPOOL_DIR``, else ``mlflow-spool/`` next to a SQLite store,
else ``~/.cache/automl_bilevel/spool`` (``$XDG_CACHE_HOME``). One sub-folder per parent run.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import queue
import shutil
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from automl_bilevel import (
    RunContext,
    RunFinished,
    RunListener,
    RunStarted,
    Trial,
    TrialFinished,
    __version__,
    best_trial,
    hookimpl,
)

if TYPE_CHECKING:
    import subprocess

    from matplotlib.figure import Figure

    from mlflow import MlflowClient

DEFAULT_URI = "sqlite:///mlflow.db"
MAX_PARAM = 6000
BATCH_TRIALS = 100  # trials per writer batch (the parent's metrics of a batch go in one log_batch)
SPOOL_ENV = "AUTOML_BILEVEL_SPOOL_DIR"
FLUSH_TIMEOUT_ENV = "AUTOML_BILEVEL_FLUSH_TIMEOUT"
DEFAULT_FLUSH_TIMEOUT = 60.0
ABORT_WAIT = 10.0  # after a second Ctrl-C: seconds left to end the parent run
TRIAL_TAG = "automl_bilevel.trial"
SPOOL_TAG = "automl_bilevel.spool"
SPOOL_FILE = "spool.jsonl"
LOGGED_MODEL_DIR = "logged_model"  # in a run's spool folder: the model, logged as "model" at the end
MODEL_NAME = "model"
TERMINAL = ("FINISHED", "FAILED", "KILLED")

log = logging.getLogger("automl_bilevel.tracking")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; raised before the run starts."""


def resolve_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


def check_reachable(uri: str) -> None:
    """Fail fast, with a clear message, when the store at ``uri`` cannot be used."""
    hint = "pass tracking_uri=..., set MLFLOW_TRACKING_URI, or tracking=False"
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            r = requests.get(uri.rstrip("/") + "/health", timeout=5)
        except requests.RequestException as exc:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({type(exc).__name__}); "
                f"start one with mlflow/start_server.sh, or {hint}"
            ) from exc
        if r.status_code != 200:
            raise TrackingError(f"MLflow tracking server {uri} answered /health with HTTP {r.status_code}; {hint}")
        return
    path = _sqlite_path(uri)
    if path is not None:
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise TrackingError(f"MLflow store {uri}: folder {str(parent)!r} does not exist; {hint}")
        # os.access says yes to root even on a read-only mount: try to create a file instead
        try:
            fd, probe = tempfile.mkstemp(prefix=".automl-bilevel-probe-", dir=parent)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise TrackingError(
                f"MLflow store {uri}: folder {str(parent)!r} is not writable ({exc.strerror}); {hint}"
            ) from None
        if path.exists() and not os.access(path, os.W_OK):
            raise TrackingError(f"MLflow store {uri}: file {str(path)!r} is not writable; {hint}")
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(f"MLflow store {uri} cannot be used: {type(exc).__name__}: {exc}; {hint}") from exc


def spool_root(uri: str) -> Path:
    """Where runs that could not be written yet are kept (see the module docstring)."""
    if os.environ.get(SPOOL_ENV):
        return Path(os.environ[SPOOL_ENV])
    path = _sqlite_path(uri)
    if path is not None:
        return (path.parent if str(path.parent) else Path(".")).resolve() / "mlflow-spool"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "automl_bilevel" / "spool"


def flush_timeout() -> float:
    raw = os.environ.get(FLUSH_TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_FLUSH_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise TrackingError(f"{FLUSH_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not value >= 0:
        raise TrackingError(f"{FLUSH_TIMEOUT_ENV}={raw!r} must be >= 0 seconds")
    return value


def _flat_params(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat_params(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)[:MAX_PARAM]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return repr(value)


# -- the spool ------------------------------------------------------------------------------------
class Spool:
    """One parent run's records, as JSON lines in ``<root>/<run_id>/spool.jsonl``.

    Each record is one ``os.write`` on an ``O_APPEND`` file: a signal lands between records, and a
    kill leaves at most a torn last line, which readers skip.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / SPOOL_FILE

    @classmethod
    def create(cls, root: Path, run_id: str, header: dict[str, Any]) -> Spool:
        spool = cls(Path(root) / run_id)
        spool.folder.mkdir(parents=True, exist_ok=True)
        spool.append({"kind": "run", **header})
        return spool

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, default=_jsonable) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        lines = self.path.read_bytes().split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        out = []
        for i, line in enumerate(lines, start=1):
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "kind" not in rec:
                    raise ValueError("not a spool record")
            except ValueError:
                if i == len(lines):  # the last write was cut short by a kill
                    break
                raise TrackingError(f"{self.path}:{i}: corrupt spool record") from None
            out.append(rec)
        if not out or out[0].get("kind") != "run":
            raise TrackingError(f"{self.path}: not an automl_bilevel spool (no run header)")
        return out

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def trial_record(event: TrialFinished, replayed: bool = False) -> dict[str, Any]:
    t = event.trial
    return {
        "kind": "trial",
        "number": int(t.number),
        "config": dict(t.config),
        "value": float(t.value) if math.isfinite(t.value) else None,
        "status": t.status,
        "ok": bool(t.ok),
        "duration": float(t.duration),
        "budget": t.budget,
        "metrics": dict(t.metrics),
        "error": t.error,
        "best_value": float(event.best.value) if event.best is not None else None,
        "time_ms": int(time.time() * 1000),
        "replayed": bool(replayed),
    }


# -- writing one parent run, idempotently ---------------------------------------------------------
class RunWriter:
    """Writes one parent run's trials and end to the store; safe to repeat after any failure.

    Used by the live background writer and by ``automl-bilevel sync``.
    """

    def __init__(self, client: MlflowClient, experiment_id: str, run_id: str, trials_are_steps: bool) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.trials_are_steps = trials_are_steps
        self.children: dict[int, str] = {}  # trial number -> child run id (created, maybe unfinished)
        self.done: set[int] = set()  # trials whose child is complete
        self.dirty = False  # a call failed: what exists must be read back before creating more

    def existing_children(self) -> list[Any]:
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], f"tags.`mlflow.parentRunId` = '{self.run_id}'", max_results=1000, page_token=token
            )
            runs += [r for r in page if TRIAL_TAG in r.data.tags]
            token = page.token
            if not token:
                return runs

    def reconcile(self) -> None:
        """Read back which children exist (a request may have succeeded although its answer was lost)."""
        self.children.clear()
        for r in sorted(self.existing_children(), key=lambda r: r.info.start_time or 0):
            n = int(r.data.tags[TRIAL_TAG])
            if n in self.children:
                continue  # a duplicate: removed by dedupe()
            self.children[n] = r.info.run_id
            if r.info.status in TERMINAL:  # a child is ended only after its metrics and params are in
                self.done.add(n)
        self.dirty = False

    def dedupe(self) -> int:
        """Delete children that repeat a trial number (an HTTP retry of a create that had succeeded)."""
        seen: dict[int, Any] = {}
        removed = 0
        for r in sorted(
            self.existing_children(), key=lambda r: (r.info.status not in TERMINAL, r.info.start_time or 0)
        ):
            n = int(r.data.tags[TRIAL_TAG])
            if n in seen:
                self.client.delete_run(r.info.run_id)
                removed += 1
            else:
                seen[n] = r
        return removed

    def write_trials(self, records: list[dict[str, Any]], should_stop: Callable[[], bool] | None = None) -> None:
        """Write ``records``; ``should_stop()`` is asked before each trial (a second Ctrl-C must not
        wait for a whole batch)."""
        from mlflow.entities import Metric, Param

        try:
            if self.dirty:
                self.reconcile()
            parent_metrics = []
            for rec in records:
                if should_stop is not None and should_stop():
                    break
                n, ts = rec["number"], rec["time_ms"]
                step = {"value": rec["value"], **rec["metrics"]}
                if rec.get("best_value") is not None:
                    step["best_value"] = rec["best_value"]
                parent_metrics += [Metric(k, float(v), ts, n) for k, v in step.items() if _finite(v)]
                if self.trials_are_steps or n in self.done:
                    continue
                cid = self.children.get(n)
                if cid is None:
                    tags = {
                        "mlflow.parentRunId": self.run_id,
                        TRIAL_TAG: str(n),
                        "automl_bilevel.status": rec["status"],
                    }
                    if rec.get("replayed"):
                        tags["automl_bilevel.replayed"] = "true"
                    if rec.get("error"):
                        tags["automl_bilevel.error"] = rec["error"][:5000]
                    cid = self.client.create_run(
                        self.experiment_id,
                        run_name=f"trial-{n}",
                        start_time=ts - int(rec["duration"] * 1000),
                        tags=tags,
                    ).info.run_id
                    self.children[n] = cid
                metrics = [
                    Metric(k, float(v), ts, 0)
                    for k, v in {"value": rec["value"], "duration": rec["duration"], **rec["metrics"]}.items()
                    if _finite(v)
                ]
                params = [Param(str(k), str(v)[:MAX_PARAM]) for k, v in rec["config"].items()]
                if rec.get("budget") is not None:
                    params.append(Param("budget", str(rec["budget"])))
                self.client.log_batch(cid, metrics=metrics, params=params)
                self.client.set_terminated(cid, "FINISHED" if rec["ok"] else "FAILED", end_time=ts)
                self.done.add(n)
            for i in range(0, len(parent_metrics), 1000):  # MLflow caps a batch at 1000 metrics
                self.client.log_batch(self.run_id, metrics=parent_metrics[i : i + 1000])
        except BaseException:
            self.dirty = True
            raise

    def finish(self, rec: dict[str, Any], artifact_dir: Path | None) -> None:
        """The run's end: summary metrics and tags, the files in ``artifact_dir``, the terminal status."""
        from mlflow.entities import Metric, RunTag

        if not self.trials_are_steps:
            self.dedupe()
        ts = rec["time_ms"]
        tags = [RunTag("automl_bilevel.status", rec["status"])]
        if rec.get("error"):
            tags.append(RunTag("automl_bilevel.error", rec["error"][:5000]))
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(f"final.{k}", float(v), ts, 0) for k, v in rec["summary"].items() if _finite(v)],
            tags=tags,
        )
        if artifact_dir is not None and artifact_dir.is_dir():
            for entry in sorted(artifact_dir.iterdir()):
                if entry.is_dir():
                    self.client.log_artifacts(self.run_id, str(entry), artifact_path=entry.name)
                else:
                    self.client.log_artifact(self.run_id, str(entry))
            model_dir = artifact_dir.parent / LOGGED_MODEL_DIR
            if model_dir.is_dir():
                self.log_model(model_dir)
        self.client.set_terminated(self.run_id, rec["status"], end_time=ts)

    def log_model(self, local: Path) -> str:
        """The saved model as an MLflow 3 logged model named ``model`` of this run (once): listed with
        the experiment's models, loadable as ``runs:/<run_id>/model`` or ``models:/<model_id>``, and
        registrable."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        for m in self.client.search_logged_models(
            experiment_ids=[self.experiment_id], filter_string=f"name = '{MODEL_NAME}'"
        ):
            if m.source_run_id == self.run_id and m.status == LoggedModelStatus.READY:
                return m.model_id
        lm = self.client.create_logged_model(
            self.experiment_id, name=MODEL_NAME, source_run_id=self.run_id, tags={"automl_bilevel.version": __version__}
        )
        meta = Model.load(str(local / "MLmodel"))
        meta.model_id, meta.run_id, meta.artifact_path = lm.model_id, self.run_id, lm.artifact_location
        meta.save(str(local / "MLmodel"))
        self.client.log_model_artifacts(lm.model_id, str(local))
        self.client.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
        self.client.log_outputs(self.run_id, [LoggedModelOutput(lm.model_id, step=0)])
        return lm.model_id


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
    def done(self) -> _Done: ...

    @property
    def abort(self) -> _Abort: ...

    @property
    def completed(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...

    def put(self, item: Any) -> None: ...


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
        try:
            while True:
                if self.abort.is_set():
                    break
                wait = None if not pending and end is None else max(0.0, next_try - time.monotonic())
                got = self._gather(pending, min(wait, 0.2) if wait is not None else 0.2)
                end = end or got
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
    automl_bilevel_plugins.tracking.mlflow_tracking follow FOLDER PID``): it shares no interpreter
    lock with the search, runs at a lower priority, and ends the run itself (KILLED) if this process
    dies first. Same interface as :class:`BackgroundWriter`."""

    def __init__(self, folder: Path) -> None:
        import subprocess

        self.folder = Path(folder)
        self.log = self.folder / "writer.log"
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "automl_bilevel_plugins.tracking.mlflow_tracking",
                    "follow",
                    str(self.folder),
                    str(os.getpid()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )  # a Ctrl-C in the terminal is for the search, not for the writer
        self.done = _ProcessDone(self.proc)
        self.abort = _ProcessAbort(self.proc)

    def put(self, item: Any) -> None:  # the spool is the channel
        pass

    @property
    def completed(self) -> bool:
        return self.proc.poll() == 0

    @property
    def last_error(self) -> str | None:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return None
        return lines[-1][:500] if lines else None


def follow(folder: Path, parent_pid: int) -> int:
    """Write a spool to its store while it grows; end when its run has ended and all is written
    (exit 0, the spool removed). SIGTERM: end the parent run now and leave the rest spooled (exit 3).
    If the process that writes the spool dies without ending the run, end it KILLED."""
    import signal

    from mlflow import MlflowClient

    stop = {"abort": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("abort", True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    spool = Spool(folder)
    head: dict[str, Any] | None = None
    writer: RunWriter | None = None
    end: dict[str, Any] | None = None
    pending: list[dict[str, Any]] = []
    offset, buf = 0, b""
    delay, next_try = 0.0, 0.0
    orphaned_until = None  # once the search process is gone: how long to keep trying the store
    while not stop["abort"]:
        if orphaned_until is None and not _pid_alive(parent_pid):
            orphaned_until = time.monotonic() + flush_timeout()
        elif orphaned_until is not None and time.monotonic() > orphaned_until:
            print("the search process is gone and the store still fails: giving up; the spool stays", file=sys.stderr)
            return 4
        with open(spool.path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
        offset += len(data)
        *lines, buf = (buf + data).split(b"\n")
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            kind = rec.get("kind")
            if kind == "run":
                head = rec
            elif kind == "trial":
                pending.append(rec)
            elif kind == "finish":
                end = rec
        if head is not None and writer is None:
            writer = RunWriter(
                MlflowClient(tracking_uri=head["uri"]),
                head["experiment_id"],
                head["run_id"],
                bool(head.get("trials_are_steps")),
            )
            writer.dirty = True  # read back what exists before creating anything
        if writer is None or (not pending and end is None):
            # (without a writer, no run header has been read: there is nothing to end yet)
            if writer is not None and not data and orphaned_until is not None:
                end = {
                    "kind": "finish",
                    "status": "KILLED",
                    "time_ms": int(time.time() * 1000),
                    "error": "the process ended before the run did",
                    "summary": {},
                }
            else:
                time.sleep(0.1)
                continue
        if time.monotonic() < next_try:
            time.sleep(0.05)
            continue
        try:
            if pending:
                batch = pending[:BATCH_TRIALS]
                writer.write_trials(batch, lambda: stop["abort"])
                if stop["abort"]:
                    break
                del pending[: len(batch)]
            elif end is not None:
                writer.finish(end, folder / "artifacts")
                spool.remove()
                return 0
            delay = 0.0
        except Exception as exc:
            print(
                f"{time.strftime('%H:%M:%S')} tracking store failed: {type(exc).__name__}: {exc}",
                file=sys.stderr,
                flush=True,
            )
            delay = min(max(2 * delay, 0.5), 5.0)
            next_try = time.monotonic() + delay
    if writer is not None:  # aborted: end the parent at least
        status = end["status"] if end else "KILLED"
        try:
            writer.client.set_tag(writer.run_id, SPOOL_TAG, str(folder))
            writer.client.set_terminated(writer.run_id, status, end_time=end["time_ms"] if end else None)
        except Exception as exc:
            print(f"could not end run {writer.run_id}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    return 3


# -- the listener ---------------------------------------------------------------------------------
def _active_parent(uri: str) -> tuple[str, str] | None:
    """(run id, experiment id) of the caller's active MLflow run in the same store, if any."""
    import mlflow

    active = mlflow.active_run()
    if active is None:
        return None
    try:
        same = resolve_uri(mlflow.get_tracking_uri()) == uri
    except Exception:
        same = False
    return (active.info.run_id, active.info.experiment_id) if same else None


class MlflowListener:
    def __init__(self, context: RunContext) -> None:
        from mlflow.entities import Param

        from mlflow import MlflowClient

        self.context = context
        self.uri = resolve_uri(context.tracking.uri)
        self.timeout = flush_timeout()
        self.writer_kind = writer_kind(context.n_iter)
        check_reachable(self.uri)
        # MLflow prints a "View run" line (and reads the run back) on every run it ends against a
        # server: thousands of lines for a search. Off unless the user asked for it.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.client = MlflowClient(tracking_uri=self.uri)
        nest = _active_parent(self.uri)
        if nest is not None:  # as MLflow's autologging does: the search is a child of the caller's run
            self.experiment_id = nest[1]
        else:
            name = context.tracking.experiment
            exp = self.client.get_experiment_by_name(name)
            self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(name)
        tags = {
            "automl_bilevel.version": __version__,
            "automl_bilevel.task": context.task,
            "automl_bilevel.learner": context.learner,
            "automl_bilevel.objective": context.objective,
            "automl_bilevel.optimizer": context.optimizer,
            "mlflow.user": str(context.params.get("user", "unknown")),
        }
        parent = nest[0] if nest else os.environ.get("MLFLOW_RUN_ID")  # `mlflow run` sets MLFLOW_RUN_ID
        if parent:
            tags["mlflow.parentRunId"] = parent
        resumed = int(context.resumed_trials or 0)
        if resumed:
            tags["automl_bilevel.resumed_trials"] = str(resumed)
        run = self.client.create_run(self.experiment_id, run_name=context.name, tags=tags)
        self.run_id = run.info.run_id
        try:
            params: dict[str, str] = {}
            _flat_params("", {k: v for k, v in context.params.items() if k != "user"}, params)
            for kind, p in context.plugins.items():
                params[f"plugin.{kind}"] = f"{p['name']} ({p['package']} {p['version']})"
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
            self.client.log_dict(self.run_id, dict(context.search_space), "search_space.json")
            self.spool = Spool.create(
                spool_root(self.uri),
                self.run_id,
                {
                    "uri": self.uri,
                    "experiment_id": self.experiment_id,
                    "run_id": self.run_id,
                    "trials_are_steps": bool(context.trials_are_steps),
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "learner": context.learner,
                    "optimizer": context.optimizer,
                    "objective": context.objective,
                },
            )
            self.writer: Writer
            if self.writer_kind == "process":
                self.writer = ProcessWriter(self.spool.folder)
            else:
                self.writer = BackgroundWriter(
                    RunWriter(self.client, self.experiment_id, self.run_id, bool(context.trials_are_steps))
                )
        except BaseException as exc:  # no run may stay RUNNING: the session never saw this listener
            self.client.set_terminated(self.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            if not isinstance(exc, Exception):
                raise
            raise TrackingError(f"MLflow run {self.run_id} could not be set up: {type(exc).__name__}: {exc}") from exc
        self.info: Mapping[str, Any] = {
            "mlflow_run_id": self.run_id,
            "mlflow_experiment_id": self.experiment_id,
            "mlflow_tracking_uri": self.uri,
            "mlflow_spool": str(self.spool.folder),
        }
        self.resumed = resumed
        self.seen: set[int] = set()
        self.finished = False
        atexit.register(self._at_exit)

    # -- events ---------------------------------------------------------------------------
    def handle(self, event: RunStarted | TrialFinished | RunFinished) -> None:
        if isinstance(event, TrialFinished):
            self._trial(event)
        elif isinstance(event, RunFinished):
            self._end(event)
        elif isinstance(event, RunStarted):
            pass

    def _trial(self, event: TrialFinished) -> None:
        rec = trial_record(event, replayed=len(self.seen) < self.resumed)
        self.spool.append(rec)
        self.writer.put(rec)
        self.seen.add(rec["number"])

    def _end(self, event: RunFinished) -> None:
        if self.finished:
            return
        self.finished = True
        # a trial whose event an interruption cut off is still in the run's trials: write it too
        done: list[Trial] = []
        for t in event.trials:
            done.append(t)
            if t.number not in self.seen:
                self._trial(TrialFinished(t, best_trial(done), len(done), len(event.trials)))
        rec = {
            "kind": "finish",
            "status": event.status,
            "error": event.error,
            "time_ms": int(time.time() * 1000),
            "summary": {
                "n_trials": len(event.trials),
                "n_failed": sum(not t.ok for t in event.trials),
                "duration": event.duration,
                **({"best_value": event.best.value} if event.best is not None else {}),
            },
        }
        artifact_dir = self.spool.folder / "artifacts"
        interrupted = None
        try:
            self._write_artifacts(event, artifact_dir)
        except KeyboardInterrupt as exc:  # a second Ctrl-C: no files, but the run still ends
            interrupted = exc
        except Exception as exc:  # a figure or a model that cannot be saved must not leave the run open
            warnings.warn(
                f"MLflow run {self.run_id}: the run's files could not be prepared: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=3,
            )
        self.spool.append(rec)
        self.writer.put((_STOP, rec, artifact_dir, str(self.spool.folder)))
        try:
            if interrupted is not None:
                raise interrupted
            self.writer.done.wait(self.timeout)
        except KeyboardInterrupt:  # a second Ctrl-C: end the parent now, keep the rest in the spool
            self.writer.abort.set()
            # a writer stopped before it could end the parent (a writer process still starting when the
            # SIGTERM came) is done too: unless it wrote everything, end the parent from here
            if not self.writer.done.wait(ABORT_WAIT) or not self.writer.completed:
                self._last_resort_end(rec)
            self._report()
            raise
        if not self.writer.done.is_set():
            self.writer.abort.set()
            if not self.writer.done.wait(ABORT_WAIT) or not self.writer.completed:
                self._last_resort_end(rec)
        self._report()

    def _last_resort_end(self, rec: dict[str, Any]) -> None:
        """The writer did not end the parent in time: try once from here, bounded, so the run does
        not stay RUNNING while the store answers (the spool keeps the rest)."""

        def end() -> None:
            try:
                self.client.set_tag(self.run_id, SPOOL_TAG, str(self.spool.folder))
                self.client.set_terminated(self.run_id, rec["status"], end_time=rec["time_ms"])
            except Exception:
                pass

        t = threading.Thread(target=end, daemon=True)
        t.start()
        t.join(ABORT_WAIT)

    def _report(self) -> None:
        atexit.unregister(self._at_exit)
        if self.writer.completed:
            self.spool.remove()
            return
        why = self.writer.last_error or "interrupted"
        msg = (
            f"MLflow run {self.run_id}: not everything could be written to {self.uri} ({why}); "
            f"it is kept in {self.spool.folder}. Write it later with: automl-bilevel sync {self.spool.folder}"
        )
        print(f"automl-bilevel: {msg}", file=sys.stderr)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)

    def _at_exit(self) -> None:  # the interpreter ends without RunFinished: keep what is spooled
        if not self.finished and not self.writer.done.is_set():
            self.writer.abort.set()
            self.writer.done.wait(ABORT_WAIT)

    # -- the run's files ------------------------------------------------------------------
    def _write_artifacts(self, event: RunFinished, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        trials = event.trials
        if event.best is not None:
            (folder / "best_config.json").write_text(
                json.dumps(
                    {"params": dict(event.best.config), "value": event.best.value, "trial": event.best.number},
                    indent=1,
                    default=_jsonable,
                )
            )
        if trials:
            (folder / "trials.json").write_text(
                json.dumps(
                    [
                        {
                            "number": t.number,
                            "value": t.value if math.isfinite(t.value) else None,
                            "status": t.status,
                            "params": dict(t.config),
                            "duration": t.duration,
                            "budget": t.budget,
                            "error": t.error,
                        }
                        for t in trials
                    ],
                    indent=1,
                    default=_jsonable,
                )
            )
            save_trace_plot(
                trials,
                folder / "optimization_trace.png",
                steps=self.context.trials_are_steps,
                ylabel=self.context.objective,
                title=f"{self.context.learner} / {self.context.optimizer}",
            )
        if event.model is not None and self.context.tracking.log_model:
            self._save_model(event.model, folder.parent / LOGGED_MODEL_DIR)
        if event.artifacts:
            learned = folder / "learned"
            learned.mkdir(exist_ok=True)
            for name, component in event.artifacts.items():
                component.save(str(learned / f"{name}.pt"))
                info = {
                    "class": f"{type(component).__module__}.{type(component).__qualname__}",
                    "settings": dict(component.settings()) if hasattr(component, "settings") else {},
                }
                (learned / f"{name}.json").write_text(json.dumps(info, indent=1, default=_jsonable))

    def _save_model(self, model: Any, path: Path) -> None:
        """The fitted estimator as an MLflow model with a signature and an input example (one row of
        zeros of the fitted width: the run's data is not kept), logged as an MLflow 3 logged model
        when the run ends (:meth:`RunWriter.finish`)."""
        import mlflow.sklearn
        import numpy as np
        from mlflow.models import infer_signature

        # we choose cloudpickle on purpose (our estimators hold torch modules skops cannot store)
        logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
        logging.getLogger("mlflow.models.model").setLevel(logging.ERROR)
        if path.exists():
            shutil.rmtree(path)
        example, signature = None, None
        n = getattr(model, "n_features_in_", None)
        if isinstance(n, int) and n > 0:
            example = np.zeros((1, n))
            signature = infer_signature(example, model.predict(example))
        mlflow.sklearn.save_model(
            model,
            str(path),
            serialization_format="cloudpickle",
            signature=signature,
            input_example=example,
            pip_requirements=[f"automl-bilevel=={__version__}"],
        )


def _robust_limits(values: list[float]) -> tuple[float, float] | None:
    """y limits that keep the bulk of the values visible when a few outliers are far away."""
    import numpy as np

    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if len(v) < 5:
        return None
    lo, hi = np.percentile(v, [0, 95])
    if v.max() <= hi or hi <= lo:
        return None
    pad = 0.05 * (hi - lo)
    return float(lo - pad), float(hi + pad)


def save_trace_plot(trials: Sequence[Trial], path: Path, *, steps: bool, ylabel: str, title: str) -> Figure:
    """The objective per trial and the best so far; integer trial ticks; a log axis for positive values
    spanning decades, else limits at the 95th percentile so one outlier does not flatten the rest."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    xs = [t.number for t in trials if t.ok]
    ys = [t.value for t in trials if t.ok]
    best: list[float] = []
    cur = math.inf
    for t in trials:
        cur = min(cur, t.value) if t.ok else cur
        best.append(cur)
    if steps:
        ax.plot(xs, ys, lw=1, label="objective")
    else:
        ax.scatter(xs, ys, s=12, alpha=0.6, label="trial")
    ax.step([t.number for t in trials], best, where="post", color="C3", label="best so far")
    failed = [t.number for t in trials if not t.ok]
    if failed:
        ax.scatter(failed, [min(ys) if ys else 0] * len(failed), marker="x", color="k", label="failed")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ys and min(ys) > 0 and max(ys) / min(ys) > 100:
        ax.set_yscale("log")
    else:
        limits = _robust_limits(ys)
        if limits is not None:
            ax.set_ylim(*limits)
            ax.set_title(f"{title} ({sum(y > limits[1] for y in ys)} above the plot)", fontsize=10)
    if not ax.get_title():
        ax.set_title(title)
    ax.set_xlabel("outer step" if steps else "trial")
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    return fig


# -- sync -----------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def spool_folders(where: str | os.PathLike[str] | None, uri: str | None = None) -> list[Path]:
    """The spool folders under ``where`` (a run's folder, or a root holding several)."""
    root = Path(where) if where is not None else spool_root(resolve_uri(uri))
    if (root / SPOOL_FILE).is_file():
        return [root]
    if not root.is_dir():
        raise TrackingError(f"no spool at {str(root)!r}: not a folder")
    return sorted(p for p in root.iterdir() if (p / SPOOL_FILE).is_file())


def sync_spool(folder: Path, uri: str | None = None, force: bool = False) -> dict[str, Any]:
    """Write one spooled run to its store (or ``uri``); exactly once per trial; remove the spool."""
    from mlflow import MlflowClient

    spool = Spool(folder)
    records = spool.records()
    head = records[0]
    if (
        not force
        and head.get("host") == socket.gethostname()
        and head.get("pid") != os.getpid()
        and _pid_alive(int(head.get("pid", -1)))
    ):
        raise TrackingError(
            f"{folder}: process {head['pid']} that writes this run is still running; wait for it or pass --force"
        )
    target = uri or head["uri"]
    check_reachable(target)
    client = MlflowClient(tracking_uri=target)
    writer = RunWriter(client, head["experiment_id"], head["run_id"], bool(head.get("trials_are_steps")))
    writer.reconcile()
    trials: dict[int, dict[str, Any]] = {}
    for rec in records:
        if rec["kind"] == "trial":
            trials[rec["number"]] = rec
    todo = [r for n, r in sorted(trials.items()) if n not in writer.done]
    for i in range(0, len(todo), BATCH_TRIALS):
        writer.write_trials(todo[i : i + BATCH_TRIALS])
    end = next((r for r in reversed(records) if r["kind"] == "finish"), None)
    if end is None:  # the process died before the run ended
        end = {
            "kind": "finish",
            "status": "KILLED",
            "time_ms": int(time.time() * 1000),
            "error": "the process ended before the run did; written by automl-bilevel sync",
            "summary": {"n_trials": len(trials)},
        }
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    writer.finish(end, folder / "artifacts")
    if SPOOL_TAG in client.get_run(head["run_id"]).data.tags:
        client.delete_tag(head["run_id"], SPOOL_TAG)
    spool.remove()
    return {
        "run_id": head["run_id"],
        "uri": target,
        "trials": len(trials),
        "written": len(todo),
        "status": end["status"],
    }


@hookimpl
def bilevel_run_listener(context: RunContext) -> RunListener | None:
    if not context.tracking.enabled:
        return None
    return MlflowListener(context)


@hookimpl
def bilevel_sync_spool(path: str | None, uri: str | None, force: bool) -> list[dict[str, Any]]:
    if path is None and not spool_root(resolve_uri(uri)).is_dir():
        return []
    out: list[dict[str, Any]] = []
    for folder in spool_folders(path, uri):
        try:
            out.append(sync_spool(folder, uri, force))
        except Exception as exc:  # one run that cannot be written does not stop the others
            out.append({"spool": str(folder), "error": f"{type(exc).__name__}: {exc}"})
    return out


if __name__ == "__main__":  # the writer process (ProcessWriter)
    if len(sys.argv) == 4 and sys.argv[1] == "follow":
        sys.exit(follow(Path(sys.argv[2]), int(sys.argv[3])))
    sys.exit("usage: python -m automl_bilevel_plugins.tracking.mlflow_tracking follow SPOOL_FOLDER PID")
