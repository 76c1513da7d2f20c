"""The spool: a parent run's records kept on local disk until they are in the store.

Standard library only (the writer process reads it)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from automl_bilevel_plugins.tracking.mlflow.store import SPOOL_FILE, TrackingError, _jsonable


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
