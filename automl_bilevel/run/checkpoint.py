"""A checkpoint of a search: its trials (a JSON-lines journal) plus, for optimizers that keep an outer
state (gradient methods: variables, optimizer moments, step), that state after the last trial.

Fitting again with the same checkpoint continues the search exactly where it stopped, for every
outer method: the trials count toward ``n_iter``; an optimizer with saved state loads it
(``OuterOptimizer.load_state_dict``), any other one is told the trials again (``replay``).

The state lives next to the journal (``<checkpoint>.state``) and is written with the journal line
of each trial: first to a temporary file, then the journal line, then an atomic rename. A crash
therefore leaves either both old (the trial is done again) or a journal one line ahead of the state
(that line is dropped on resume).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from automl_bilevel.core.components import OuterOptimizer
from automl_bilevel.core.trials import Trial
from automl_bilevel.run.journal import Journal

log = logging.getLogger("automl_bilevel")

STATE_FORMAT = "automl_bilevel.outer_state"


class Checkpoint:
    """A journal and the optimizer's outer state; opened once per run with :meth:`open`."""

    def __init__(self, path: str | os.PathLike[str], fingerprint: Mapping[str, Any]) -> None:
        self.journal = Journal(path, fingerprint)
        self.state_path = Path(f"{os.fspath(path)}.state")
        self.seed: int | None = None
        self.trials: list[Trial] = []

    def open(self, seed: int, space: Any = None) -> int:
        """Read the checkpoint (or start it); returns the seed the search must use (the first run's).
        With ``space``, every recorded configuration is checked against it."""
        self.seed, self.trials = self.journal.open(seed, space)
        if not self.trials and self.state_path.exists():  # a fresh journal: a stale state is not ours
            self.state_path.unlink()
        return self.seed

    def _read_state(self) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        try:
            with self.state_path.open("rb") as fh:
                saved = pickle.load(fh)
            assert isinstance(saved, dict) and saved.get("format") == STATE_FORMAT
        except Exception as exc:
            raise ValueError(
                f"{self.state_path} is not a readable outer-state file ({type(exc).__name__}); "
                "delete the checkpoint and its .state file to start afresh"
            ) from None
        return saved

    def resume(self, optimizer: OuterOptimizer[Any]) -> list[Trial]:
        """Bring a set-up ``optimizer`` to where the checkpoint stopped; returns the trials that count."""
        saved = self._read_state()
        if saved is None:
            if self.trials and optimizer.state_dict() is not None:
                raise ValueError(
                    f"checkpoint {self.journal.path} has {len(self.trials)} trials but no outer state "
                    f"({self.state_path} is missing); {type(optimizer).__name__} cannot continue "
                    "exactly without it"
                )
            optimizer.replay(list(self.trials))
            return list(self.trials)
        n = int(saved["n_trials"])
        if n > len(self.trials):
            raise ValueError(f"{self.state_path} is ahead of {self.journal.path} ({n} vs {len(self.trials)} trials)")
        if n < len(self.trials):
            log.warning(
                "checkpoint %s: %d trial(s) after the saved outer state are done again",
                self.journal.path,
                len(self.trials) - n,
            )
            self.trials = self.trials[:n]
            self.journal.truncate(n)
        optimizer.load_state_dict(saved["state"])
        return list(self.trials)

    def record(self, trial: Trial, optimizer: OuterOptimizer[Any]) -> None:
        """Append ``trial`` and, if the optimizer has one, its outer state after telling it."""
        state = optimizer.state_dict()
        if state is None:
            self.journal.append(trial)
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(
                {"format": STATE_FORMAT, "n_trials": trial.number + 1, "state": state},
                fh,
                protocol=pickle.HIGHEST_PROTOCOL,
            )
            fh.flush()
            os.fsync(fh.fileno())
        self.journal.append(trial)
        os.replace(tmp, self.state_path)
