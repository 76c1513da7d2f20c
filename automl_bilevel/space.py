"""Search spaces: one description, compiled to ConfigSpace (SMAC, random search) and to flat
vectors (evolution strategies).

A search space is a ``ConfigSpace.ConfigurationSpace`` or a dict mapping names to:

- ``(low, high)``: uniform float (or integer, if both bounds are ints);
- ``(low, high, "log")``: the same on a log scale;
- ``{"low": .., "high": .., "log": bool, "default": .., "type": "int"|"float"}`` (TOML-friendly);
- a list: categorical choices;
- a scalar (or string): a constant;
- a ConfigSpace hyperparameter object.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from ConfigSpace import (
    Categorical,
    Configuration,
    ConfigurationSpace,
    Constant,
    Float,
    Integer,
)
from ConfigSpace.hyperparameters import Hyperparameter


class InvalidSearchSpaceError(ValueError):
    """A search space entry is malformed (bad bounds, unknown name, ...)."""


def _bounded(name: str, low: Any, high: Any, log: bool, default: Any = None, kind: str | None = None):
    for b in (low, high):
        if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)):
            raise InvalidSearchSpaceError(f"{name!r}: bounds must be numbers, got {low!r}, {high!r}")
        if not math.isfinite(float(b)):
            raise InvalidSearchSpaceError(f"{name!r}: bounds must be finite, got {low!r}, {high!r}")
    if not low < high:
        raise InvalidSearchSpaceError(f"{name!r}: lower bound {low!r} must be below upper bound {high!r}")
    if log and low <= 0:
        raise InvalidSearchSpaceError(f"{name!r}: a log-scale range needs a positive lower bound, got {low!r}")
    is_int = kind == "int" or (kind is None and all(isinstance(b, (int, np.integer)) for b in (low, high)))
    if default is not None and not low <= default <= high:
        raise InvalidSearchSpaceError(f"{name!r}: default {default!r} lies outside [{low!r}, {high!r}]")
    if is_int:
        return Integer(name, (int(low), int(high)), log=log, default=None if default is None else int(default))
    return Float(name, (float(low), float(high)), log=log, default=None if default is None else float(default))


def _hyperparameter(name: str, value: Any) -> Hyperparameter:
    if isinstance(value, Hyperparameter):
        if value.name != name:
            raise InvalidSearchSpaceError(f"key {name!r} holds hyperparameter named {value.name!r}")
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - {"low", "high", "log", "default", "type", "choices"}
        if unknown:
            raise InvalidSearchSpaceError(f"{name!r}: unknown keys {sorted(unknown)}")
        if "choices" in value:
            return _hyperparameter(name, list(value["choices"]))
        if "low" not in value or "high" not in value:
            raise InvalidSearchSpaceError(f"{name!r}: a range needs 'low' and 'high'")
        return _bounded(name, value["low"], value["high"], bool(value.get("log", False)),
                        value.get("default"), value.get("type"))
    if isinstance(value, tuple):
        if len(value) == 2:
            return _bounded(name, value[0], value[1], False)
        if len(value) == 3 and value[2] in ("log", "linear"):
            return _bounded(name, value[0], value[1], value[2] == "log")
        raise InvalidSearchSpaceError(f"{name!r}: a range is (low, high) or (low, high, 'log'), got {value!r}")
    if isinstance(value, list):
        if not value:
            raise InvalidSearchSpaceError(f"{name!r}: a categorical needs at least one choice")
        if len(set(map(repr, value))) != len(value):
            raise InvalidSearchSpaceError(f"{name!r}: duplicate categorical choices {value!r}")
        return Categorical(name, value)
    if isinstance(value, (bool, int, float, str)):
        return Constant(name, value)
    raise InvalidSearchSpaceError(f"{name!r}: cannot turn {type(value).__name__} {value!r} into a hyperparameter")


def as_configspace(space: ConfigurationSpace | Mapping[str, Any] | None, seed: int | None = None) -> ConfigurationSpace:
    """Compile a user-given search space to a (seeded) ConfigurationSpace."""
    if space is None:
        return ConfigurationSpace(seed=seed)
    if isinstance(space, ConfigurationSpace):
        out = ConfigurationSpace(seed=seed)
        out.add(list(space.values()))
        out.add(list(space.conditions))
        out.add(list(space.forbidden_clauses))
        return out
    if not isinstance(space, Mapping):
        raise InvalidSearchSpaceError(
            f"search_space must be a ConfigurationSpace or a dict, got {type(space).__name__}"
        )
    out = ConfigurationSpace(seed=seed)
    for name, value in space.items():
        if not isinstance(name, str) or not name:
            raise InvalidSearchSpaceError(f"search space names must be non-empty strings, got {name!r}")
        out.add(_hyperparameter(name, value))
    return out


def check_names(space: ConfigurationSpace, allowed: set[str] | None, owner: str) -> None:
    if allowed is None:
        return
    unknown = sorted(set(space.keys()) - allowed)
    if unknown:
        raise InvalidSearchSpaceError(
            f"{owner} has no hyperparameter(s) {unknown}; it accepts: {sorted(allowed)}"
        )


def to_python(value: Any) -> Any:
    """numpy scalars to plain Python values (JSON, MLflow params, set_params)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def config_dict(config: Configuration | Mapping[str, Any]) -> dict[str, Any]:
    return {k: to_python(v) for k, v in dict(config).items()}


def describe(space: ConfigurationSpace) -> dict[str, Any]:
    """A JSON-serialisable description of a space (for tracking and the CLI)."""
    return space.to_serialized_dict()


def default_config(space: ConfigurationSpace) -> dict[str, Any]:
    return config_dict(space.get_default_configuration())
