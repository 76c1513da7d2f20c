"""Hypergradients dE(w_T(λ), λ)/dλ of an outer loss through inner dynamics, by five methods with
one signature::

    hypergradient(dynamics, outer_loss, z0, hp, mode=..., **options) -> Hypergradient

``hp`` maps names to hyperparameter *values* (tensors); the result's ``grads`` has one entry per
name (chain through a parametrisation with ``HyperParameters.chain``).

=============  ================================================  ==========================
mode           method                                            memory
=============  ================================================  ==========================
reverse        backprop through the whole unrolled trajectory    O(T·|w|) (the graph)
checkpoint     reverse with recomputation from checkpoints       O((T/c + c)·|w|), c ≈ √T
truncated      reverse through the last K steps only             O(K·|w|)
forward        tangent propagation dw_t/dλ (forward-mode AD)      O(|w|·|λ|), flat in T
implicit       implicit function theorem at w_T (cg, neumann,    O(|w|), flat in T
               fixed_point)
=============  ================================================  ==========================

reverse, checkpoint and forward are exact (they agree to float precision); truncated and
implicit are approximations whose error shrinks as K → T and as w_T → w*.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, jvp, vjp, vmap

from automl_bilevel.gradient.dynamics import InnerDynamics, check_finite
from automl_bilevel.gradient.solvers import conjugate_gradient, fixed_point, neumann

MODES = ("reverse", "checkpoint", "truncated", "forward", "implicit")
SOLVERS = ("cg", "neumann", "fixed_point")

OuterLoss = Callable[[Tensor, Mapping[str, Tensor]], Tensor]


@dataclass
class Hypergradient:
    """The result of a hypergradient computation.

    ``value``: the outer objective E(w_T, λ); ``grads``: dE/dλ, one tensor per hyperparameter name (on the
    values, not the raw tensors: chain with ``HyperParameters.chain``); ``z``: the final inner state z_T;
    ``info``: how it was computed (``mode``, ``steps``, and the solver's ``iterations``/``residual``)."""

    value: float
    grads: dict[str, Tensor]
    z: Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def norm(self) -> float:
        """The Euclidean norm of all gradients together."""
        return math.sqrt(sum(float((g.double() ** 2).sum()) for g in self.grads.values()))


def _detached(hp: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach() for k, v in hp.items()}


def _leaves(hp: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone().requires_grad_(True) for k, v in hp.items()}


def outer_grads(outer_loss: OuterLoss, w: Tensor, hp: Mapping[str, Tensor]) -> tuple[float, Tensor, dict[str, Tensor]]:
    """E, dE/dw and the direct dE/dλ at (w, λ)."""
    with torch.enable_grad():
        w_ = w.detach().requires_grad_(True)
        hp_ = _leaves(hp)
        E = outer_loss(w_, hp_)
        if not torch.isfinite(E):
            raise FloatingPointError(f"outer objective is {float(E)}")
        got = torch.autograd.grad(E, [w_, *hp_.values()], allow_unused=True)
    gw = got[0] if got[0] is not None else torch.zeros_like(w_)
    direct = {k: (g if g is not None else torch.zeros_like(hp_[k])) for k, g in zip(hp_, got[1:], strict=True)}
    return float(E.detach()), gw, direct


def _add(acc: dict[str, Tensor], names: Sequence[str], grads: Sequence[Tensor | None]) -> None:
    for k, g in zip(names, grads, strict=True):
        if g is not None:
            acc[k] = acc[k] + g


def reverse(
    dyn: InnerDynamics, outer_loss: OuterLoss, z0: Tensor, hp: Mapping[str, Tensor], truncate: int | None = None
) -> Hypergradient:
    """Unroll with the autograd graph and backprop once (``truncate=K``: only the last K steps)."""
    K = dyn.T if truncate is None else max(0, min(int(truncate), dyn.T))
    z = dyn.run(z0, hp, 0, dyn.T - K) if K < dyn.T else z0.detach()
    leaves = _leaves(hp)
    for t in range(dyn.T - K, dyn.T):
        z = dyn.step(t, z, leaves, create_graph=True)
    check_finite(z, dyn.T - 1)
    with torch.enable_grad():
        E = outer_loss(dyn.weights(z), leaves)
        if not torch.isfinite(E):
            raise FloatingPointError(f"outer objective is {float(E)}")
        got = torch.autograd.grad(E, list(leaves.values()), allow_unused=True)
    grads = {k: (g if g is not None else torch.zeros_like(leaves[k])) for k, g in zip(leaves, got, strict=True)}
    return Hypergradient(
        float(E.detach()), grads, z.detach(), {"mode": "truncated" if K < dyn.T else "reverse", "steps": K}
    )


def checkpointed(
    dyn: InnerDynamics, outer_loss: OuterLoss, z0: Tensor, hp: Mapping[str, Tensor], every: int | None = None
) -> Hypergradient:
    """Exact reverse mode storing a state every ``every`` steps (default ⌈√T⌉) and recomputing each
    segment with its graph during the backward sweep."""
    T = dyn.T
    c = max(1, int(every) if every else math.ceil(math.sqrt(T)))
    hp_d = _detached(hp)
    ckpts: dict[int, Tensor] = {}
    z = z0.detach()
    for t in range(T):
        if t % c == 0:
            ckpts[t] = z
        z = dyn.step(t, z, hp_d)
    check_finite(z, T - 1)
    value, gw, g = outer_grads(outer_loss, dyn.weights(z), hp_d)
    p = torch.zeros(dyn.dim, dtype=z.dtype, device=z.device)
    p[: dyn.n] = gw
    leaves = _leaves(hp)
    names = list(leaves)
    for s in sorted(ckpts, reverse=True):
        e = min(s + c, T)
        with torch.enable_grad():
            zs = ckpts.pop(s).detach().requires_grad_(True)
            ze = zs
            for t in range(s, e):
                ze = dyn.step(t, ze, leaves, create_graph=True)
            got = torch.autograd.grad(ze, [zs, *leaves.values()], p, allow_unused=True)
        p = got[0]
        _add(g, names, got[1:])
    return Hypergradient(value, g, z, {"mode": "checkpoint", "steps": T, "every": c})


def _flatten(hp: Mapping[str, Tensor]) -> tuple[Tensor, Callable[[Tensor], dict[str, Tensor]]]:
    names = list(hp)
    shapes = [hp[k].shape for k in names]
    sizes = [hp[k].numel() for k in names]
    theta = torch.cat([hp[k].detach().reshape(-1) for k in names])

    def unflatten(vec: Tensor) -> dict[str, Tensor]:
        return {k: part.reshape(s) for k, part, s in zip(names, torch.split(vec, sizes), shapes, strict=True)}

    return theta, unflatten


class ForwardMode:
    """Forward-mode hypergradients: carry Z_t = dz_t/dλ along the run (memory flat in T).

    Use it step by step for real-time hyperparameter optimization (RTHO): ``advance(k)`` runs k inner
    steps, ``hypergradient()`` gives dE/dλ at the current state, ``set_hp(new)`` changes λ and the
    run goes on with the same tangents (Franceschi et al. 2017, §3.2).
    """

    def __init__(self, dyn: InnerDynamics, outer_loss: OuterLoss, z0: Tensor, hp: Mapping[str, Tensor]) -> None:
        self.dyn, self.outer_loss = dyn, outer_loss
        self.theta, self.unflatten = _flatten(hp)
        self.m = self.theta.numel()
        self.z = z0.detach()
        self.Z = torch.zeros(dyn.dim, self.m, dtype=z0.dtype, device=z0.device)
        self.t = 0
        self.eye = torch.eye(self.m, dtype=self.theta.dtype, device=self.theta.device)

    def set_hp(self, hp: Mapping[str, Tensor]) -> None:
        """Change λ to the values ``hp`` (same names and shapes); the state and its tangents carry on."""
        self.theta, self.unflatten = _flatten(hp)

    def advance(self, k: int | None = None) -> None:
        """Run ``k`` more inner steps (default: up to ``T``), carrying the tangents dz/dλ along."""
        stop = self.dyn.T if k is None else min(self.dyn.T, self.t + k)
        theta = self.theta
        for t in range(self.t, stop):

            def f(z: Tensor, th: Tensor, t: int = t) -> Tensor:
                return self.dyn.step_func(t, z, self.unflatten(th))

            def push(dz: Tensor, dth: Tensor, z: Tensor = self.z) -> tuple[Tensor, Tensor]:
                out = jvp(f, (z, theta), (dz, dth))  # (primal, tangent): no aux output
                return out[0], out[1]

            # out_dims=None for the primal (the same for every tangent) is supported by vmap but not
            # by its annotation (int | tuple[int, ...] | None); randomness="same": one primal step, so
            # random layers (dropout) draw one mask for every tangent, as the step itself does
            z_new, Z_new = vmap(push, in_dims=(1, 0), out_dims=(None, 1), randomness="same")(  # type: ignore[arg-type]
                self.Z, self.eye
            )
            self.z, self.Z = z_new.detach(), Z_new.detach()
            if (t + 1) % 50 == 0:
                check_finite(self.z, t)
        self.t = stop
        check_finite(self.z, stop - 1)

    def hypergradient(self) -> Hypergradient:
        """E and dE/dλ at the current inner state (after the steps run so far)."""
        hp = self.unflatten(self.theta)
        value, gw, direct = outer_grads(self.outer_loss, self.dyn.weights(self.z), hp)
        total = torch.cat([direct[k].reshape(-1) for k in hp]) + self.Z[: self.dyn.n].T @ gw
        return Hypergradient(value, self.unflatten(total), self.z, {"mode": "forward", "steps": self.t})


def forward(dyn: InnerDynamics, outer_loss: OuterLoss, z0: Tensor, hp: Mapping[str, Tensor]) -> Hypergradient:
    """Exact forward-mode hypergradient: propagate dz_t/dλ through all ``T`` steps (memory flat in T, O(|w|·|λ|))."""
    fm = ForwardMode(dyn, outer_loss, z0, hp)
    fm.advance()
    return fm.hypergradient()


def implicit(
    dyn: InnerDynamics,
    outer_loss: OuterLoss,
    z0: Tensor,
    hp: Mapping[str, Tensor],
    solver: str = "cg",
    iters: int = 100,
    tol: float = 1e-10,
    alpha: float | None = None,
    warm_z: Tensor | None = None,
) -> Hypergradient:
    """Implicit function theorem at the approximate optimum w_T::

        dE/dλ = ∂E/∂λ − (∂²L/∂λ∂w)ᵀ v,   with   (∂²L/∂w²) v = ∂E/∂w

    solved by conjugate gradient (``cg``), a Neumann series with step ``alpha`` (``neumann``), or
    fixed-point iteration of the inner dynamics' own Jacobian (``fixed_point``:
    v = (∂Φ/∂z)ᵀ v + ∂E/∂z, dE/dλ = ∂E/∂λ + (∂Φ/∂λ)ᵀ v). The products are backward passes through
    one autograd graph built at w_T (:func:`implicit_grads` is the pure torch.func version).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {SOLVERS}")
    if solver == "neumann" and alpha is None:
        raise ValueError("the neumann solver needs alpha (a step below 2/‖H‖, e.g. the inner lr)")
    z = dyn.run(z0, hp) if warm_z is None else warm_z.detach()
    hp_d = _detached(hp)
    w = dyn.weights(z)
    value, b, direct = outer_grads(outer_loss, w, hp_d)
    names = list(hp_d)
    # One autograd graph of the gradient (or of one step) at w_T, built once; every Hessian- or
    # Jacobian-vector product of the solver is a backward pass through it (reverse-over-reverse,
    # as torchopt does), not a fresh trace per product.
    leaves = _leaves(hp_d)
    with torch.enable_grad():
        if solver == "fixed_point":
            z_ = z.detach().requires_grad_(True)
            out = dyn.step(dyn.T, z_, leaves, create_graph=True)  # the map of a step after the run
            wrt = [z_, *leaves.values()]
        else:
            w_ = w.detach().requires_grad_(True)
            (out,) = torch.autograd.grad(dyn.inner_loss(w_, leaves, None), w_, create_graph=True)
            wrt = [w_, *leaves.values()]

    def pull(u: Tensor, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        with torch.enable_grad():
            got = torch.autograd.grad(out, inputs, u, retain_graph=True, allow_unused=True)
        return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(got, inputs, strict=True))

    if solver == "fixed_point":
        bz = torch.zeros(dyn.dim, dtype=z.dtype, device=z.device)
        bz[: dyn.n] = b
        v, info = fixed_point(lambda u: pull(u, wrt[:1])[0], bz, iters=iters, tol=tol)
        mixed = pull(v, wrt[1:])
        grads = {k: direct[k] + m for k, m in zip(names, mixed, strict=True)}
    else:

        def hvp(u: Tensor) -> Tensor:  # H is symmetric: the vector-Jacobian product of the gradient is H u
            return pull(u, wrt[:1])[0]

        if solver == "cg":
            v, info = conjugate_gradient(hvp, b, iters=iters, tol=tol)
        else:
            assert alpha is not None  # checked on entry for the neumann solver
            v, info = neumann(hvp, b, alpha=alpha, iters=iters)
        mixed = pull(v, wrt[1:])
        grads = {k: direct[k] - m for k, m in zip(names, mixed, strict=True)}
    return Hypergradient(
        value,
        grads,
        z,
        {
            "mode": "implicit",
            "solver": solver,
            "iterations": info.iterations,
            "residual": info.residual,
            "steps": dyn.T,
        },
    )


def implicit_grads(
    inner_loss: Callable[[Tensor, Mapping[str, Tensor]], Tensor],
    outer_loss: OuterLoss,
    w: Tensor,
    hp: Mapping[str, Tensor],
    iters: int = 50,
) -> dict[str, Tensor]:
    """The implicit hypergradient as a pure torch.func function of (w*, λ): fixed-iteration CG, no
    Python-side branching, so ``vmap`` can batch it over tasks and ``grad``/``jvp`` can go through it."""
    from automl_bilevel.gradient.solvers import cg_solve

    def grad_w(w_: Tensor, h_: Mapping[str, Tensor]) -> Tensor:
        g: Tensor = grad(lambda ww: inner_loss(ww, h_))(w_)
        return g

    gw, gh = grad(outer_loss, argnums=(0, 1))(w, hp)
    v = cg_solve(lambda u: jvp(lambda ww: grad_w(ww, hp), (w,), (u,))[1], gw, iters)
    pull = vjp(lambda h_: grad_w(w, h_), hp)[1]
    (mixed,) = pull(v)
    return {k: gh[k] - mixed[k] for k in hp}


def hypergradient(
    dyn: InnerDynamics,
    outer_loss: OuterLoss,
    z0: Tensor,
    hp: Mapping[str, Tensor],
    mode: str = "reverse",
    **options: Any,
) -> Hypergradient:
    """Dispatch to one of :data:`MODES`; ``options``: ``truncate`` (truncated), ``every``
    (checkpoint), ``solver``/``iters``/``tol``/``alpha`` (implicit).

    The computation runs on ``z0``'s device: hyperparameters held elsewhere (an outer optimizer's
    values on the CPU, the inner problem on a GPU) are moved there, and each gradient comes back
    on its hyperparameter's device."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    homes = {k: v.device for k, v in hp.items()}
    if any(d != z0.device for d in homes.values()):
        res = _dispatch(dyn, outer_loss, z0, {k: v.to(z0.device) for k, v in hp.items()}, mode, **options)
        res.grads = {k: g.to(homes[k]) if k in homes else g for k, g in res.grads.items()}
        return res
    return _dispatch(dyn, outer_loss, z0, hp, mode, **options)


def _dispatch(
    dyn: InnerDynamics, outer_loss: OuterLoss, z0: Tensor, hp: Mapping[str, Tensor], mode: str, **options: Any
) -> Hypergradient:
    if mode == "reverse":
        return reverse(dyn, outer_loss, z0, hp)
    if mode == "truncated":
        if "truncate" not in options:
            raise ValueError("mode='truncated' needs truncate=K (the number of last steps)")
        return reverse(dyn, outer_loss, z0, hp, truncate=options["truncate"])
    if mode == "checkpoint":
        return checkpointed(dyn, outer_loss, z0, hp, every=options.get("every"))
    if mode == "forward":
        return forward(dyn, outer_loss, z0, hp)
    if mode == "implicit":
        return implicit(
            dyn, outer_loss, z0, hp, **{k: v for k, v in options.items() if k in ("solver", "iters", "tol", "alpha")}
        )
    raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
