"""A checkpoint of a search: trials appended to a JSON-lines file as they finish.

Started again with the same file, a search continues from the trials it holds: they are replayed
into the optimizer (``OuterOptimizer.replay``), count toward ``n_iter``, and the original seed
(hence the same validation split) is reused. The first line records what the search was (learner,
objective, optimizer, space, data); a file written for a different search is refused with the
differences named; nothing ever prompts for input. A last line cut short by a crash is ignored.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .trials import Trial

FORMAT = "automl_bilevel.journal"


class JournalMismatchError(ValueError):
    """The checkpoint file belongs to a different search."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


def _dump(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, default=_jsonable, sort_keys=True)


class Journal:
    def __init__(self, path: str | os.PathLike, fingerprint: Mapping[str, Any]):
        self.path = Path(path)
        # normalise through JSON so a fingerprint compares equal to its stored copy
        self.fingerprint = json.loads(_dump(fingerprint))

    def open(self, seed: int) -> tuple[int, list[Trial]]:
        """The seed to use and the trials already recorded (none for a new file)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w") as fh:
                fh.write(_dump({"format": FORMAT, "version": 1, "seed": int(seed), "fingerprint": self.fingerprint})
                         + "\n")
            return int(seed), []
        lines = self.path.read_text().splitlines()
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
        trials = []
        for i, line in enumerate(lines[1:], start=2):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines):  # the last write was cut short
                    break
                raise JournalMismatchError(f"{self.path}:{i}: corrupt record") from None
            trials.append(Trial(number=len(trials), config=rec["config"], value=math.nan if rec["value"] is None else float(rec["value"]),
                                status=rec["status"], duration=float(rec["duration"]), budget=rec.get("budget"),
                                metrics=rec.get("metrics", {}), error=rec.get("error")))
        return int(header["seed"]), trials

    def append(self, trial: Trial) -> None:
        rec = {"config": dict(trial.config), "value": trial.value if math.isfinite(trial.value) else None,
               "status": trial.status, "duration": trial.duration, "budget": trial.budget,
               "metrics": dict(trial.metrics), "error": trial.error}
        with self.path.open("a") as fh:
            fh.write(_dump(rec) + "\n")
            fh.flush()

    def truncate(self, n: int) -> None:
        """Keep the header and the first ``n`` records (atomically): later ones are done again."""
        lines = self.path.read_text().splitlines()
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("\n".join(lines[:1 + int(n)]) + "\n")
        os.replace(tmp, self.path)
