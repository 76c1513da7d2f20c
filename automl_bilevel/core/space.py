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
from collections.abc import Mapping
from typing import Any

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

from automl_bilevel.core.jsonable import python_scalar


class InvalidSearchSpaceError(ValueError):
    """A search space entry is malformed (bad bounds, unknown name, ...)."""


def _bounded(
    name: str, low: Any, high: Any, log: bool, default: Any = None, kind: str | None = None
) -> Hyperparameter[Any, Any]:
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


def _hyperparameter(name: str, value: Any) -> Hyperparameter[Any, Any]:
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
        return _bounded(
            name, value["low"], value["high"], bool(value.get("log", False)), value.get("default"), value.get("type")
        )
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
    """Raise ``InvalidSearchSpaceError`` when ``space`` has a hyperparameter outside ``allowed`` (the names
    ``owner`` accepts); ``allowed=None`` accepts anything."""
    if allowed is None:
        return
    unknown = sorted(set(space.keys()) - allowed)
    if unknown:
        raise InvalidSearchSpaceError(f"{owner} has no hyperparameter(s) {unknown}; it accepts: {sorted(allowed)}")


def config_dict(config: Configuration | Mapping[str, Any]) -> dict[str, Any]:
    """A configuration as a dict of plain Python values (numpy scalars converted; arrays kept)."""
    return {k: python_scalar(v) for k, v in dict(config).items()}


def describe(space: ConfigurationSpace) -> dict[str, Any]:
    """A JSON-serialisable description of a space (for tracking and the CLI)."""
    return space.to_serialized_dict()


class UnitCube:
    """A search space as points of [0, 1]^d, for optimizers that work on vectors (evolution
    strategies): one coordinate per non-constant hyperparameter, in ConfigSpace's own normalised
    scale (log ranges are uniform in log space). A categorical or ordinal with k choices takes
    choice ``floor(u * k)``. Inactive hyperparameters of a conditional space are dropped on decode;
    a forbidden combination raises ``ForbiddenValueError``.
    """

    def __init__(self, space: ConfigurationSpace) -> None:
        from ConfigSpace.hyperparameters import CategoricalHyperparameter, OrdinalHyperparameter

        self.space = space
        self.names, self._choices = [], {}
        for hp in space.values():
            if isinstance(hp, Constant):
                continue
            self.names.append(hp.name)
            if isinstance(hp, (CategoricalHyperparameter, OrdinalHyperparameter)):
                self._choices[hp.name] = len(hp.choices) if hasattr(hp, "choices") else len(hp.sequence)

    @property
    def dim(self) -> int:
        """The number of coordinates: one per non-constant hyperparameter."""
        return len(self.names)

    def decode(self, u: np.ndarray) -> dict[str, Any]:
        """The configuration of a point ``u`` of [0, 1]^d (clipped to the cube): constants added, inactive
        hyperparameters dropped. Raises ``ValueError`` for a vector of the wrong length."""
        from ConfigSpace.util import deactivate_inactive_hyperparameters

        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        if u.shape != (self.dim,):
            raise ValueError(f"expected a vector of length {self.dim}, got shape {u.shape}")
        values = {}
        for hp in self.space.values():
            if isinstance(hp, Constant):
                values[hp.name] = hp.value
        for name, x in zip(self.names, u, strict=True):
            hp = self.space[name]
            if name in self._choices:
                k = self._choices[name]
                values[name] = hp.to_value(np.int64(min(int(x * k), k - 1)))
            else:
                values[name] = hp.to_value(np.float64(x))
        cfg = deactivate_inactive_hyperparameters(values, self.space)
        cfg.check_valid_configuration()
        return config_dict(cfg)

    def encode(self, config: Configuration | Mapping[str, Any]) -> np.ndarray:
        """The centre of the cell a configuration decodes from (inactive values: their default)."""
        out = np.empty(self.dim)
        for i, name in enumerate(self.names):
            hp = self.space[name]
            value = (
                config.get(name, hp.default_value)
                if isinstance(config, Mapping)
                else dict(config).get(name, hp.default_value)
            )
            if name in self._choices:
                k = self._choices[name]
                out[i] = (float(hp.to_vector(value)) + 0.5) / k
            else:
                out[i] = float(hp.to_vector(value))
        return np.clip(out, 0.0, 1.0)
