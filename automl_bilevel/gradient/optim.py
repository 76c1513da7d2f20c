"""Functional inner optimizers on a flat parameter vector: SGD, SGD with momentum, Adam.

The full inner state is one flat vector ``z = [w, *slots]`` (``len(z) = (1 + n_slots) * n``), so
that every hypergradient mode (reverse, checkpointed, truncated, forward, implicit) treats all
dynamics alike. Learning rate, momentum and betas may be plain floats or entries of the
hyperparameter dict (tensors that hypergradients flow into): ``lr="lr"`` reads ``hp["lr"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class InnerOptimizer(Protocol):
    """The functional-optimizer contract of :class:`~automl_bilevel.gradient.InnerDynamics`:
    ``n_slots`` state vectors of the weights' size, and one step ``update(w, slots, g, hp, t)``
    returning the new weights and slots (``hp``: hyperparameter values, ``t``: the step from 0)."""

    @property
    def n_slots(self) -> int:
        """How many state vectors of the weights' size the optimizer keeps (0 for SGD, 2 for Adam)."""

    def update(
        self, w: Tensor, slots: tuple[Tensor, ...], g: Tensor, hp: Mapping[str, Tensor], t: int
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One optimizer step: from weights ``w``, state ``slots`` and the inner gradient ``g`` at step ``t``,
        the new weights and slots. ``hp`` holds the hyperparameter values a setting may name."""


def _get(hp: Mapping[str, Tensor], value: float | str) -> Tensor | float:
    return hp[value] if isinstance(value, str) else value


@dataclass(frozen=True)
class SGD:
    """Plain gradient descent: w = w - lr·g, no state (``lr``: a float or the name of a hyperparameter)."""

    lr: float | str = "lr"
    n_slots = 0

    def update(
        self, w: Tensor, slots: tuple[Tensor, ...], g: Tensor, hp: Mapping[str, Tensor], t: int
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """w - lr·g, and no slots."""
        return w - _get(hp, self.lr) * g, ()


@dataclass(frozen=True)
class Momentum:
    """Heavy-ball momentum as in ``torch.optim.SGD(momentum=m)``: v = m v + g; w = w - lr v."""

    lr: float | str = "lr"
    momentum: float | str = 0.9
    n_slots = 1

    def update(
        self, w: Tensor, slots: tuple[Tensor, ...], g: Tensor, hp: Mapping[str, Tensor], t: int
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One heavy-ball step; the one slot is the velocity v."""
        (v,) = slots
        v = _get(hp, self.momentum) * v + g
        return w - _get(hp, self.lr) * v, (v,)


@dataclass(frozen=True)
class Adam:
    """Adam as in ``torch.optim.Adam`` (bias-corrected; ``t`` counts from 0)."""

    lr: float | str = "lr"
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    n_slots = 2

    def update(
        self, w: Tensor, slots: tuple[Tensor, ...], g: Tensor, hp: Mapping[str, Tensor], t: int
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One bias-corrected Adam step; the two slots are the first and second moments (m, v)."""
        m, v = slots
        m = self.beta1 * m + (1 - self.beta1) * g
        v = self.beta2 * v + (1 - self.beta2) * g * g
        mhat = m / (1 - self.beta1 ** (t + 1))
        vhat = v / (1 - self.beta2 ** (t + 1))
        return w - _get(hp, self.lr) * mhat / (torch.sqrt(vhat) + self.eps), (m, v)


def make_optimizer(name: str, lr: float | str = "lr", momentum: float | str | None = 0.9) -> InnerOptimizer:
    """The inner optimizer called ``name``: ``sgd`` (with ``momentum`` other than None or 0 it is
    :class:`Momentum`), ``momentum`` or ``adam``. ``lr`` and ``momentum`` are floats or hyperparameter names.

    Raises ``ValueError`` for an unknown name, or ``momentum`` without a momentum."""
    if name == "sgd":
        return SGD(lr) if momentum is None or momentum == 0 else Momentum(lr, momentum)
    if name == "momentum":
        if momentum is None:
            raise ValueError("the momentum optimizer needs a momentum (a float or a hyperparameter name)")
        return Momentum(lr, momentum)
    if name == "adam":
        return Adam(lr)
    raise ValueError(f"unknown inner optimizer {name!r}; use 'sgd', 'momentum' or 'adam'")
