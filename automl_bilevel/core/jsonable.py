"""The one converter of values to plain data (JSON, MLflow params, checkpoints, events).

numpy and torch scalars become Python numbers, arrays and tensors nested lists, mappings dicts with
string keys, tuples and sets lists; ``None``, bools, numbers and strings stay as they are; anything
else is its ``repr`` (an estimator given as a setting, a callable). Non-finite floats are kept:
JSON readers of this package accept them, and callers that must not (MLflow metrics) filter them.

The tracking plugin's writer process keeps a standard-library copy of this rule
(``automl_bilevel_plugins.tracking.mlflow.store``): it must start without numpy or the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def python_scalar(value: Any) -> Any:
    """A numpy scalar as the Python number or string it holds; any other value unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def jsonable(value: Any) -> Any:
    """``value`` as plain data: only dicts, lists, strings, numbers, bools and ``None``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if type(value).__module__ == "torch" and hasattr(value, "tolist"):  # a tensor, without importing torch
        return value.detach().cpu().tolist()
    return repr(value)
