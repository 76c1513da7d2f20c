"""The ``hypergradient`` outer optimizer: outer variables moved by the gradient of the outer objective
(Franceschi et al. 2017, 2018).

On a hyperparameter search it moves the learner's differentiable hyperparameters (every float of the
search space the learner can differentiate, log-scale floats in log space, others through a sigmoid to
their bounds, starting at the space's defaults, plus ``tensor_hyperparameters`` such as
``l2_per_feature`` or ``example_weights``) by hypergradients through inner training, in any ``mode``.
On a differentiable problem of its own (episodic meta-training, ML3, L2O meta-training) it moves that
problem's variables (a network) by the problem's gradient.

Each outer step is one trial (a metric step). The machinery is the host's
:class:`automl_bilevel.gradient.outer.GradientOuterOptimizer`: stateless evaluation (runs on Dask workers),
rejected steps (back to the previous point, outer learning rate halved, ``backoffs`` counts them),
and an outer state saved with a checkpoint, so a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from automl_bilevel import OptimizerSpec, hookimpl
from automl_bilevel.core.validation import Integral, Interval, StrOptions, validate_params
from automl_bilevel.gradient import MODES, SOLVERS
from automl_bilevel.gradient.outer import GRADIENT_CONSTRAINTS, GradientOuterOptimizer


class HypergradientOptimizer(GradientOuterOptimizer):
    """The gradient outer optimizer with the hypergradient library's modes; settings checked against
    ``_parameter_constraints`` before any work."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **GRADIENT_CONSTRAINTS,
        "mode": [StrOptions(set(MODES))],
        "inner_steps": [Interval(Integral, 1, None, closed="left"), None],
        "truncate": [Interval(Integral, 1, None, closed="left"), None],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left"), None],
        "solver": [StrOptions(set(SOLVERS))],
        "solver_iters": [Interval(Integral, 1, None, closed="left")],
        "tensor_hyperparameters": [list, tuple],
        "tensor_init": [Mapping, None],
    }

    def __init__(
        self,
        mode: str = "reverse",
        outer_lr: float = 0.1,
        outer_optimizer: str = "adam",
        clip: float | None = 10.0,
        inner_steps: int | None = None,
        truncate: int | None = None,
        checkpoint_every: int | None = None,
        solver: str = "cg",
        solver_iters: int = 100,
        tensor_hyperparameters: tuple[str, ...] | list[str] = (),
        tensor_init: Mapping[str, Any] | None = None,
        patience: int | None = None,
        min_delta: float = 0.0,
        max_backoffs: int = 8,
        backoff: float = 0.5,
    ) -> None:
        validate_params(
            type(self).__name__,
            self._parameter_constraints,
            dict(
                mode=mode,
                outer_lr=outer_lr,
                outer_optimizer=outer_optimizer,
                clip=clip,
                inner_steps=inner_steps,
                truncate=truncate,
                checkpoint_every=checkpoint_every,
                solver=solver,
                solver_iters=solver_iters,
                tensor_hyperparameters=tensor_hyperparameters,
                tensor_init=tensor_init,
                patience=patience,
                min_delta=min_delta,
                max_backoffs=max_backoffs,
                backoff=backoff,
            ),
        )
        bad = [t for t in tensor_hyperparameters if not isinstance(t, str)]
        if bad:
            raise ValueError(f"tensor_hyperparameters must be names (strings), got {bad!r}")
        if mode == "truncated" and not truncate:
            raise ValueError("mode='truncated' needs truncate=K")
        super().__init__(
            outer_lr=outer_lr,
            outer_optimizer=outer_optimizer,
            clip=clip,
            patience=patience,
            min_delta=min_delta,
            max_backoffs=max_backoffs,
            backoff=backoff,
            options=dict(
                mode=mode,
                truncate=truncate,
                checkpoint_every=checkpoint_every,
                solver=solver,
                solver_iters=int(solver_iters),
                inner_steps=inner_steps,
                tensor_hyperparameters=tuple(tensor_hyperparameters),
                tensor_init=dict(tensor_init or {}),
            ),
        )
        self.mode = mode


@hookimpl
def bilevel_register_optimizers() -> list[OptimizerSpec]:
    """Register the ``hypergradient`` optimizer (requires ``differentiable``; its trials are outer steps)."""
    return [
        OptimizerSpec(
            "hypergradient",
            HypergradientOptimizer,
            "gradient of the outer objective through inner training (reverse, checkpoint, truncated, "
            "forward, implicit); also meta-trains networks of differentiable problems",
            requires=frozenset({"differentiable"}),
            trials_are_steps=True,
            capabilities=frozenset({"parallel"}),
        )
    ]
