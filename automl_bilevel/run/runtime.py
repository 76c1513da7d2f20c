"""Where torch computes: how many intra-op threads (the thread policy) and on which device.

Threads
-------
torch's intra-op threads (OpenMP) spin while they wait. Two of them per core, or one core shared
with any other busy process (another trial, a Dask worker, a test suite), collapse throughput: the
embedded default job went from 12 s to more than 300 s with one busy neighbour on two cores. Small
models gain nothing from more threads anyway. :func:`thread_policy` therefore decides the thread
count from the work and the number of evaluations running at once:

- one thread per evaluation whenever several run at once (``concurrent > 1``);
- one thread for small work (fewer than :data:`WORK_PER_THREAD` numbers per evaluation, e.g. the
  training data's ``n_samples * n_features``); above that, one thread per ``WORK_PER_THREAD``,
  at most the cores this process may use and at most the caller's own setting;
- what the user asked for wins: ``threads=`` given to the policy, an enclosing :func:`threads`
  block, or the environment variable ``AUTOML_BILEVEL_THREADS``, in that order.

torch's setting, and the BLAS/OpenMP pools that threadpoolctl controls (when it is installed; it
comes with scikit-learn), are restored on exit, whatever happened inside.

Devices
-------
:func:`resolve_device` turns ``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"`` (or a ``torch.device``)
into a ``torch.device``, with a clear error for a malformed or unavailable device before any work.
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from automl_bilevel.core.problem import BilevelProblem, Problem

if TYPE_CHECKING:  # torch is imported where it is used: a process that never trains never loads it
    import torch

__all__ = [
    "THREADS_ENV",
    "WORK_PER_THREAD",
    "available_cores",
    "choose_threads",
    "problem_work",
    "resolve_device",
    "thread_policy",
    "threads",
]

#: environment variable with the user's thread count for every search (an integer >= 1)
THREADS_ENV = "AUTOML_BILEVEL_THREADS"

#: numbers of work per extra thread: below it one thread is faster than several
WORK_PER_THREAD = 1 << 22

_user_threads: contextvars.ContextVar[int | None] = contextvars.ContextVar("automl_bilevel_threads", default=None)


def _check_count(n: Any, what: str) -> int:
    if isinstance(n, str) and n.strip().isdigit():
        n = int(n.strip())
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {n!r}")
    return int(n)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return max(os.cpu_count() or 1, 1)


def _env_threads() -> int | None:
    raw = os.environ.get(THREADS_ENV)
    if raw is None or raw.strip() == "":
        return None
    return _check_count(raw.strip(), f"environment variable {THREADS_ENV}")


def choose_threads(*, concurrent: int = 1, work: float | None = None, threads: int | None = None) -> int:
    """The intra-op thread count :func:`thread_policy` would set (see the module docstring)."""
    import torch

    concurrent = _check_count(concurrent, "concurrent")
    if work is not None and (isinstance(work, bool) or not isinstance(work, numbers.Real) or not work >= 0):
        raise ValueError(f"work must be a number >= 0 (numbers per evaluation), got {work!r}")
    if threads is not None:
        return _check_count(threads, "threads")
    user = _user_threads.get()
    if user is not None:
        return user
    env = _env_threads()
    if env is not None:
        return env
    if concurrent > 1 or work is None or work < WORK_PER_THREAD:
        return 1
    return max(1, min(int(work // WORK_PER_THREAD), available_cores() // concurrent, torch.get_num_threads()))


@contextlib.contextmanager
def _set_threads(n: int) -> Iterator[int]:
    import torch

    previous = torch.get_num_threads()
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            pass
        else:
            stack.enter_context(threadpool_limits(limits=n))
        torch.set_num_threads(n)
        try:
            yield n
        finally:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def threads(n: int) -> Iterator[int]:
    """Run the block with ``n`` intra-op threads (torch and BLAS), the caller's setting restored
    after. Searches started inside use ``n`` too (it overrides the policy's own choice)::

        with threads(4):
            BilevelClassifier(...).fit(X, y)
    """
    n = _check_count(n, "threads")
    token = _user_threads.set(n)
    try:
        with _set_threads(n):
            yield n
    finally:
        _user_threads.reset(token)


@contextlib.contextmanager
def thread_policy(*, concurrent: int = 1, work: float | None = None, threads: int | None = None) -> Iterator[int]:
    """Run the block with the thread count :func:`choose_threads` picks; yields that count.

    ``concurrent``: evaluations running at once in this process or on these cores; ``work``: numbers
    per evaluation (``None``: unknown, treated as small); ``threads``: the user's explicit choice.
    """
    n = choose_threads(concurrent=concurrent, work=work, threads=threads)
    with _set_threads(n):
        yield n


def problem_work(problem: Problem) -> float | None:
    """The work of one evaluation of a bilevel problem: the largest training set's
    ``n_samples * n_features`` (``None`` for other problems, which have no arrays to measure)."""
    if not isinstance(problem, BilevelProblem) or not problem.splits:
        return None
    return float(max(int(np.asarray(split.X_train).size) for split in problem.splits))


# -- devices ------------------------------------------------------------------------------------

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: Any = "auto") -> torch.device:
    """``"auto"`` (the first CUDA device, else MPS, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
    ``"mps"`` or a ``torch.device``, as a ``torch.device``; a malformed or unavailable device is a
    ``ValueError`` that says what this machine has."""
    import torch

    if isinstance(device, torch.device):
        spec = device.type if device.type in ("cpu", "mps") else str(device)
    elif isinstance(device, str):
        spec = device.strip().lower()
    else:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device, got {device!r}")
    m = _DEVICE_RE.match(spec)
    if m is None or (m.group(2) is not None and m.group(1) not in ("cuda",)):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    kind, index = m.group(1), m.group(2)
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise ValueError(
                f"device {device!r} requested but MPS (Apple GPU) is not available here; use device='cpu' or 'auto'"
            )
        return torch.device("mps")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise ValueError(f"device {device!r} requested but CUDA is not available ({why}); use device='cpu' or 'auto'")
    n = torch.cuda.device_count()
    i = torch.cuda.current_device() if index is None else int(index)
    if i >= n:
        raise ValueError(f"device {device!r} requested but only {n} CUDA device(s) exist (cuda:0..cuda:{n - 1})")
    return torch.device("cuda", i)
