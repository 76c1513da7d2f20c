"""The search's ``timeout`` as a deadline that a running trial checks between batches.

The engine sets the deadline (:func:`deadline_scope`) around the search; long-running code (the
inner training steps of the torch learners and of hypergradients, meta-validation episodes) calls
:func:`check_deadline` between batches, which raises :class:`DeadlineExceeded` once it has passed. The
engine then stops the search with ``stop_reason="timeout"`` and does not record the cut trial (as it
drops a trial still in flight at the timeout). The deadline lives in a context variable: it reaches
code evaluated in this process (the default, sequential executor) and travels to Dask workers with each
evaluation (as the seconds left when it was submitted). Code that never calls it (a scikit-learn
estimator's ``fit``) finishes its trial first.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("automl_bilevel_deadline", default=None)


class DeadlineExceeded(Exception):  # noqa: N818 - the name says what happened, as TimeoutError does
    """The search's ``timeout`` passed while a trial was running."""


@contextlib.contextmanager
def deadline_scope(seconds: float | None) -> Iterator[None]:
    """Within the block, :func:`check_deadline` raises once ``seconds`` have passed (``None``: never)."""
    token = _deadline.set(None if seconds is None else time.monotonic() + float(seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the deadline (negative once passed), or ``None`` without one."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


def check_deadline() -> None:
    """Raise :class:`DeadlineExceeded` if the search's deadline has passed (cheap: call it per batch)."""
    at = _deadline.get()
    if at is not None and time.monotonic() >= at:
        raise DeadlineExceeded("the search's timeout passed while this trial was running")
