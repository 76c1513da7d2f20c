"""The MLflow tracking plugin's hook implementations (the ``mlflow_tracking`` entry point)."""

from __future__ import annotations

from typing import Any

from automl_bilevel import RunContext, RunListener, hookimpl
from automl_bilevel_plugins.tracking.mlflow.listener import MlflowListener
from automl_bilevel_plugins.tracking.mlflow.sync import spool_folders, sync_spool
from automl_bilevel_plugins.tracking.mlflow.uri import resolve_uri, spool_root


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
