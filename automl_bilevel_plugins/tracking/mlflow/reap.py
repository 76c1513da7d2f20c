"""Ending runs whose process died (SIGKILL, a crash, a lost machine), so that none stays RUNNING.

Every parent run carries the tags ``automl_bilevel.pid``, ``automl_bilevel.host`` and
``automl_bilevel.heartbeat`` (renewed by its writer with each batch and every minute while idle, as
Optuna's heartbeats). The next fit on the same store (its experiment) and ``automl-bilevel sync`` (every
experiment) end the runs that are RUNNING although their process is gone:

- on this machine, a process that no longer exists: its spool (if any) is written first, every spooled
  child included, and the run ends KILLED with the best of its trials (:func:`sync_spool`);
- on another machine: a heartbeat older than ``AUTOML_BILEVEL_STALE_AFTER`` seconds (default 900).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from automl_bilevel_plugins.tracking.mlflow.spool import Spool
from automl_bilevel_plugins.tracking.mlflow.store import (
    HEARTBEAT_TAG,
    HOST_TAG,
    PID_TAG,
    SPOOL_FILE,
    WRITER_PID_FILE,
    TrackingError,
    _pid_alive,
)
from automl_bilevel_plugins.tracking.mlflow.uri import spool_root

STALE_ENV = "AUTOML_BILEVEL_STALE_AFTER"
DEFAULT_STALE_AFTER = 900.0


def stale_after() -> float:
    """Seconds without a heartbeat after which a run of another machine counts as dead."""
    raw = os.environ.get(STALE_ENV)
    if raw is None:
        return DEFAULT_STALE_AFTER
    try:
        value = float(raw)
    except ValueError:
        raise TrackingError(f"{STALE_ENV}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise TrackingError(f"{STALE_ENV}={raw!r} must be > 0 seconds")
    return value


def writer_alive(folder: Path) -> bool:
    """Whether the writer process that follows this spool is still running."""
    try:
        pid = int((folder / WRITER_PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return False
    return _pid_alive(pid)


def orphaned(folder: Path, uri: str | None = None) -> dict[str, Any] | None:
    """The spool's header if the process that wrote it (and its writer process) is gone from this
    machine and it belongs to the store ``uri`` (any store when None); else None."""
    try:
        head = Spool(folder).records()[0]
    except (OSError, TrackingError, IndexError):
        return None
    if uri is not None and head.get("uri") != uri:
        return None
    if head.get("host") != socket.gethostname():
        return None
    if _pid_alive(int(head.get("pid", -1))) or writer_alive(folder):
        return None
    return head


def end_dead_runs(client: Any, uri: str, experiment_ids: Sequence[str] | None = None) -> list[str]:
    """End the runs of ``experiment_ids`` (all when None) whose process is gone; one line per run ended."""
    from automl_bilevel_plugins.tracking.mlflow.sync import sync_spool

    lines: list[str] = []
    spooled: set[str] = set()
    root = spool_root(uri)
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if (p / SPOOL_FILE).is_file()):
            head = orphaned(folder, uri)
            if head is None:
                continue
            if experiment_ids is not None and head.get("experiment_id") not in experiment_ids:
                continue
            spooled.add(str(head.get("run_id")))
            try:
                res = sync_spool(folder, uri)
            except Exception as exc:  # the fit goes on; sync can try again
                lines.append(f"run {head.get('run_id')} of a process that is gone could not be written: {exc}")
                continue
            lines.append(
                f"run {res['run_id']} of process {head.get('pid')}, which is gone, written from its spool "
                f"({res['written']} of {res['trials']} trials now) and ended {res['status']}"
            )
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    if not experiment_ids:
        return lines
    here, now_ms, stale_ms = socket.gethostname(), int(time.time() * 1000), stale_after() * 1000
    runs = client.search_runs(list(experiment_ids), "attributes.status = 'RUNNING'", max_results=1000)
    for r in runs:
        tags = r.data.tags
        if PID_TAG not in tags or r.info.run_id in spooled:
            continue
        beat = int(tags.get(HEARTBEAT_TAG) or 0)
        if tags.get(HOST_TAG) == here:
            if _pid_alive(int(tags[PID_TAG])):
                continue
            why = f"its process {tags[PID_TAG]} on this machine is gone"
        elif now_ms - beat > stale_ms:
            why = f"no heartbeat from {tags.get(HOST_TAG)} for {(now_ms - beat) / 1000:.0f} s"
        else:
            continue
        client.set_tag(r.info.run_id, "automl_bilevel.error", f"ended by a later fit or sync: {why}")
        client.set_tag(r.info.run_id, "automl_bilevel.status", "KILLED")
        client.set_terminated(r.info.run_id, "KILLED", end_time=beat or None)
        lines.append(f"run {r.info.run_id} ended KILLED: {why}")
    return lines
