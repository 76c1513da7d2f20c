"""A checkpoint of a search: trials appended to a JSON-lines file as they finish.

Started again with the same file, a search continues from the trials it holds: they are replayed
into the optimizer (``OuterOptimizer.replay``), count toward ``n_iter``, and the original seed
(hence the same validation split) is reused. The first line records what the search was (learner,
objective, optimizer, space, data); a file written for a different search is refused with the
differences named; nothing ever prompts for input.

A last line cut short by a crash is dropped *from the file* when it is opened again (so the next
record starts on a line of its own), and every record is one ``os.write`` (a signal lands between
records, never inside one). Records are checked when read: a missing or mistyped field, or a
configuration outside the search space, is refused with ``file:line``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from automl_bilevel.core.jsonable import jsonable
from automl_bilevel.core.trials import COMPLETE, FAILED, Trial

FORMAT = "automl_bilevel.run.journal"


class JournalMismatchError(ValueError):
    """The checkpoint file belongs to a different search."""


def _dump(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, default=jsonable, sort_keys=True)


class JournalRecordError(JournalMismatchError):
    """A record of the checkpoint file is malformed or outside the search space (``file:line``)."""


def check_path(path: Any) -> Path:
    """A checkpoint path that can be used, or a ValueError saying why not (before any work)."""
    if not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)).strip():
        raise ValueError(f"checkpoint must be a file path, got {path!r}")
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"checkpoint {str(p)!r} is a directory; give a file path such as {str(p / 'search.jsonl')!r}")
    return p


_NUMBER = (int, float)


def _check_record(rec: Any, where: str, space: Any) -> Trial:
    if not isinstance(rec, dict):
        raise JournalRecordError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    missing = [k for k in ("config", "value", "status", "duration") if k not in rec]
    if missing:
        raise JournalRecordError(f"{where}: record lacks {', '.join(missing)}")
    config, value, status, duration = rec["config"], rec["value"], rec["status"], rec["duration"]
    if not isinstance(config, dict):
        raise JournalRecordError(f"{where}: 'config' must be an object, got {config!r}")
    if value is not None and (not isinstance(value, _NUMBER) or isinstance(value, bool)):
        raise JournalRecordError(f"{where}: 'value' must be a number or null, got {value!r}")
    if status not in (COMPLETE, FAILED):
        raise JournalRecordError(f"{where}: 'status' must be {COMPLETE!r} or {FAILED!r}, got {status!r}")
    if status == COMPLETE and value is None:
        raise JournalRecordError(f"{where}: a COMPLETE trial needs a finite 'value'")
    if not isinstance(duration, _NUMBER) or isinstance(duration, bool) or not duration >= 0:
        raise JournalRecordError(f"{where}: 'duration' must be a number >= 0, got {duration!r}")
    budget = rec.get("budget")
    if budget is not None and (not isinstance(budget, _NUMBER) or isinstance(budget, bool)):
        raise JournalRecordError(f"{where}: 'budget' must be a number or null, got {budget!r}")
    metrics = rec.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise JournalRecordError(f"{where}: 'metrics' must be an object, got {metrics!r}")
    if space is not None:
        _check_config(config, where, space)
    return Trial(
        number=0,
        config=config,
        value=math.nan if value is None else float(value),
        status=status,
        duration=float(duration),
        budget=budget,
        metrics=metrics,
        error=rec.get("error"),
    )


def _check_config(config: dict[str, Any], where: str, space: Any) -> None:
    """Every key a hyperparameter of ``space`` with a legal value; vector hyperparameters (lists of
    numbers, not part of the ConfigSpace) are let through."""
    from ConfigSpace import Configuration

    names = set(space.keys())
    scalar = {}
    for k, v in config.items():
        if k in names:
            scalar[k] = v
        elif not (isinstance(v, list) and all(isinstance(x, _NUMBER) for x in v)):
            raise JournalRecordError(
                f"{where}: {k!r} is not a hyperparameter of the search space (it has: {', '.join(sorted(names))})"
            )
    for k, v in scalar.items():
        try:
            legal = space[k].legal_value(v)
        except Exception:
            legal = False
        if not legal:
            raise JournalRecordError(f"{where}: {k}={v!r} is outside the search space ({space[k]})")
    try:
        Configuration(space, values=scalar).check_valid_configuration()
    except Exception as exc:
        raise JournalRecordError(
            f"{where}: the configuration is not valid in the search space: {type(exc).__name__}: {exc}"
        ) from None


class Journal:
    """The checkpoint file at ``path`` of one search, identified by ``fingerprint`` (what the search
    was; a file with another fingerprint is refused). ``space``, when given, checks recorded configurations."""

    def __init__(self, path: str | os.PathLike[str], fingerprint: Mapping[str, Any], space: Any = None) -> None:
        self.path = check_path(path)
        # normalise through JSON so a fingerprint compares equal to its stored copy
        self.fingerprint = json.loads(_dump(fingerprint))
        self.space = space

    def _write(self, line: str, mode: int = os.O_APPEND) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | mode, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def open(self, seed: int, space: Any = None) -> tuple[int, list[Trial]]:
        """The seed to use and the trials already recorded (none for a new file); each record is
        checked, its configuration against ``space`` when one is given."""
        space = space if space is not None else self.space
        if not self.path.exists() or self.path.stat().st_size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write(
                _dump({"format": FORMAT, "version": 1, "seed": int(seed), "fingerprint": self.fingerprint}) + "\n",
                os.O_TRUNC,
            )
            return int(seed), []
        raw = self.path.read_bytes()
        lines = raw.decode("utf-8", errors="replace").split("\n")
        complete = raw.endswith(b"\n")
        if complete:
            lines.pop()  # the empty string after the last newline
        try:
            header = json.loads(lines[0])
            assert header.get("format") == FORMAT
        except Exception:
            raise JournalMismatchError(f"{self.path} is not an automl_bilevel checkpoint file") from None
        old = header.get("fingerprint", {})
        diff = sorted(k for k in set(old) | set(self.fingerprint) if old.get(k) != self.fingerprint.get(k))
        if diff:
            raise JournalMismatchError(
                f"checkpoint {self.path} was written by a different search (differs in: {', '.join(diff)}); "
                "use another checkpoint path or delete this file to start afresh"
            )
        if not complete and len(lines) == 1:  # a header without its newline: complete it
            self._write("\n")
        trials: list[Trial] = []
        for i, line in enumerate(lines[1:], start=2):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) and not complete:  # the last write was cut short: drop it from the file
                    self._truncate_last_line(raw)
                    break
                raise JournalRecordError(f"{self.path}:{i}: corrupt record (not JSON)") from None
            trial = _check_record(rec, f"{self.path}:{i}", space)
            trials.append(
                Trial(
                    len(trials),
                    trial.config,
                    trial.value,
                    trial.status,
                    trial.duration,
                    trial.budget,
                    trial.metrics,
                    trial.error,
                )
            )
            if i == len(lines) and not complete:  # a whole record whose newline was not written
                self._write("\n")
        return int(header["seed"]), trials

    def _truncate_last_line(self, raw: bytes) -> None:
        keep = raw.rfind(b"\n") + 1
        with self.path.open("r+b") as fh:
            fh.truncate(keep)

    def append(self, trial: Trial) -> None:
        """Record one finished trial as one JSON line (a single write)."""
        rec = {
            "config": dict(trial.config),
            "value": trial.value if math.isfinite(trial.value) else None,
            "status": trial.status,
            "duration": trial.duration,
            "budget": trial.budget,
            "metrics": dict(trial.metrics),
            "error": trial.error,
        }
        self._write(_dump(rec) + "\n")

    def truncate(self, n: int) -> None:
        """Keep the header and the first ``n`` records (atomically): later ones are done again."""
        lines = self.path.read_text().splitlines()
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("\n".join(lines[: 1 + int(n)]) + "\n")
        os.replace(tmp, self.path)
