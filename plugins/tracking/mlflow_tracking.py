"""MLflow tracking, as a plugin: one parent run per fit or CLI run, one child run per trial.

Where runs go: the estimator's ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else
``sqlite:///mlflow.db`` in the working directory. The store is checked before any work is done.
Trials are written in batches (``log_batch``), at most every ``FLUSH_SECONDS`` and at the end.
Child runs are created with ``MlflowClient.create_run(tags={"mlflow.parentRunId": ...})``, so
they need no active run in the process that creates them.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from automl_bilevel import RunFinished, RunStarted, TrialFinished, __version__, hookimpl

DEFAULT_URI = "sqlite:///mlflow.db"
FLUSH_SECONDS = 2.0
MAX_PARAM = 6000


class TrackingError(RuntimeError):
    """The tracking store cannot be used; raised before the run starts."""


def resolve_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def check_reachable(uri: str) -> None:
    """Fail fast, with a clear message, when the store at ``uri`` cannot be used."""
    hint = "pass tracking_uri=..., set MLFLOW_TRACKING_URI, or tracking=False"
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            r = requests.get(uri.rstrip("/") + "/health", timeout=5)
        except requests.RequestException as exc:
            raise TrackingError(f"MLflow tracking server {uri} is unreachable ({type(exc).__name__}); "
                                f"start one with mlflow/start_server.sh, or {hint}") from exc
        if r.status_code != 200:
            raise TrackingError(f"MLflow tracking server {uri} answered /health with HTTP {r.status_code}; {hint}")
        return
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise TrackingError(f"MLflow store {uri}: folder {str(parent)!r} does not exist; {hint}")
        if not os.access(parent, os.W_OK):
            raise TrackingError(f"MLflow store {uri}: folder {str(parent)!r} is not writable; {hint}")
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(f"MLflow store {uri} cannot be used: {type(exc).__name__}: {exc}; {hint}") from exc


def _flat_params(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat_params(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)[:MAX_PARAM]


class MlflowListener:
    def __init__(self, context):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.context = context
        self.uri = resolve_uri(context.tracking.uri)
        check_reachable(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
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
        parent = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`: nest under that run
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=context.name, tags=tags)
        self.run_id = run.info.run_id
        params: dict[str, str] = {}
        _flat_params("", {k: v for k, v in context.params.items() if k != "user"}, params)
        for kind, p in context.plugins.items():
            params[f"plugin.{kind}"] = f"{p['name']} ({p['package']} {p['version']})"
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
        self.client.log_dict(self.run_id, dict(context.search_space), "search_space.json")
        self.info = {"mlflow_run_id": self.run_id, "mlflow_experiment_id": self.experiment_id,
                     "mlflow_tracking_uri": self.uri}
        self._pending: list[TrialFinished] = []
        self._last_flush = time.monotonic()

    # -- events ---------------------------------------------------------------------------
    def handle(self, event):
        if isinstance(event, TrialFinished):
            self._pending.append(event)
            if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
                self.flush()
        elif isinstance(event, RunFinished):
            try:
                self.flush()
                self._finish(event)
            finally:
                self.client.set_terminated(self.run_id, event.status)
        elif isinstance(event, RunStarted):
            pass

    def flush(self) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if not self._pending:
            return
        now = int(time.time() * 1000)
        parent_metrics = []
        for ev in self._pending:
            t = ev.trial
            step_metrics = {"value": t.value, **t.metrics}
            if ev.best is not None:
                step_metrics["best_value"] = ev.best.value
            parent_metrics += [Metric(k, float(v), now, t.number) for k, v in step_metrics.items()
                               if isinstance(v, (int, float)) and math.isfinite(v)]
            if self.context.trials_are_steps:
                continue
            child = self.client.create_run(
                self.experiment_id, run_name=f"trial-{t.number}",
                start_time=now - int(t.duration * 1000),
                tags={"mlflow.parentRunId": self.run_id, "automl_bilevel.trial": str(t.number)},
            )
            cid = child.info.run_id
            metrics = [Metric(k, float(v), now, 0) for k, v in {"value": t.value, "duration": t.duration, **t.metrics}.items()
                       if isinstance(v, (int, float)) and math.isfinite(v)]
            params = [Param(k, str(v)[:MAX_PARAM]) for k, v in t.config.items()]
            if t.budget is not None:
                params.append(Param("budget", str(t.budget)))
            tags = [RunTag("automl_bilevel.status", t.status)] + ([RunTag("automl_bilevel.error", t.error[:5000])] if t.error else [])
            self.client.log_batch(cid, metrics=metrics, params=params, tags=tags)
            self.client.set_terminated(cid, "FINISHED" if t.ok else "FAILED")
        for i in range(0, len(parent_metrics), 1000):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(self.run_id, metrics=parent_metrics[i:i + 1000])
        self._pending.clear()
        self._last_flush = time.monotonic()

    def _finish(self, event: RunFinished) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        trials = event.trials
        summary = {"n_trials": len(trials), "n_failed": sum(not t.ok for t in trials), "duration": event.duration}
        if event.best is not None:
            summary["best_value"] = event.best.value
            self.client.log_dict(self.run_id, {"params": dict(event.best.config), "value": event.best.value,
                                               "trial": event.best.number}, "best_config.json")
        tags = [RunTag("automl_bilevel.status", event.status)]
        if event.error:
            tags.append(RunTag("automl_bilevel.error", event.error[:5000]))
        self.client.log_batch(self.run_id, metrics=[Metric(f"final.{k}", float(v), now, 0) for k, v in summary.items()],
                              tags=tags)
        if trials:
            self.client.log_dict(self.run_id, [
                {"number": t.number, "value": t.value if math.isfinite(t.value) else None, "status": t.status,
                 "params": dict(t.config), "duration": t.duration, "budget": t.budget, "error": t.error}
                for t in trials], "trials.json")
            self._log_plot(trials)
        if event.model is not None and self.context.tracking.log_model:
            self._log_model(event.model)
        if event.artifacts:
            self._log_learned(event.artifacts)

    def _log_plot(self, trials) -> None:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        xs = [t.number for t in trials if t.ok]
        ys = [t.value for t in trials if t.ok]
        best, cur = [], math.inf
        for t in trials:
            cur = min(cur, t.value) if t.ok else cur
            best.append(cur)
        if self.context.trials_are_steps:
            ax.plot(xs, ys, lw=1, label="objective")
        else:
            ax.scatter(xs, ys, s=12, alpha=0.6, label="trial")
        ax.step([t.number for t in trials], best, where="post", color="C3", label="best so far")
        failed = [t.number for t in trials if not t.ok]
        if failed:
            ax.scatter(failed, [min(ys) if ys else 0] * len(failed), marker="x", color="k", label="failed")
        ax.set_xlabel("outer step" if self.context.trials_are_steps else "trial")
        ax.set_ylabel(self.context.objective)
        ax.set_title(f"{self.context.learner} / {self.context.optimizer}")
        ax.legend()
        fig.tight_layout()
        self.client.log_figure(self.run_id, fig, "optimization_trace.png")

    def _log_learned(self, artifacts) -> None:
        """Each learned component as ``learned/<name>.pt`` (its own ``save``, read back by its
        class's ``load``) with its settings in ``learned/<name>.json``."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, component in artifacts.items():
                component.save(os.path.join(tmp, f"{name}.pt"))
                info = {"class": f"{type(component).__module__}.{type(component).__qualname__}",
                        "settings": dict(component.settings()) if hasattr(component, "settings") else {}}
                with open(os.path.join(tmp, f"{name}.json"), "w") as fh:
                    json.dump(info, fh, indent=1)
            self.client.log_artifacts(self.run_id, tmp, artifact_path="learned")

    def _log_model(self, model) -> None:
        import logging

        import mlflow.sklearn

        # we choose cloudpickle on purpose (our estimators hold torch modules skops cannot store)
        logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model")
            mlflow.sklearn.save_model(model, path, serialization_format="cloudpickle",
                                     pip_requirements=[f"automl-bilevel=={__version__}"])
            self.client.log_artifacts(self.run_id, path, artifact_path="model")


@hookimpl
def bilevel_run_listener(context):
    if not context.tracking.enabled:
        return None
    return MlflowListener(context)
