"""Declarative validation of settings: one table per component, checked before any work.

As scikit-learn's ``_parameter_constraints`` (whose constraint objects are reused here): a table maps
each setting to the constraints it may satisfy (any one of them), e.g.::

    _parameter_constraints = {
        "inner_steps": [Interval(Integral, 1, None, closed="left"), None],
        "mode": [StrOptions({"reverse", "forward"})],
        "use_priors": ["boolean"],
    }

:func:`validate_params` raises :class:`ValueError` naming the setting, what it must be and what it got:
``inner_steps must be an int in the range [1, inf) or None, got 0 (HypergradientOptimizer)``. Strings
are not numbers (``'0.5'`` is refused, not converted), ``inf`` and ``nan`` are outside every interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval, Options, StrOptions, make_constraint

__all__ = [
    "POSITIVE",
    "Integral",
    "Interval",
    "Options",
    "Real",
    "StrOptions",
    "describe_constraint",
    "validate_params",
]

POSITIVE = Interval(Real, 0, None, closed="neither")


def describe_constraint(constraint: Any) -> str:
    """A constraint in words (``one of ('a', 'b')``, ``positive``, ``True or False``, ...)."""
    if constraint is None:
        return "None"
    if isinstance(constraint, StrOptions):
        return f"one of {tuple(sorted(constraint.options))}"
    if isinstance(constraint, Interval):
        if (
            constraint.type is Real
            and constraint.left == 0
            and constraint.right is None
            and constraint.closed == "neither"
        ):
            return "positive (a finite number > 0)"
        return str(constraint)
    if constraint == "boolean":
        return "True or False"
    if isinstance(constraint, type):
        return f"a {constraint.__name__}"
    return str(make_constraint(constraint))


def validate_params(owner: str, constraints: Mapping[str, Sequence[Any]], params: Mapping[str, Any]) -> None:
    """Check each of ``params`` against its entry of ``constraints`` (a setting passes when it
    satisfies any one of them); a :class:`ValueError` names the first one that does not."""
    for name, value in params.items():
        allowed = constraints.get(name)
        if allowed is None:
            continue
        takes_bool = any(isinstance(c, str) and c == "boolean" or c is bool for c in allowed)
        if (takes_bool or not isinstance(value, (bool, np.bool_))) and any(
            make_constraint(c).is_satisfied_by(value) for c in allowed
        ):
            continue  # (True is an int to Python, not a number of steps here)
        described = " or ".join(describe_constraint(c) for c in allowed)
        raise ValueError(f"{name} must be {described}, got {value!r} ({owner})")
