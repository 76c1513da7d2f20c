"""The one estimator base: what every estimator does around the search loop.

``BilevelClassifier`` / ``BilevelRegressor`` (and experiment files, which build them) and
``MetaLearnerClassifier`` differ in what they search and what they keep; the orchestration around
the search is the same and lives here: the seed, the checkpoint (a resumed search keeps the seed it
began with), one :class:`~automl_bilevel.run.lifecycle.Run` around one
:func:`~automl_bilevel.run.engine.run_search`, the fitted attributes every search has (``trials_``,
``history_``, ``stop_reason_``, ``interrupted_``, ``run_info_``, ``mlflow_run_id_``), the end of the run,
and Ctrl-C: the estimator keeps the best found so far, the run ends as KILLED, and
``KeyboardInterrupt`` is raised again.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from ConfigSpace import ConfigurationSpace
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from automl_bilevel.core.events import RunContext
from automl_bilevel.core.problem import Problem
from automl_bilevel.core.trials import history_table
from automl_bilevel.plugin.registry import Registry
from automl_bilevel.plugin.specs import Component
from automl_bilevel.run.checkpoint import Checkpoint
from automl_bilevel.run.engine import SearchResult, run_search
from automl_bilevel.run.lifecycle import Run

#: what the subclass's ``conclude`` returns: keyword arguments of :meth:`Run.finish` (``best``, ``artifacts``)
Conclusion = Mapping[str, Any]


class SearchEstimator(BaseEstimator):  # type: ignore[misc]  # scikit-learn ships no type information
    """Base of the package's estimators: one search through the loop, tracked as one run.

    Subclasses keep scikit-learn's contract (``__init__`` stores its arguments; validation in
    ``fit``) and call :meth:`_seed`, :meth:`_open_checkpoint` and :meth:`_search` from ``fit``. They
    have the settings ``random_state``, ``checkpoint``, ``timeout`` and ``dask_address``.
    """

    random_state: Any
    checkpoint: str | os.PathLike[str] | None
    timeout: float | None
    dask_address: str | None

    def _seed(self) -> int:
        """The run's seed, drawn from ``random_state``."""
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _open_checkpoint(
        self, fingerprint: Mapping[str, Any], seed: int, space: ConfigurationSpace | None = None
    ) -> tuple[Checkpoint | None, int]:
        """The checkpoint of ``checkpoint=`` (``None`` without one) and the seed to run with: a
        resumed search keeps the seed, and so the split, it began with; its records are checked
        against ``fingerprint`` and ``space``."""
        if self.checkpoint is None:
            return None, seed
        checkpoint = Checkpoint(self.checkpoint, dict(fingerprint))
        seed = checkpoint.open(seed, space) if space is not None else checkpoint.open(seed)
        if space is not None:
            space.seed(seed)
        return checkpoint, seed

    def _search(
        self,
        context: RunContext,
        registry: Registry,
        problem: Problem,
        optimizer: Component,
        *,
        n_iter: int,
        seed: int,
        checkpoint: Checkpoint | None,
        n_workers: int,
        conclude: Callable[[SearchResult, Run], Conclusion],
    ) -> SearchResult:
        """One tracked search of ``problem`` by ``optimizer``; ``conclude(result, run)`` sets the
        subclass's fitted attributes (best configuration, refit) and says how the run ends."""
        with Run(context, registry) as run:
            self.run_info_ = run.info
            self.mlflow_run_id_ = self.run_info_.get("mlflow_run_id")
            result = run_search(
                problem,
                optimizer.obj,
                n_iter=n_iter,
                seed=seed,
                timeout=self.timeout,
                n_workers=n_workers,
                dask_address=self.dask_address,
                checkpoint=checkpoint,
                run=run,
            )
            self.trials_ = tuple(result.trials)
            self.history_ = history_table(result.trials)
            self.stop_reason_ = result.stop_reason
            self.interrupted_ = result.status == "KILLED"
            ending = conclude(result, run)
            run.model = self
            run.finish(result.status, **ending)
        if self.interrupted_:
            warnings.warn(
                f"search interrupted after {len(result.trials)} trials; kept the best so far",
                RuntimeWarning,
                stacklevel=3,
            )
            raise KeyboardInterrupt
        return result
