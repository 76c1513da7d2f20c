"""Implicit hypergradients of a non-quadratic inner problem (softmax regression, per-feature L2)
against the exact implicit hypergradient, a dense Hessian solve at a converged optimum."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, hessian, jacrev

from automl_bilevel.gradient import SGD, InnerDynamics, hypergradient

D, K = 6, 3


@pytest.fixture(scope="module")
def problem():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(120, D, generator=gen, dtype=torch.float64)
    y = (X[:, :K] + 0.5 * torch.randn(120, K, generator=gen, dtype=torch.float64)).argmax(1)
    Xt, yt, Xv, yv = X[:80], y[:80], X[80:], y[80:]
    n = (D + 1) * K

    def logits(w, X_):
        return X_ @ w[: D * K].view(K, D).T + w[D * K :]

    def inner(w, hp, t=None):
        W = w[: D * K].view(K, D)
        return F.cross_entropy(logits(w, Xt), yt) + 0.5 * (hp["l2"] * W * W).sum() + 5e-3 * (w * w).sum()

    def outer(w, hp):
        return F.cross_entropy(logits(w, Xv), yv)

    hp = {"l2": torch.linspace(0.01, 0.2, D, dtype=torch.float64)}
    w = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-13, tolerance_change=0, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = inner(w, hp)
        loss.backward()
        return loss

    opt.step(closure)
    w = w.detach()
    for _ in range(5):  # Newton steps from there: converged to float64 precision
        w = w - torch.linalg.solve(hessian(lambda v: inner(v, hp))(w), grad(lambda v: inner(v, hp))(w))
    assert grad(lambda v: inner(v, hp))(w).norm() < 1e-12  # converged: the implicit function theorem holds
    H = hessian(lambda v: inner(v, hp))(w)
    mixed = jacrev(lambda h: grad(lambda v: inner(v, h))(w))(hp)["l2"]
    exact = -(mixed.T @ torch.linalg.solve(H, grad(lambda v: outer(v, hp))(w)))
    L = float(torch.linalg.eigvalsh(H).max())
    return inner, outer, hp, w, n, exact, L


@pytest.mark.parametrize("solver, iters", [("cg", 50), ("neumann", 3000), ("fixed_point", 3000)])
def test_implicit_solvers_reach_the_exact_hypergradient(problem, solver, iters):
    inner, outer, hp, w, n, exact, L = problem
    dyn = InnerDynamics(inner, SGD(lr=1.0 / L), n, 1)
    z = dyn.init(w)
    res = hypergradient(dyn, outer, z, hp, mode="implicit", solver=solver, iters=iters, tol=1e-14, alpha=1.0 / L)
    err = float((res.grads["l2"] - exact).norm() / exact.norm())
    assert err < 1e-6, err
    few = hypergradient(dyn, outer, z, hp, mode="implicit", solver=solver, iters=2, tol=1e-14, alpha=1.0 / L)
    assert float((few.grads["l2"] - exact).norm() / exact.norm()) > 10 * err  # iterations matter


def test_implicit_at_w_star_given_skips_the_run(problem):
    from automl_bilevel.gradient.modes import implicit

    inner, outer, hp, w, n, exact, L = problem
    dyn = InnerDynamics(inner, SGD(lr=1.0 / L), n, 10_000)  # running 10k steps would be slow: warm_z skips it
    res = implicit(
        dyn, outer, dyn.init(torch.zeros(n, dtype=torch.float64)), hp, warm_z=dyn.init(w), iters=50, tol=1e-14
    )
    torch.testing.assert_close(res.grads["l2"], exact, rtol=1e-6, atol=1e-12)
