"""Hypergradients of one *segment* of a training run, for online (real-time) hyperparameter optimisation.

Real-time hyperparameter optimisation (RTHO, Franceschi et al. 2017, §3.2) trains once and moves the
hyperparameters λ during the run: every K inner steps, by the hypergradient of the validation
objective at the current weights. Two estimates of that hypergradient, one function each:

- :func:`segment_reverse` (truncated reverse mode): the segment's last ``truncate`` steps (all K by
  default) are unrolled with their autograd graph from the segment's start state, taken as a constant;
  memory O(truncate·|z|), cost about three plain steps per unrolled step;
- :class:`ForwardCarry` (forward mode): tangents Z_t = dz_t/dλ carried across the *whole* run, through
  every change of λ, as RTHO does; memory O(|z|·|λ|), flat in the run's length, cost about one
  Jacobian-vector product per hyperparameter entry per step.

Both take the dynamics' hyperparameters in two parts: ``values`` (what the outer optimizer moves, the
only entries differentiated) and ``constants`` (everything else the inner loss reads: a fixed momentum,
a fixed weight decay), so forward mode carries tangents for the tuned entries only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torch.func import jvp, vmap

from automl_bilevel.gradient.dynamics import InnerDynamics, check_finite
from automl_bilevel.gradient.modes import OuterLoss, outer_grads


def _merge(constants: Mapping[str, Tensor], values: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {**constants, **values}


def run_segment(
    dyn: InnerDynamics, z: Tensor, hp: Mapping[str, Tensor], start: int, stop: int, check_every: int = 50
) -> Tensor:
    """Inner steps ``start..stop-1`` from state ``z`` without a graph; FloatingPointError on divergence."""
    return dyn.run(z, hp, start, stop, check_every=check_every)


def segment_reverse(
    dyn: InnerDynamics,
    outer_loss: OuterLoss,
    z: Tensor,
    values: Mapping[str, Tensor],
    constants: Mapping[str, Tensor],
    start: int,
    stop: int,
    truncate: int | None = None,
) -> tuple[float, dict[str, Tensor], Tensor]:
    """Run steps ``start..stop-1`` from ``z`` and return (E, dE/dvalues, z_stop), dE/dλ by reverse mode
    through the last ``truncate`` steps of the segment (all of them by default).

    The state at the start of the unrolled part is a constant (the truncation); the direct term
    ∂E/∂λ is included. With ``truncate`` equal to the segment length and ``start=0`` this is exact
    reverse mode over the steps run."""
    if not 0 <= start < stop <= dyn.T:
        raise ValueError(f"a segment needs 0 <= start < stop <= T={dyn.T}, got start={start}, stop={stop}")
    K = stop - start if truncate is None else max(1, min(int(truncate), stop - start))
    fixed = {k: v.detach() for k, v in _merge(constants, values).items()}
    z = run_segment(dyn, z, fixed, start, stop - K) if stop - K > start else z.detach()
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in values.items()}
    hp = _merge({k: v.detach() for k, v in constants.items()}, leaves)
    for t in range(stop - K, stop):
        z = dyn.step(t, z, hp, create_graph=True)
    check_finite(z, stop - 1)
    with torch.enable_grad():
        E = outer_loss(dyn.weights(z), hp)
        if not torch.isfinite(E):
            raise FloatingPointError(f"outer objective is {float(E)}")
        got = torch.autograd.grad(E, list(leaves.values()), allow_unused=True)
    grads = {
        k: (g if g is not None else torch.zeros_like(leaves[k])).detach() for k, g in zip(leaves, got, strict=True)
    }
    return float(E.detach()), grads, z.detach()


class ForwardCarry:
    """Forward-mode tangents Z = dz/dλ of the tuned entries, carried along a run (RTHO's engine).

    ``Z`` has one column per scalar entry of ``values`` (a per-layer or per-feature tensor counts its
    entries); it starts at zero and is *kept* when λ changes, as in Franceschi et al. 2017 — the
    hypergradient at step t is then that of the run's whole history, with λ's past values held where
    they were."""

    def __init__(self, dyn: InnerDynamics, values: Mapping[str, Tensor], Z: Tensor | None = None) -> None:
        self.dyn = dyn
        self.names = list(values)
        self.shapes = [values[k].shape for k in self.names]
        self.sizes = [values[k].numel() for k in self.names]
        self.m = sum(self.sizes)
        first = next(iter(values.values()))
        self.Z = (
            torch.zeros(dyn.dim, self.m, dtype=first.dtype, device=first.device) if Z is None else Z.detach().clone()
        )
        self.eye = torch.eye(self.m, dtype=first.dtype, device=first.device)

    def _flat(self, values: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([values[k].detach().reshape(-1) for k in self.names])

    def _unflat(self, theta: Tensor) -> dict[str, Tensor]:
        parts = torch.split(theta, self.sizes)
        return {k: p.reshape(s) for k, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def advance(
        self, z: Tensor, values: Mapping[str, Tensor], constants: Mapping[str, Tensor], start: int, stop: int
    ) -> Tensor:
        """Steps ``start..stop-1`` from ``z`` at ``values``, pushing the tangents along; returns z_stop."""
        theta = self._flat(values).to(z.dtype)
        const = {k: v.detach() for k, v in constants.items()}
        z = z.detach()
        Z = self.Z.to(z.dtype)
        eye = self.eye.to(z.dtype)
        for t in range(start, stop):

            def f(z_: Tensor, th: Tensor, t: int = t) -> Tensor:
                return self.dyn.step_func(t, z_, _merge(const, self._unflat(th)))

            def push(dz: Tensor, dth: Tensor, z_: Tensor = z) -> tuple[Tensor, Tensor]:
                out = jvp(f, (z_, theta), (dz, dth))
                return out[0], out[1]

            # out_dims=None for the primal (the same for every tangent): see modes.ForwardMode
            z_new, Z_new = vmap(push, in_dims=(1, 0), out_dims=(None, 1))(Z, eye)  # type: ignore[arg-type]
            z, Z = z_new.detach(), Z_new.detach()
            if (t + 1) % 50 == 0:
                check_finite(z, t)
        check_finite(z, stop - 1)
        if not torch.isfinite(Z).all():
            raise FloatingPointError(f"forward-mode tangents diverged by step {stop - 1}")
        self.Z = Z
        return z

    def hypergradient(
        self, outer_loss: OuterLoss, z: Tensor, values: Mapping[str, Tensor], constants: Mapping[str, Tensor]
    ) -> tuple[float, dict[str, Tensor]]:
        """(E, dE/dvalues) at state ``z``: the direct term plus Zᵀ ∂E/∂w."""
        hp = _merge({k: v.detach() for k, v in constants.items()}, {k: v.detach() for k, v in values.items()})
        value, gw, direct = outer_grads(outer_loss, self.dyn.weights(z), hp)
        total = torch.cat([direct[k].reshape(-1) for k in self.names]) + self.Z[: self.dyn.n].T @ gw
        return value, self._unflat(total)


def piecewise_run(
    dyn: InnerDynamics,
    z0: Tensor,
    hp_at: Callable[[int], Mapping[str, Tensor]],
    check_every: int = 50,
) -> Tensor:
    """The whole run with hyperparameters that change along it (``hp_at(t)`` for step ``t``): how a
    schedule found online is replayed."""
    z = z0.detach()
    with torch.no_grad():
        for t in range(dyn.T):
            z = dyn.step(t, z, hp_at(t))
            if (t + 1) % check_every == 0 or t == dyn.T - 1:
                check_finite(z, t)
    return z


__all__ = ["ForwardCarry", "piecewise_run", "run_segment", "segment_reverse"]
