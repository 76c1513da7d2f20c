"""Writing one parent run to an MLflow store, idempotently (:class:`RunWriter`), and the names and
settings the spool, the writers and ``sync`` share.

This module imports only the standard library at import time (mlflow where it writes), not the
host: the writer process (:mod:`automl_bilevel_plugins.tracking.mlflow.follow`) starts in the time
it takes to import mlflow, while the search runs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient


MAX_PARAM = 6000
BATCH_TRIALS = 100  # trials per writer batch (the parent's metrics of a batch go in one log_batch)
FLUSH_TIMEOUT_ENV = "AUTOML_BILEVEL_FLUSH_TIMEOUT"
DEFAULT_FLUSH_TIMEOUT = 60.0
TRIAL_TAG = "automl_bilevel.trial"
BEST_TRIAL_TAG = "automl_bilevel.best_trial"
PID_TAG = "automl_bilevel.pid"  # the process that runs the search, on
HOST_TAG = "automl_bilevel.host"
HEARTBEAT_TAG = "automl_bilevel.heartbeat"  # ms since the epoch: renewed by the writer while the run lives
HEARTBEAT_EVERY = 60.0  # seconds between heartbeats of an idle writer
WRITER_PID_FILE = "writer.pid"  # in a spool folder: the writer process that follows it
SPOOL_TAG = "automl_bilevel.spool"
SPOOL_FILE = "spool.jsonl"
LOGGED_MODEL_DIR = "logged_model"  # in a run's spool folder: the model, logged as "model" at the end
MODEL_NAME = "model"
TERMINAL = ("FINISHED", "FAILED", "KILLED")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("automl_bilevel")
    except PackageNotFoundError:
        return "unknown"


class TrackingError(RuntimeError):
    """The tracking store cannot be used; raised before the run starts."""


def flush_timeout() -> float:
    """Seconds the end of a run waits for the store (``AUTOML_BILEVEL_FLUSH_TIMEOUT``, default 60); raises
    TrackingError when the variable is not a number >= 0."""
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


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return repr(value)


def killed_end(trials: list[dict[str, Any]], error: str) -> dict[str, Any]:
    """The end record of a run whose process died before it ended the run: KILLED, with the summary and
    the best trial computed from the spooled ``trials``."""
    ok = [r for r in trials if r.get("ok") and _finite(r.get("value"))]
    best = min(ok, key=lambda r: (r["value"], r["number"])) if ok else None
    summary: dict[str, Any] = {"n_trials": len(trials), "n_failed": len(trials) - len(ok)}
    if best is not None:
        summary["best_value"] = best["value"]
    return {
        "kind": "finish",
        "status": "KILLED",
        "time_ms": int(time.time() * 1000),
        "error": error,
        "summary": summary,
        "best": None
        if best is None
        else {"number": best["number"], "value": best["value"], "config": best["config"], "metrics": best["metrics"]},
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
        """The child runs of this parent run in the store (those tagged with a trial number), every page."""
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
        from mlflow.entities import Metric, Param, RunTag

        try:
            if self.dirty:
                self.reconcile()
            parent_metrics = []
            for rec in records:
                if should_stop is not None and should_stop():
                    break
                n, ts = rec["number"], rec["time_ms"]
                # the parent's step history: when trials are outer steps of one training, the objective
                # per step is the run's curve; when they are separate trials (each a child run), a
                # trial's own value on the parent would read as the run's in the runs table, so the
                # parent keeps only the best so far
                step = {"value": rec["value"], **rec["metrics"]} if self.trials_are_steps else {}
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
            beat = [RunTag(HEARTBEAT_TAG, str(int(time.time() * 1000)))]
            for i in range(0, max(len(parent_metrics), 1), 1000):  # MLflow caps a batch at 1000 metrics
                self.client.log_batch(self.run_id, metrics=parent_metrics[i : i + 1000], tags=beat)
        except BaseException:
            self.dirty = True
            raise

    def beat(self) -> None:
        """Renew the parent's heartbeat (a writer with nothing to write does this every minute)."""
        self.client.set_tag(self.run_id, HEARTBEAT_TAG, str(int(time.time() * 1000)))

    def finish(self, rec: dict[str, Any], artifact_dir: Path | None) -> None:
        """The run's end: summary metrics and tags, the files in ``artifact_dir``, the terminal status."""
        from mlflow.entities import Metric, Param, RunTag

        if not self.trials_are_steps:
            self.dedupe()
        ts = rec["time_ms"]
        tags = [RunTag("automl_bilevel.status", rec["status"])]
        if rec.get("error"):
            tags.append(RunTag("automl_bilevel.error", rec["error"][:5000]))
        metrics = [Metric(f"final.{k}", float(v), ts, 0) for k, v in rec["summary"].items() if _finite(v)]
        params = []
        best = rec.get("best")
        if best:  # the run's result, so that MLflow's runs table sorts and compares fits by it
            tags.append(RunTag(BEST_TRIAL_TAG, str(best["number"])))
            params = [Param(f"best.{k}", str(v)[:MAX_PARAM]) for k, v in best["config"].items()]
            step = int(rec["summary"].get("n_trials") or 0)
            metrics.append(Metric("best_value", float(best["value"]), ts, step))
            metrics += [Metric(f"best.{k}", float(v), ts, 0) for k, v in best.get("metrics", {}).items() if _finite(v)]
        if params:  # params are write-once: a finish repeated (by sync) logs only those not yet there
            have = self.client.get_run(self.run_id).data.params
            params = [p for p in params if p.key not in have]
        self.client.log_batch(self.run_id, metrics=metrics, params=params, tags=tags)
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
            self.experiment_id, name=MODEL_NAME, source_run_id=self.run_id, tags={"automl_bilevel.version": _version()}
        )
        meta = Model.load(str(local / "MLmodel"))
        meta.model_id, meta.run_id, meta.artifact_path = lm.model_id, self.run_id, lm.artifact_location
        meta.save(str(local / "MLmodel"))
        self.client.log_model_artifacts(lm.model_id, str(local))
        self.client.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
        self.client.log_outputs(self.run_id, [LoggedModelOutput(lm.model_id, step=0)])
        return lm.model_id


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
