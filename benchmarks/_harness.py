"""Shared benchmark harness: isolated measurements, results files.

Each measurement runs in a forked child process (torch single-threaded, so fork is safe): its
wall time and peak resident-memory increase are measured there, so one method's memory never
shows up in another's. Absolute numbers on shared machines are noisy; compare ratios.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _child(fn, conn, repeats):
    try:
        import torch

        torch.set_num_threads(1)
        # memory: the first call in a fresh child (freed memory stays resident afterwards, so a
        # later call would under-report); VmHWM is reset through clear_refs (Linux >= 4.0)
        try:
            # give freed heap pages inherited from the parent back to the OS, or the child would reuse
            # them without its resident size growing
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            base = _status_kb("VmRSS")
            fn()
            peak_mb = max(0, _status_kb("VmHWM") - base) / 1024
        except OSError:
            peak_mb = None
            fn()
        times, out = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        conn.send({"seconds": min(times), "peak_mb": peak_mb, "result": out})
    except BaseException as exc:  # report, never hang the parent
        conn.send({"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]})
    finally:
        conn.close()


def measure(fn: Callable[[], Any], repeats: int = 1, timeout: float = 600) -> dict[str, Any]:
    """Run ``fn`` in a forked child: peak resident-memory increase (MB) of its first call, then the
    best of ``repeats`` timed calls."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, child, repeats))
    proc.start()
    child.close()
    if not parent.poll(timeout):
        proc.kill()
        return {"error": f"timed out after {timeout}s"}
    res = parent.recv()
    proc.join()
    return res


def machine() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "threads": 1,
    }


def write(name: str, payload: dict[str, Any], table: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    j, m = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    j.write_text(json.dumps(payload, indent=2, default=str))
    m.write_text(table)
    return j, m


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The fastest of ``repeats`` calls of ``fn`` in this process (seconds) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out
