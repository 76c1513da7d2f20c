"""Bookkeeping that a Ctrl-C or SIGTERM must not cut in half.

A finished trial is told to the optimizer, added to the result, sent to the listeners (tracking) and
appended to the checkpoint journal. An interrupt between two of these steps left a trial tracked but
not journaled, so a resume ran it again and tracked it twice. :func:`deferred` holds SIGINT and
SIGTERM while such a block runs and delivers them, to the handlers that were installed (Python's
KeyboardInterrupt, the CLI's SIGTERM handler), as soon as it ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["deferred"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM (those with a Python handler) until the block ends, then deliver them.

    Outside the main thread (where Python delivers no signal) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        pending.append((signum, frame))

    previous: dict[int, Callable[[int, FrameType | None], Any]] = {}
    for signum in _SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler):  # SIG_DFL / SIG_IGN / a C handler are left alone
            previous[signum] = handler
            signal.signal(signum, hold)
    try:
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
        for number, frame in pending:  # the first handler that raises ends the delivery
            previous[number](number, frame)
