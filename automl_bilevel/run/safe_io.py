"""Files the package writes and reads back (checkpoint journal, outer state), written and read safely.

- Reading never runs code: the outer state is plain data (see :func:`check_plain`) saved with
  ``torch.save`` and read with ``torch.load(weights_only=True)``, whose unpickler refuses any global
  that is not a tensor or a builtin container; a planted pickle is refused with its path.
- Writing never follows a planted symlink: whole files go through a temporary file made with
  :func:`tempfile.mkstemp` (``O_EXCL``, a fresh random name) in the same folder, then
  :func:`os.replace`; appends open with ``O_NOFOLLOW``; a symlink at the target path is refused.
- A write that fails (full disk, read-only folder) raises :class:`CheckpointWriteError` naming the path.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

_SCALARS = (type(None), bool, int, float, str)


class CheckpointWriteError(OSError):
    """A checkpoint file could not be written; the message names the path and the reason."""

    def __init__(self, errno_: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_

    def __str__(self) -> str:
        return str(self.args[0])


class UnsafeCheckpointError(ValueError):
    """A checkpoint file is not plain data, or its path is a symlink: refused, nothing was run."""


def expand(path: str | os.PathLike[str]) -> Path:
    """``path`` with ``~`` expanded (``checkpoint="~/x.jsonl"`` is in the home folder, not ``./~``)."""
    return Path(os.path.expanduser(os.fspath(path)))


def check_plain(obj: Any, where: str = "state") -> None:
    """Raise :class:`TypeError` naming the first entry of ``obj`` that is not plain data.

    Plain data: ``None``, ``bool``, ``int``, ``float``, ``str``, ``torch.Tensor``, and lists, tuples
    and dicts (with ``str`` or ``int`` keys) of plain data. This is the contract of every
    ``OuterOptimizer.state_dict``: what can be read back without running code."""
    if isinstance(obj, _SCALARS) or isinstance(obj, torch.Tensor):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}; keys must be str or int")
            check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, not plain data "
        "(None, bool, int, float, str, torch.Tensor, and lists, tuples and dicts of them)"
    )


def _refuse_symlink(path: Path) -> None:
    if path.is_symlink():
        raise UnsafeCheckpointError(
            f"{path} is a symbolic link; a checkpoint file is never written through a link "
            "(give the real path, or remove the link)"
        )


def _write_error(path: Path, exc: OSError) -> CheckpointWriteError:
    reason = exc.strerror or str(exc)
    hint = " (the disk is full)" if exc.errno == errno.ENOSPC else ""
    return CheckpointWriteError(exc.errno or 0, f"cannot write checkpoint file {path}: {reason}{hint}")


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data``: a fresh temporary file in the same folder (``mkstemp``: never an
    existing name, never a link), flushed to disk, then renamed over ``path``."""
    _refuse_symlink(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _write_error(path, exc) from None


def append(path: Path, data: bytes) -> None:
    """Append ``data`` with one ``os.write`` to ``path``, never through a symlink (``O_NOFOLLOW``)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _refuse_symlink(path)
        raise _write_error(path, exc) from None
    try:
        n = os.write(fd, data)
        if n != len(data):
            raise OSError(errno.ENOSPC, "short write")
    except OSError as exc:
        raise _write_error(path, exc) from None
    finally:
        os.close(fd)


def check_writable(path: Path) -> None:
    """Fail now (naming the path) if a file cannot be created next to ``path``: a read-only or
    missing folder is found when the checkpoint is opened, not after the first trial."""
    _refuse_symlink(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise CheckpointWriteError(
            exc.errno or 0, f"cannot write checkpoint file {path}: {exc.strerror or exc}"
        ) from None


def save_plain(path: Path, obj: Mapping[str, Any]) -> None:
    """Write ``obj`` (checked to be plain data) with ``torch.save``, atomically and symlink-safe."""
    check_plain(dict(obj), "outer state")
    buf = io.BytesIO()
    torch.save(dict(obj), buf)
    atomic_write(path, buf.getvalue())


def load_plain(path: Path) -> Any:
    """Read what :func:`save_plain` wrote with ``torch.load(weights_only=True)``: anything else (a
    pickle that would run code, a damaged file) is refused naming ``path``; no code is run."""
    _refuse_symlink(path)
    try:
        with path.open("rb") as fh:
            obj = torch.load(fh, map_location="cpu", weights_only=True)
        check_plain(obj, str(path))
    except Exception as exc:
        raise UnsafeCheckpointError(
            f"{path} is not a readable outer-state file: not plain data, refused without running it "
            f"({type(exc).__name__}); delete the checkpoint and its .state file to start afresh"
        ) from None
    return obj


def numpy_to_plain(obj: Any) -> Any:
    """``obj`` with numpy arrays as tensors and numpy scalars as Python numbers (for a ``state_dict``
    that holds numpy values); :func:`plain_to_numpy` undoes it."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: numpy_to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(numpy_to_plain(v) for v in obj)
    return obj


def plain_to_numpy(obj: Any) -> Any:
    """``obj`` with tensors as numpy arrays (the inverse of :func:`numpy_to_plain`)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: plain_to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain_to_numpy(v) for v in obj)
    return obj
