"""The MLflow tracking plugin's hook implementations (the ``mlflow_tracking`` entry point)."""

from __future__ import annotations

from typing import Any

from automl_bilevel import RunContext, RunListener, hookimpl
from automl_bilevel_plugins.tracking.mlflow.listener import MlflowListener
from automl_bilevel_plugins.tracking.mlflow.reap import end_dead_runs
from automl_bilevel_plugins.tracking.mlflow.sync import spool_folders, sync_spool
from automl_bilevel_plugins.tracking.mlflow.uri import _sqlite_path, check_reachable, resolve_uri, spool_root


@hookimpl
def bilevel_run_listener(context: RunContext) -> RunListener | None:
    """An :class:`MlflowListener` for the run, or ``None`` when tracking is off."""
    if not context.tracking.enabled:
        return None
    return MlflowListener(context)


@hookimpl
def bilevel_sync_spool(path: str | None, uri: str | None, force: bool) -> list[dict[str, Any]]:
    """Write spooled runs, then end the runs of the store whose process is gone (see :mod:`.reap`)."""
    out: list[dict[str, Any]] = []
    if path is not None or spool_root(resolve_uri(uri)).is_dir():
        for folder in spool_folders(path, uri):
            try:
                out.append(sync_spool(folder, uri, force))
            except Exception as exc:  # one run that cannot be written does not stop the others
                out.append({"spool": str(folder), "error": f"{type(exc).__name__}: {exc}"})
    if path is None:  # the whole store: runs left RUNNING by a process that died without a spool to write
        from mlflow import MlflowClient

        target = resolve_uri(uri)
        db = _sqlite_path(target)
        if db is not None and not db.exists():  # no store yet: nothing can be RUNNING in it
            return out
        try:
            check_reachable(target)
            for line in end_dead_runs(MlflowClient(tracking_uri=target), target):
                out.append({"ended": line})
        except Exception as exc:
            out.append({"spool": target, "error": f"store unreachable: {type(exc).__name__}: {exc}"})
    return out
