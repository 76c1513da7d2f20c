"""The ``random`` outer optimizer: random search over the ConfigSpace.

The baseline every other optimizer is compared with. On a finite space it never proposes a
configuration twice and stops when the space is exhausted. A resumed run (checkpoint) draws the
same sequence again and skips what its earlier run evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from automl_bilevel import (
    BilevelProblem,
    OptimizerSpec,
    OuterOptimizer,
    Proposal,
    Trial,
    as_configspace,
    config_dict,
    hookimpl,
)
from automl_bilevel.core.validation import validate_params


class RandomSearch(OuterOptimizer):
    """Random search; settings checked against ``_parameter_constraints``."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"start_with_default": ["boolean"]}

    def __init__(self, start_with_default: bool = False) -> None:
        validate_params(type(self).__name__, self._parameter_constraints, {"start_with_default": start_with_default})
        self.start_with_default = bool(start_with_default)

    def setup(self, problem: BilevelProblem, seed: int) -> None:
        """Read the space (seeded with ``seed``) and its size; nothing asked or seen yet."""
        super().setup(problem, seed)
        self.space = as_configspace(problem.space, seed=seed)
        self._size = self.space.estimate_size() if len(self.space) else 1
        self._seen: set[tuple[tuple[str, str], ...]] = set()
        self._asked = 0

    def _key(self, cfg: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, repr(v)) for k, v in cfg.items()))

    def ask(self, n: int = 1) -> list[Proposal]:
        """Up to ``n`` new random configurations (the space's default first with ``start_with_default``); fewer once a
        finite space is exhausted. A configuration seen before is drawn again, up to 1000 times."""
        out = []
        for _ in range(n):
            if math.isfinite(self._size) and len(self._seen) >= self._size:
                break
            if self._asked == 0 and self.start_with_default:
                cfg = config_dict(self.space.get_default_configuration())
            else:
                cfg = config_dict(self.space.sample_configuration())
                for _ in range(1000):
                    if self._key(cfg) not in self._seen:  # also skips the trials of a resumed run
                        break
                    cfg = config_dict(self.space.sample_configuration())
            self._asked += 1
            self._seen.add(self._key(cfg))
            out.append(Proposal(cfg))
        return out

    def tell(self, proposal: Proposal, trial: Trial) -> None:
        """Remember the trial's configuration so that it is not proposed again (replayed trials too)."""
        self._seen.add(self._key(proposal.config))  # replayed trials are not proposed again


@hookimpl
def bilevel_register_optimizers() -> list[OptimizerSpec]:
    """Register the ``random`` optimizer (capability ``parallel``)."""
    return [
        OptimizerSpec(
            "random", RandomSearch, "random search over the ConfigSpace", capabilities=frozenset({"parallel"})
        )
    ]
