"""Differentiable inner training and hypergradients (reverse, checkpointed, truncated, forward,
implicit). A library: the ``hypergradient`` outer-optimizer plugin and the meta-learning plugins
build on it, and so can users directly."""

from automl_bilevel.gradient.dynamics import InnerDynamics
from automl_bilevel.gradient.hyperparams import (
    Bounded,
    BoxTensor,
    HyperKind,
    HyperParameters,
    ModuleParams,
    Positive,
    PositiveTensor,
)
from automl_bilevel.gradient.modes import (
    MODES,
    SOLVERS,
    ForwardMode,
    Hypergradient,
    checkpointed,
    forward,
    hypergradient,
    implicit,
    implicit_grads,
    reverse,
)
from automl_bilevel.gradient.optim import SGD, Adam, InnerOptimizer, Momentum, make_optimizer
from automl_bilevel.gradient.solvers import SolveInfo, cg_solve, conjugate_gradient, fixed_point, neumann

__all__ = [
    "MODES",
    "SOLVERS",
    "Adam",
    "Bounded",
    "BoxTensor",
    "ForwardMode",
    "HyperKind",
    "HyperParameters",
    "Hypergradient",
    "InnerDynamics",
    "InnerOptimizer",
    "ModuleParams",
    "Momentum",
    "Positive",
    "PositiveTensor",
    "SGD",
    "SolveInfo",
    "cg_solve",
    "checkpointed",
    "conjugate_gradient",
    "fixed_point",
    "forward",
    "hypergradient",
    "implicit",
    "implicit_grads",
    "make_optimizer",
    "neumann",
    "reverse",
]
