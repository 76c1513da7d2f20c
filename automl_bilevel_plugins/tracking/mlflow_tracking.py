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
from collections.abc import Mapping, Sequence
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
from automl_bilevel_plugins.tracking.store import (
    BATCH_TRIALS,
    LOGGED_MODEL_DIR,
    MAX_PARAM,
    SPOOL_FILE,
    SPOOL_TAG,
    RunWriter,
    Spool,
    TrackingError,
    _jsonable,
    _pid_alive,
    flush_timeout,
)

if TYPE_CHECKING:
    import subprocess

    from matplotlib.figure import Figure


DEFAULT_URI = "sqlite:///mlflow.db"
SPOOL_ENV = "AUTOML_BILEVEL_SPOOL_DIR"
ABORT_WAIT = 10.0  # after a second Ctrl-C: seconds left to end the parent run

log = logging.getLogger("automl_bilevel.tracking")


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


def _flat_params(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat_params(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)[:MAX_PARAM]


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
    automl_bilevel_plugins.tracking.store follow FOLDER PID``): it shares no interpreter lock with
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
                    "automl_bilevel_plugins.tracking.store",
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
                    "settings": dict(component.settings()),
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
        shape = getattr(model, "input_shape_", None)  # one example's shape: images and sequences keep theirs
        if isinstance(shape, tuple) and len(shape) > 1:
            example = np.zeros((1, *shape), dtype=np.float32)
            signature = infer_signature(example, model.predict(example))
        elif isinstance(n, int) and n > 0:
            example = np.zeros((1, n))
            signature = infer_signature(example, model.predict(example))
        mlflow.sklearn.save_model(
            model,
            str(path),
            serialization_format="cloudpickle",
            signature=signature,
            input_example=example,
            pip_requirements=[f"automl-bilevel=={__version__}"],
            code_paths=_user_code_paths(model) or None,
        )


def _user_code_paths(model: Any) -> list[str]:
    """The source of the user's own torch module class, where the fitted model holds one defined in a
    module of the user's (not ``__main__``: cloudpickle stores those by value; not an installed
    package: a pip requirement's job): logged with the model as MLflow ``code_paths``, so that loading
    it elsewhere finds the class instead of failing with ``ModuleNotFoundError``."""
    import sysconfig

    module = getattr(getattr(model, "model_", None), "module", None)
    if module is None:
        return []
    name = type(module).__module__
    top = name.split(".")[0]
    if name == "__main__" or top in ("torch", "automl_bilevel", "automl_bilevel_plugins", "builtins"):
        return []
    file = getattr(sys.modules.get(top), "__file__", None)
    if not file:
        return []
    path = Path(file).resolve()
    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    if any(p in path.parents for p in installed):
        return []
    return [str(path.parent if path.name == "__init__.py" else path)]


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
