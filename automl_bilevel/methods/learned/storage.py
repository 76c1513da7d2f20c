"""The file format of a saved learned component: ``torch.save`` of its kind, settings and weights."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch


def save_component(
    kind: str, settings: Mapping[str, Any], module: torch.nn.Module, path: str | os.PathLike[str]
) -> None:
    """Saved from any device; :func:`read_component` loads the weights on the CPU."""
    torch.save({"kind": kind, "settings": dict(settings), "state_dict": module.state_dict()}, path)


def read_component(path: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """A file written by :func:`save_component`, checked to hold ``kind``."""
    what = kind.replace("_", " ")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)  # saved on a GPU, loads anywhere
    except FileNotFoundError:
        raise FileNotFoundError(f"no saved {what} at {os.fspath(path)!r}") from None
    if not isinstance(blob, dict) or blob.get("kind", kind) != kind or "state_dict" not in blob:
        raise ValueError(
            f"{os.fspath(path)!r} does not hold a saved {what} "
            f"(found {blob.get('kind') if isinstance(blob, dict) else type(blob).__name__!r})"
        )
    return blob
