"""One run lifecycle for every estimator, recipe and CLI run.

``Run`` is a context manager around one tracked run: it asks every plugin for a listener (an
unreachable tracking store fails here, before any work), sends RunStarted, runs searches through the
one loop (:func:`automl_bilevel.run.engine.run_search`) on the chosen executor, and guarantees exactly one
RunFinished with a terminal status: FINISHED (or what :meth:`Run.finish` says), KILLED when the block
ends with KeyboardInterrupt (Ctrl-C, or SIGTERM in the CLI), FAILED with the error otherwise. The
trials found so far and the model set on the run go with it::

    with Run(context) as run:
        result = run.search(problem, optimizer, n_iter=50, seed=0, checkpoint=checkpoint)
        run.model = refit(result.best)
        run.finish(result.status, artifacts=...)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from automl_bilevel.core.components import LearnedComponent, OuterOptimizer
from automl_bilevel.core.events import RunContext
from automl_bilevel.core.trials import Trial
from automl_bilevel.run.checkpoint import Checkpoint
from automl_bilevel.run.engine import RunSession, SearchResult, run_search
from automl_bilevel.run.parallel import make_executor

if TYPE_CHECKING:  # pragma: no cover
    from automl_bilevel.plugin.registry import Registry


class Run:
    def __init__(self, context: RunContext, registry: Registry | None = None) -> None:
        if registry is None:
            from automl_bilevel.plugin.registry import get_registry

            registry = get_registry()
        self.context = context
        self.session = RunSession(registry.run_listeners(context))  # an unusable store fails here
        self.info: dict[str, Any] = self.session.info
        self.trials: list[Trial] = []
        self.model: Any = None
        self._t0 = time.perf_counter()

    def __enter__(self) -> Run:
        self._t0 = time.perf_counter()
        self.session.start(self.context)
        return self

    def search(
        self,
        problem: Any,
        optimizer: OuterOptimizer,
        *,
        n_iter: int,
        seed: int,
        timeout: float | None = None,
        n_workers: int = 1,
        dask_address: str | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> SearchResult:
        """One search through the loop, its trials and steps sent to this run's listeners."""
        with make_executor(n_workers, dask_address) as executor:
            result = run_search(
                problem,
                optimizer,
                n_iter=n_iter,
                seed=seed,
                session=self.session,
                timeout=timeout,
                executor=executor,
                checkpoint=checkpoint,
            )
        self.trials = list(result.trials)
        return result

    @property
    def finished(self) -> bool:
        return self.session.finished

    def finish(
        self,
        status: str = "FINISHED",
        *,
        artifacts: Mapping[str, LearnedComponent] | None = None,
        error: str | None = None,
        best: Trial | None = None,
    ) -> None:
        """End the run (once) with ``status``, its trials, ``self.model`` and ``artifacts``."""
        self.session.finish(
            status,
            self.trials,
            time.perf_counter() - self._t0,
            model=self.model,
            error=error,
            artifacts=artifacts,
            best=best,
        )

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc is None:
            self.finish()
        elif isinstance(exc, KeyboardInterrupt):
            self.finish(status="KILLED")
        else:
            self.model = None
            self.finish(status="FAILED", error=f"{type(exc).__name__}: {exc}")
        return False


def search(
    problem: Any,
    optimizer: OuterOptimizer,
    *,
    n_iter: int,
    seed: int,
    run: Run | None = None,
    timeout: float | None = None,
    checkpoint: Checkpoint | None = None,
) -> SearchResult:
    """One search through the loop, tracked when ``run`` is given (what the recipes call)."""
    if run is not None:
        return run.search(problem, optimizer, n_iter=n_iter, seed=seed, timeout=timeout, checkpoint=checkpoint)
    return run_search(problem, optimizer, n_iter=n_iter, seed=seed, timeout=timeout, checkpoint=checkpoint)
