"""The writer process: ``python -m automl_bilevel_plugins.tracking.mlflow.follow FOLDER PID`` follows a
spool file while the search appends to it and writes it to the store.

Imports only the standard library and mlflow (not the host), so it starts while the search runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from automl_bilevel_plugins.tracking.mlflow.spool import Spool
from automl_bilevel_plugins.tracking.mlflow.store import (
    BATCH_TRIALS,
    HEARTBEAT_EVERY,
    SPOOL_TAG,
    RunWriter,
    _pid_alive,
    flush_timeout,
    killed_end,
)


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
    seen: dict[int, dict[str, Any]] = {}  # every trial read, for the summary of a run ended here
    offset, buf = 0, b""
    delay, next_try = 0.0, 0.0
    last_beat = time.monotonic()
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
                seen[rec["number"]] = rec
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
                end = killed_end(list(seen.values()), "the process ended before the run did")
            else:
                if writer is not None and time.monotonic() - last_beat > HEARTBEAT_EVERY:
                    last_beat = time.monotonic()
                    try:
                        writer.beat()
                    except Exception:
                        pass
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


if __name__ == "__main__":  # the writer process (writers.ProcessWriter)
    if len(sys.argv) == 3:
        sys.exit(follow(Path(sys.argv[1]), int(sys.argv[2])))
    sys.exit("usage: python -m automl_bilevel_plugins.tracking.mlflow.follow SPOOL_FOLDER PID")
