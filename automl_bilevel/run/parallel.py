"""Where evaluations run: in this process, one at a time, or in parallel on Dask distributed.

The search loop (:func:`automl_bilevel.run.engine.run_search`) keeps up to ``executor.slots``
proposals in flight: it submits proposals and takes back finished ones in completion order, so a
slow trial never holds a free worker idle. ``ask`` and ``tell`` always run in this process; only
the evaluation of a proposal travels.

With Dask, the problem (learner, objective, data) is scattered to every worker once; each
proposal ships only its configuration. A worker that dies (killed, out of memory) or a result that
cannot come back is recorded as a failed trial with the reason, and the search goes on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import sys
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from automl_bilevel.core.trials import Evaluation

if TYPE_CHECKING:  # pragma: no cover
    from automl_bilevel.core.components import OuterOptimizer, Proposal
    from automl_bilevel.core.problem import Problem

log = logging.getLogger("automl_bilevel")

EvaluateFn = Callable[["Problem", "Proposal"], Evaluation]


@dataclass(frozen=True)
class Outcome:
    """The result of evaluating one proposal: an evaluation or an error, and how long it took."""

    evaluation: Evaluation | None
    error: str | None
    duration: float


def evaluate_safely(evaluate: EvaluateFn, problem: Problem, proposal: Proposal) -> Outcome:
    """Run one evaluation; any exception (or a non-finite value) becomes an error outcome."""
    t0 = time.perf_counter()
    try:
        ev = evaluate(problem, proposal)
        if not isinstance(ev, Evaluation):
            raise TypeError(f"evaluate returned {type(ev).__name__}, not Evaluation")
        if not math.isfinite(ev.value):
            raise FloatingPointError(f"objective is {ev.value}")
        return Outcome(ev, None, time.perf_counter() - t0)
    except Exception as exc:
        log.debug("trial failed:\n%s", traceback.format_exc())
        return Outcome(None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)


def evaluate_problem(problem: Problem, proposal: Proposal) -> Evaluation:
    """The default evaluation: fit the learner with the proposal's config and budget, score it."""
    from automl_bilevel.core.problem import SearchProblem

    if not isinstance(problem, SearchProblem):
        raise TypeError(f"the default evaluation needs a SearchProblem, got {type(problem).__name__}")
    return problem.evaluate(proposal.config, budget=proposal.budget)


class Executor(ABC):
    """Runs evaluations. ``slots`` is how many may be in flight at once."""

    slots: int = 1

    def start(self, optimizer: OuterOptimizer[Any], problem: Problem) -> None:
        """Bind the executor to the search's ``optimizer`` and ``problem`` before the first ``submit``."""
        self.optimizer, self.problem = optimizer, problem

    @abstractmethod
    def submit(self, proposal: Proposal) -> None:
        """Start evaluating ``proposal`` (returns at once; :meth:`next_done` gives the outcome)."""

    @abstractmethod
    def next_done(self) -> tuple[Proposal, Outcome]:
        """Block until one submitted proposal is done; return it with its outcome."""

    def cancel(self) -> None:  # noqa: B027 - optional hook, nothing in flight by default
        """Drop whatever is still in flight (after an interrupt or a timeout)."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release resources this executor created."""

    def __enter__(self) -> Self:
        """The executor itself; leaving the ``with`` block calls :meth:`close`."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the executor (:meth:`close`)."""
        self.close()


class SequentialExecutor(Executor):
    """In this process, one proposal at a time, through ``optimizer.evaluate``."""

    slots = 1

    def __init__(self) -> None:
        self._queue: deque[Proposal] = deque()

    def submit(self, proposal: Proposal) -> None:
        """Queue ``proposal``; it is evaluated when :meth:`next_done` takes it."""
        self._queue.append(proposal)

    def next_done(self) -> tuple[Proposal, Outcome]:
        """Evaluate the oldest queued proposal here, through ``optimizer.evaluate``, and return its outcome."""
        proposal = self._queue.popleft()
        return proposal, evaluate_safely(self.optimizer.evaluate, self.problem, proposal)

    def cancel(self) -> None:
        """Drop the queued proposals."""
        self._queue.clear()


def _limit_threads() -> None:
    """One compute thread per worker process: the workers share the machine's cores."""
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _remote(evaluate: EvaluateFn, problem: Problem, proposal: Proposal) -> Outcome:
    _limit_threads()
    return evaluate_safely(evaluate, problem, proposal)


MAX_RESUBMITS = 3
ADDRESS_TIMEOUT = 5.0  # seconds to reach a dask_address before giving up (before any run exists)


def check_address(address: str, timeout: float = ADDRESS_TIMEOUT) -> None:
    """Fail fast, before any work, when a Dask scheduler address is malformed or nothing answers there."""
    from urllib.parse import urlsplit

    if not isinstance(address, str) or "://" not in address:
        raise ValueError(f"dask_address must look like 'tcp://host:8786', got {address!r}")
    parts = urlsplit(address)
    if parts.scheme not in ("tcp", "tls", "ws", "wss") or not parts.hostname:
        raise ValueError(f"dask_address must look like 'tcp://host:8786', got {address!r}")
    try:
        port = parts.port or 8786
    except ValueError:
        raise ValueError(f"dask_address {address!r} has an invalid port") from None
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ConnectionError(
            f"no Dask scheduler answers at {address} ({exc.strerror or type(exc).__name__}); "
            "start one (dask scheduler) or leave dask_address unset for a local cluster"
        ) from None


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Let spawned worker processes start without re-running the caller's script.

    Dask starts workers with the ``spawn`` method, which imports the main module again in each new
    process: a script without an ``if __name__ == "__main__":`` guard would run its fit again there
    and the workers fail to start ("Nanny failed to start"). As loky does for scikit-learn's
    ``n_jobs``, the main module is hidden from ``multiprocessing`` while our workers live; what the
    workers need from it travels by value (cloudpickle).
    """
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if main is not None and hasattr(main, k)}
    try:
        if main is not None:
            for k in saved:
                if k == "__spec__":
                    main.__spec__ = None
                else:
                    delattr(main, k)
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


class DaskExecutor(Executor):
    """Evaluations on Dask distributed.

    - ``client``: an existing ``distributed.Client`` (never closed here);
    - else ``address``: connect to that scheduler (the connection is closed at the end);
    - else a ``LocalCluster`` of ``n_workers`` single-threaded worker processes, closed at the end.

    ``n_workers`` is also the number of proposals kept in flight (for a given client or address,
    the default is the number of worker threads the scheduler has).
    """

    def __init__(
        self, n_workers: int | None = None, *, address: str | None = None, client: Any = None, allowed_failures: int = 0
    ) -> None:
        from distributed import Client, LocalCluster

        if n_workers is not None and int(n_workers) < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        self._own_client = client is None
        self._cluster: Any = None
        self._hide_main = contextlib.ExitStack()
        if client is None and address is None:
            import dask

            # worker processes are started now and restarted later if one dies: hide the main
            # module for the whole life of the cluster
            self._hide_main.enter_context(_main_not_reimported())
            # the scheduler lives in this process: a task whose worker died is not retried. No
            # dashboard; its HTTP endpoints on a free local port, not on 8787.
            try:
                with dask.config.set({"distributed.scheduler.allowed-failures": int(allowed_failures)}):
                    self._cluster = LocalCluster(  # type: ignore[no-untyped-call]  # distributed is untyped
                        n_workers=int(n_workers or 2),
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                        silence_logs=logging.ERROR,
                        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                    )
            except BaseException:
                self._hide_main.close()
                raise
            client = Client(self._cluster, set_as_default=False)  # type: ignore[no-untyped-call]  # untyped
        elif client is None:
            client = Client(address, set_as_default=False, timeout="20s")  # type: ignore[no-untyped-call]  # untyped
        self.client = client
        threads = sum(client.nthreads().values()) or 1
        self.slots = int(n_workers) if n_workers else threads
        self._in_flight: dict[str, tuple[Proposal, float, Any]] = {}
        self._resubmits: dict[int, int] = {}

    def start(self, optimizer: OuterOptimizer[Any], problem: Problem) -> None:
        """Bind the optimizer and problem: take the optimizer's remote evaluator and scatter the problem to
        every worker once."""
        super().start(optimizer, problem)
        self._evaluate = remote_evaluator(optimizer)
        [self._problem] = self.client.scatter([problem], broadcast=True, hash=False)

    def submit(self, proposal: Proposal) -> None:
        """Send ``proposal`` to a worker, to be evaluated against the scattered problem."""
        fut = self.client.submit(_remote, self._evaluate, self._problem, proposal, pure=False)
        self._in_flight[fut.key] = (proposal, time.perf_counter(), fut)

    def next_done(self) -> tuple[Proposal, Outcome]:
        """Block until an evaluation is done and return its proposal and outcome. A worker that died, or a
        result that could not come back, gives a failed outcome; proposals Dask cancelled because a worker
        died are resubmitted."""
        from distributed import wait

        while True:
            futures = [f for _, _, f in self._in_flight.values()]
            try:
                with self.client.as_current():
                    done, _ = wait(futures, return_when="FIRST_COMPLETED")  # type: ignore[no-untyped-call]  # untyped
            except Exception:  # FuturesCancelledError: see _resubmit_cancelled
                if not any(f.cancelled() for f in futures):
                    raise
                failed = self._resubmit_cancelled()
                if failed is not None:
                    return failed
                continue
            break
        # the earliest submitted among those done, so the order is stable
        fut = min(done, key=lambda f: self._in_flight[f.key][1])
        proposal, t0, _ = self._in_flight.pop(fut.key)
        self._resubmits.pop(id(proposal), None)
        try:
            outcome = fut.result()
        except Exception as exc:  # the worker died, or the result could not be sent back
            outcome = Outcome(None, f"{type(exc).__name__} on a Dask worker: {exc}", time.perf_counter() - t0)
        return proposal, outcome

    def _resubmit_cancelled(self) -> tuple[Proposal, Outcome] | None:
        """A worker that dies takes the scattered problem with it when it held the only copy, and
        Dask cancels the evaluations waiting on it ("lost dependencies"). Those proposals did
        nothing wrong: scatter the problem again and resubmit them; a proposal cancelled
        ``MAX_RESUBMITS`` times becomes a failed trial (returned)."""
        cancelled = [(key, entry) for key, entry in self._in_flight.items() if entry[2].cancelled()]
        [self._problem] = self.client.scatter([self.problem], broadcast=True, hash=False)
        for key, (proposal, t0, _) in cancelled:
            del self._in_flight[key]
            tries = self._resubmits.pop(id(proposal), 0) + 1
            if tries > MAX_RESUBMITS:
                return proposal, Outcome(
                    None,
                    f"cancelled on Dask {tries} times (lost dependencies: workers keep dying)",
                    time.perf_counter() - t0,
                )
            self._resubmits[id(proposal)] = tries
            self.submit(proposal)
        return None

    def cancel(self) -> None:
        """Cancel every evaluation still in flight."""
        futures = [f for _, _, f in self._in_flight.values()]
        self._in_flight.clear()
        if futures:
            self.client.cancel(futures)

    def close(self) -> None:
        """Cancel what is in flight and close the client and cluster this executor created (never a given client)."""
        try:
            self.cancel()
            if self._own_client:
                self.client.close()
                if self._cluster is not None:
                    self._cluster.close()
        finally:
            self._hide_main.close()


def remote_evaluator(optimizer: OuterOptimizer[Any]) -> EvaluateFn:
    """The picklable evaluation function for ``optimizer`` on another process."""
    from automl_bilevel.core.components import OuterOptimizer

    custom = optimizer.remote_evaluator()
    if custom is not None:
        return custom
    if type(optimizer).evaluate is not OuterOptimizer.evaluate:
        raise TypeError(
            f"{type(optimizer).__name__} overrides evaluate(), which uses its own state; it cannot run on Dask "
            "workers unless it defines remote_evaluator()"
        )
    return evaluate_problem


def make_executor(n_workers: int = 1, address: str | None = None, client: Any = None) -> Executor:
    """Sequential for one worker and no cluster; Dask otherwise."""
    if client is None and address is None and int(n_workers) <= 1:
        return SequentialExecutor()
    return DaskExecutor(
        None if (address or client) and n_workers in (None, 1) else n_workers, address=address, client=client
    )
