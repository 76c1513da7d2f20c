"""Inner dynamics w_t = Φ_t(w_{t-1}, λ): T steps of a functional optimizer on an inner loss.

``inner_loss(w, hp, t)`` is the training loss at step ``t`` (``t`` may pick a mini-batch; ``t=None``
means the full training loss, used at the optimum by implicit differentiation). ``w`` is a flat
vector; ``hp`` a dict of hyperparameter *values* (tensors).

Two implementations of one step, which compute the same numbers:

- ``step``: plain autograd, the fast path for forward runs and for unrolled reverse mode;
- ``step_func``: ``torch.func.grad``, composable with ``jvp``/``vjp``/``vmap`` (forward mode,
  implicit differentiation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import grad

from automl_bilevel.core.deadline import check_deadline
from automl_bilevel.gradient.optim import InnerOptimizer


@dataclass
class InnerDynamics:
    """``T`` steps ``z_t = Φ_t(z_{t-1}, λ)`` of ``optimizer`` on ``inner_loss``: what every hypergradient
    mode differentiates.

    - ``inner_loss(w, hp, t)``: the training loss of the flat weights ``w`` (``n`` entries) with the
      hyperparameter values ``hp`` at step ``t`` (``t`` picks the mini-batch; ``None``: the full
      training loss, used at the optimum by implicit differentiation);
    - ``optimizer``: a functional :class:`~automl_bilevel.gradient.optim.InnerOptimizer` (SGD, momentum,
      Adam, a learned one) whose learning rate etc. may be entries of ``hp``;
    - ``n``: the number of inner weights; the state ``z`` is ``[w, *slots]`` of ``dim`` entries
      (``(1 + optimizer.n_slots) * n``);
    - ``T``: the number of steps (an unrolled training run of ``T`` mini-batches).

    A learner's ``differentiable(...)`` builds one (``automl_bilevel_plugins.learners.torch_learners``
    for any ``nn.Module``); :func:`automl_bilevel.gradient.hypergradient` takes it with an outer loss.
    """

    inner_loss: Callable[[Tensor, Mapping[str, Tensor], int | None], Tensor]
    optimizer: InnerOptimizer
    n: int
    T: int

    @property
    def dim(self) -> int:
        """The length of the state z: the weights plus the optimizer's slots, ``(1 + n_slots) * n``."""
        return (1 + self.optimizer.n_slots) * self.n

    def init(self, w0: Tensor) -> Tensor:
        """The initial state z0 from initial weights ``w0`` (flattened; the optimizer's slots start at zero).

        Raises ``ValueError`` when ``w0`` does not have ``n`` entries."""
        w0 = w0.reshape(-1)
        if w0.numel() != self.n:
            raise ValueError(f"w0 has {w0.numel()} entries, the dynamics expect {self.n}")
        return torch.cat([w0] + [torch.zeros_like(w0)] * self.optimizer.n_slots)

    def weights(self, z: Tensor) -> Tensor:
        """The inner variables w (the first ``n`` entries) of the state ``z``."""
        return z[: self.n]

    def _split(self, z: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        n = self.n
        return z[:n], tuple(z[(i + 1) * n : (i + 2) * n] for i in range(self.optimizer.n_slots))

    def _join(self, w: Tensor, slots: tuple[Tensor, ...]) -> Tensor:
        return torch.cat([w, *slots]) if slots else w

    def step(self, t: int, z: Tensor, hp: Mapping[str, Tensor], create_graph: bool = False) -> Tensor:
        """One step with autograd. ``create_graph=True`` keeps the graph to ``z`` and ``hp``."""
        check_deadline()  # the search's timeout bounds a running trial, step by step
        with torch.enable_grad():
            if create_graph:
                if not z.requires_grad:
                    z = z.detach().requires_grad_(True)
                w, slots = self._split(z)
                (g,) = torch.autograd.grad(self.inner_loss(w, hp, t), w, create_graph=True)
            else:
                w, slots = self._split(z.detach())
                w = w.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self.inner_loss(w, hp, t), w)
                w = w.detach()
            w2, slots2 = self.optimizer.update(w, slots, g, hp, t)
            z2 = self._join(w2, slots2)
        return z2 if create_graph else z2.detach()

    def step_func(self, t: int, z: Tensor, hp: Mapping[str, Tensor]) -> Tensor:
        """The same step written with torch.func (composable with jvp, vjp and vmap)."""
        check_deadline()
        w, slots = self._split(z)
        g: Tensor = grad(lambda w_: self.inner_loss(w_, hp, t))(w)
        w2, slots2 = self.optimizer.update(w, slots, g, hp, t)
        return self._join(w2, slots2)

    @torch.no_grad()
    def run(
        self, z0: Tensor, hp: Mapping[str, Tensor], start: int = 0, stop: int | None = None, check_every: int = 50
    ) -> Tensor:
        """Run steps ``start..stop-1`` without any graph; raise FloatingPointError on divergence."""
        hp = {k: v.detach() for k, v in hp.items()}
        z = z0.detach()
        stop = self.T if stop is None else stop
        for t in range(start, stop):
            z = self.step(t, z, hp)
            if (t + 1) % check_every == 0 or t == stop - 1:
                check_finite(z, t)
        return z


def check_finite(z: Tensor, t: int) -> None:
    """Raise ``FloatingPointError`` when the inner state ``z`` at step ``t`` has a NaN or an infinity."""
    if not torch.isfinite(z).all():
        raise FloatingPointError(f"inner dynamics diverged (non-finite state) by step {t}")
