"""Linear solvers for implicit hypergradients; each reports iterations and relative residual.

All take a matrix-free operator ``A(v)`` and plain tensors, so they compose with torch.func.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SolveInfo:
    """How a linear solve went: the ``iterations`` run and the final relative ``residual``."""

    iterations: int
    residual: float  # ‖A x − b‖ / ‖b‖ (for fixed_point: ‖x_k − x_{k−1}‖ / ‖x_k‖)


def _rel(r: Tensor, b: Tensor) -> float:
    nb = float(torch.linalg.vector_norm(b))
    return float(torch.linalg.vector_norm(r)) / (nb if nb > 0 else 1.0)


def cg_solve(A: Callable[[Tensor], Tensor], b: Tensor, iters: int = 50) -> Tensor:
    """Conjugate gradient with a fixed number of iterations and no data-dependent branches, so it
    can run under ``torch.func.vmap`` (e.g. one implicit hypergradient per task in a batch)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = torch.dot(r, r)
    tiny = torch.finfo(b.dtype).tiny
    for _ in range(iters):
        Ap = A(p)
        alpha = rs / torch.clamp(torch.dot(p, Ap), min=tiny)
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = torch.dot(r, r)
        p = r + (rs_new / torch.clamp(rs, min=tiny)) * p
        rs = rs_new
    return x


def conjugate_gradient(
    A: Callable[[Tensor], Tensor], b: Tensor, iters: int = 100, tol: float = 1e-10, x0: Tensor | None = None
) -> tuple[Tensor, SolveInfo]:
    """Solve A x = b for symmetric positive (semi-)definite A (the inner Hessian)."""
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - A(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = torch.dot(r, r)
    bb = torch.dot(b, b)
    k = 0
    for k in range(1, iters + 1):  # noqa: B007 - k is the iteration count reported after the loop
        Ap = A(p)
        pAp = torch.dot(p, Ap)
        if pAp <= 0:  # not positive definite along p: stop with what we have
            break
        alpha = rs / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = torch.dot(r, r)
        if rs_new <= (tol**2) * bb:
            break
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x, SolveInfo(k, _rel(b - A(x), b))


def neumann(A: Callable[[Tensor], Tensor], b: Tensor, alpha: float, iters: int = 100) -> tuple[Tensor, SolveInfo]:
    """x = α Σ_{k=0}^{K} (I − αA)^k b ≈ A⁻¹ b; converges when ‖I − αA‖ < 1."""
    term = b.clone()
    acc = b.clone()
    for _ in range(iters):
        term = term - alpha * A(term)
        acc = acc + term
    x = alpha * acc
    return x, SolveInfo(iters, _rel(b - A(x), b))


def fixed_point(
    T: Callable[[Tensor], Tensor], b: Tensor, iters: int = 100, tol: float = 1e-10
) -> tuple[Tensor, SolveInfo]:
    """Iterate x ← T(x) + b from x = b; converges when T is a contraction."""
    x = b.clone()
    res, k = float("inf"), 0
    for k in range(1, iters + 1):  # noqa: B007 - k is the iteration count reported after the loop
        x_new = T(x) + b
        res = _rel(x_new - x, x_new)
        x = x_new
        if res <= tol:
            break
    return x, SolveInfo(k, res)
