"""``automl-bilevel sync``: write spooled runs to their store, exactly once per trial."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from automl_bilevel_plugins.tracking.mlflow.spool import Spool
from automl_bilevel_plugins.tracking.mlflow.store import (
    BATCH_TRIALS,
    SPOOL_FILE,
    SPOOL_TAG,
    RunWriter,
    TrackingError,
    _pid_alive,
    killed_end,
)
from automl_bilevel_plugins.tracking.mlflow.uri import check_reachable, resolve_uri, spool_root


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
    from automl_bilevel_plugins.tracking.mlflow.reap import writer_alive
    from mlflow import MlflowClient

    # MLflow prints a "View run" line for every run it ends: one line per child otherwise
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
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
    if not force and writer_alive(Path(folder)):
        raise TrackingError(f"{folder}: its writer process is still writing this run; wait for it or pass --force")
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
    # every trial again: the children already complete are skipped, but the parent's step metrics of all
    # are logged (a child may have been written while its parent batch was not; same timestamps and
    # steps, so a step already there is not repeated)
    ordered = [r for _, r in sorted(trials.items())]
    for i in range(0, len(ordered), BATCH_TRIALS):
        writer.write_trials(ordered[i : i + BATCH_TRIALS])
    end = next((r for r in reversed(records) if r["kind"] == "finish"), None)
    if end is None:  # the process died before the run ended
        end = killed_end(
            [r for _, r in sorted(trials.items())],
            "the process ended before the run did; written by automl-bilevel sync",
        )
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
