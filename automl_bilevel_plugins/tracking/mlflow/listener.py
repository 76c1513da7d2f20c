"""The run listener: one parent run per fit or CLI run, one child run per trial (see the package
docstring for the spool and the writers)."""

from __future__ import annotations

import atexit
import json
import math
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from automl_bilevel import (
    RunContext,
    RunFinished,
    RunStarted,
    Trial,
    TrialFinished,
    __version__,
    best_trial,
)
from automl_bilevel_plugins.tracking.mlflow.model import save_model
from automl_bilevel_plugins.tracking.mlflow.plots import plot_timeout, save_run_plots, save_trace_plot
from automl_bilevel_plugins.tracking.mlflow.reap import end_dead_runs
from automl_bilevel_plugins.tracking.mlflow.spool import Spool
from automl_bilevel_plugins.tracking.mlflow.store import (
    FLUSH_TIMEOUT_ENV,
    HEARTBEAT_TAG,
    HOST_TAG,
    LOGGED_MODEL_DIR,
    MAX_PARAM,
    PID_TAG,
    SPOOL_TAG,
    RunWriter,
    TrackingError,
    _jsonable,
    flush_timeout,
)
from automl_bilevel_plugins.tracking.mlflow.uri import check_reachable, resolve_uri, spool_root
from automl_bilevel_plugins.tracking.mlflow.writers import _STOP, BackgroundWriter, ProcessWriter, Writer, writer_kind

ABORT_WAIT = 10.0  # after a second Ctrl-C: seconds left to end the parent run
SETTINGS_TAG = "automl_bilevel.settings_hash"
FIT_TAG = "automl_bilevel.fit"
# settings that say where and how a run is shown, not what is fitted: left out of the settings hash
_NOT_SETTINGS = frozenset(
    {"user", "tracking", "tracking_uri", "experiment_name", "run_name", "log_model", "log_plots", "verbose"}
)
_fits: dict[str, int] = {}  # settings hash -> fits started in this process
_fits_lock = threading.Lock()


def settings_hash(params: Mapping[str, Any]) -> str:
    """A short digest of an estimator's settings (``get_params``), without where it logs to: the same for
    every fit of one ``GridSearchCV`` candidate, different between candidates."""
    import hashlib

    kept = {k: v for k, v in params.items() if k not in _NOT_SETTINGS}
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=repr).encode()).hexdigest()[:12]


def next_fit(digest: str) -> int:
    """1 for the first fit of these settings in this process, then 2, 3, ... (the folds of a
    ``cross_val_score``, the refit of a ``GridSearchCV``)."""
    with _fits_lock:
        _fits[digest] = _fits.get(digest, 0) + 1
        return _fits[digest]


def best_record(best: Trial | None) -> dict[str, Any] | None:
    """The best trial as the parent run's summary: its number, value, configuration and metrics."""
    if best is None or not math.isfinite(best.value):
        return None
    return {
        "number": int(best.number),
        "value": float(best.value),
        "config": dict(best.config),
        "metrics": {k: float(v) for k, v in best.metrics.items() if isinstance(v, (int, float))},
    }


def _flat_params(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat_params(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)[:MAX_PARAM]


def trial_record(event: TrialFinished, replayed: bool = False) -> dict[str, Any]:
    """The spool record of a finished trial: its configuration, value (``None`` when not finite), status,
    metrics, the best value so far, and whether it was ``replayed`` from a checkpoint."""
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
    """The MLflow run listener: a parent run per fit or CLI run, a child run per trial.

    The parent run is created when the listener is made (a child of the caller's active run in the same store);
    each trial is appended to the spool and written by a writer (thread or process); ``RunFinished`` ends the
    parent. Raises TrackingError when the store cannot be used or the parent run cannot be set up.
    """

    def __init__(self, context: RunContext) -> None:
        from mlflow.entities import Param

        from mlflow import MlflowClient

        self.context = context
        self.uri = resolve_uri(context.tracking.uri)
        self.timeout = flush_timeout()
        self.plot_timeout = plot_timeout() if context.tracking.log_plots else 0.0
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
        # runs of this experiment whose process died (SIGKILL, a crash) are ended, their spools written
        for line in end_dead_runs(self.client, self.uri, [self.experiment_id]):
            print(f"automl-bilevel: {line}", file=sys.stderr)
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
        tags[PID_TAG] = str(os.getpid())
        tags[HOST_TAG] = socket.gethostname()
        tags[HEARTBEAT_TAG] = str(int(time.time() * 1000))
        self.settings_hash = settings_hash(context.params)
        self.fit = next_fit(self.settings_hash)
        tags[SETTINGS_TAG] = self.settings_hash
        tags[FIT_TAG] = str(self.fit)
        run_name = context.tracking.run_name or context.name
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
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
        self.spool_error: str | None = None  # why the spool could not be written (disk full, read-only)
        self.unspooled: list[int] = []  # trials whose spool record failed
        self.cause: str | None = None  # why the writer did not finish (besides a store error)
        atexit.register(self._at_exit)

    # -- events ---------------------------------------------------------------------------
    def handle(self, event: RunStarted | TrialFinished | RunFinished) -> None:
        """Spool each finished trial for the writer; at ``RunFinished`` end the parent run, waiting for the writer up
        to the flush timeout."""
        if isinstance(event, TrialFinished):
            self._trial(event)
        elif isinstance(event, RunFinished):
            self._end(event)
        elif isinstance(event, RunStarted):
            pass

    def _spool(self, rec: dict[str, Any]) -> bool:
        """Append to the spool; on a disk that refuses (full, read-only) remember why and go on: the
        search must not stop, and the end of the fit says what was not tracked."""
        try:
            self.spool.append(rec)
            return True
        except OSError as exc:
            if self.spool_error is None:
                self.spool_error = f"{exc.strerror or exc} ({self.spool.path})"
            return False

    def _trial(self, event: TrialFinished) -> None:
        rec = trial_record(event, replayed=len(self.seen) < self.resumed)
        if not self._spool(rec):
            self.unspooled.append(rec["number"])
        self.writer.put(rec)  # the writer thread takes it from memory; a writer process only from the spool
        self.seen.add(rec["number"])

    def untracked(self) -> list[int]:
        """Trials in neither the store nor the spool: their spool record failed, and the writer did not
        write them (a writer process reads only the spool)."""
        if not self.unspooled or self.writer.completed:
            return []
        if isinstance(self.writer, BackgroundWriter) and not self.context.trials_are_steps:
            return [n for n in self.unspooled if n not in self.writer.writer.done]
        return list(self.unspooled)

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
            "best": best_record(event.best),
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
        end_spooled = self._spool(rec)
        self.writer.put((_STOP, rec, artifact_dir, str(self.spool.folder)))
        try:
            if interrupted is not None:
                raise interrupted
            if end_spooled or isinstance(self.writer, BackgroundWriter):
                self.writer.done.wait(self.timeout)
            else:  # a writer process cannot learn that the run ended: stop it, end the parent from here
                self.cause = "the spool could not be written, so the writer process could not finish"
        except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) while writing: end the parent now, keep the rest spooled
            self.cause = "Ctrl-C (or SIGTERM) stopped the writing"
            self.writer.abort.set()
            # a writer stopped before it could end the parent (a writer process still starting when the
            # SIGTERM came) is done too: unless it wrote everything, end the parent from here
            if not self.writer.done.wait(ABORT_WAIT) or not self.writer.completed:
                self._last_resort_end(rec)
            self._report()
            if rec["status"] != "FINISHED":
                raise
            # every trial ran and the fit has its result: the signal stopped only the waiting for the
            # store, so the fit returns (its results are not "interrupted"); the spool keeps the rest
        if not self.writer.done.is_set():
            if self.cause is None:
                self.cause = f"the store did not take everything within {FLUSH_TIMEOUT_ENV}={self.timeout:g} s"
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
        lost = self.untracked()
        if self.writer.completed and not lost:
            self.spool.remove()
            return
        msgs = []
        if not self.writer.completed:
            if self.writer.last_error:
                why = f"the store failed or was unreachable: {self.writer.last_error}"
            else:
                why = self.cause or "the writer stopped before it was done"
            msgs.append(
                f"MLflow run {self.run_id}: not everything could be written to {self.uri} ({why}); "
                f"what was spooled is kept in {self.spool.folder}. Write it later with: "
                f"automl-bilevel sync {self.spool.folder}"
            )
        if lost:
            checkpoint = (self.context.params or {}).get("checkpoint")
            where = (
                f"they are in the checkpoint {checkpoint}"
                if checkpoint
                else "they are only in this fit's trials_ (pass checkpoint=PATH to keep trials on disk)"
            )
            msgs.append(
                f"MLflow run {self.run_id}: {len(lost)} trial(s) are NOT TRACKED, in neither the store nor the "
                f"spool, because the spool could not be written: {self.spool_error}; {where}"
            )
        for msg in msgs:
            print(f"automl-bilevel: {msg}", file=sys.stderr)
            warnings.warn(msg, RuntimeWarning, stacklevel=4)

    def _at_exit(self) -> None:  # the interpreter ends without RunFinished: keep what is spooled
        if not self.finished and not self.writer.done.is_set():
            self.writer.abort.set()
            self.writer.done.wait(ABORT_WAIT)

    # -- the run's files ------------------------------------------------------------------
    def _write_plots(self, trials: Sequence[Trial], folder: Path) -> None:
        """The run's figures; one that cannot be drawn is a warning, never a lost model or run."""
        title = f"{self.context.learner} / {self.context.optimizer}"
        steps = bool(self.context.trials_are_steps)
        started = time.monotonic()
        try:
            save_trace_plot(
                trials, folder / "optimization_trace.png", steps=steps, ylabel=self.context.objective, title=title
            )
            left = max(self.plot_timeout - (time.monotonic() - started), 0.0)
            save_run_plots(
                trials, folder / "plots", steps=steps, objective=self.context.objective, title=title, timeout=left
            )
        except Exception as exc:
            warnings.warn(
                f"MLflow run {self.run_id}: a plot could not be drawn: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )

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
            if self.context.tracking.log_plots:
                self._write_plots(trials, folder)
        if event.model is not None and self.context.tracking.log_model:
            save_model(event.model, folder.parent / LOGGED_MODEL_DIR)
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
