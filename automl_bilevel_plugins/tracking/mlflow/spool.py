"""The spool: a parent run's records kept on local disk until they are in the store.

Standard library only (the writer process reads it)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from automl_bilevel_plugins.tracking.mlflow.store import SPOOL_FILE, TrackingError, _jsonable


class Spool:
    """One parent run's records, as JSON lines in ``<root>/<run_id>/spool.jsonl``.

    Private to the user: the folders are made with mode 0700 and the file 0600. The file is made whole,
    with its header, as a temporary file (``mkstemp``) in the run's folder and moved into place with
    ``os.replace``; records are then appended without following symbolic links (``O_NOFOLLOW``), so a
    link planted in a shared folder is refused rather than written through. Each record is one
    ``os.write`` on an ``O_APPEND`` file: a signal lands between records, and a kill leaves at most a
    torn last line, which readers skip.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / SPOOL_FILE

    @classmethod
    def create(cls, root: Path, run_id: str, header: dict[str, Any]) -> Spool:
        """Make the spool of a new parent run under ``root``, with its header record; raises TrackingError when the
        run's folder already exists."""
        root = Path(root)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        spool = cls(root / run_id)
        try:
            os.mkdir(spool.folder, 0o700)  # a new run id: a folder (or link) already there is refused
        except FileExistsError:
            raise TrackingError(f"spool folder {spool.folder} already exists; refusing to write into it") from None
        fd, tmp = tempfile.mkstemp(prefix=".spool-", suffix=".tmp", dir=spool.folder)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write((json.dumps({"kind": "run", **header}, default=_jsonable) + "\n").encode())
            os.replace(tmp, spool.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return spool

    def append(self, record: dict[str, Any]) -> None:
        """One record, in one ``os.write``; raises ``OSError`` when the disk refuses it (full, read-only)."""
        data = (json.dumps(record, default=_jsonable) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        try:
            written = os.write(fd, data)
            if written != len(data):  # a short write on a full disk: the record is torn
                raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written", str(self.path))
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        """Every record, the run header first; a torn last line is skipped. Raises TrackingError on a corrupt record
        or a missing run header."""
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
        """Delete the run's spool folder and everything in it."""
        shutil.rmtree(self.folder, ignore_errors=True)
