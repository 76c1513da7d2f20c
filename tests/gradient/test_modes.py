"""Hypergradient modes against closed forms (ridge regression) and finite differences."""

from __future__ import annotations

import pytest
import torch
from torch.func import vmap

from automl_bilevel.gradient import (
    SGD,
    Adam,
    BoxTensor,
    ForwardMode,
    HyperParameters,
    InnerDynamics,
    Momentum,
    Positive,
    PositiveTensor,
    hypergradient,
    implicit_grads,
)

EXACT = ["reverse", "checkpoint", "forward"]


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def ridge_data(n=40, nv=30, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    X, Xv = torch.randn(n, d, generator=g), torch.randn(nv, d, generator=g)
    w_true = torch.randn(d, generator=g)
    y = X @ w_true + 0.5 * torch.randn(n, generator=g)
    yv = Xv @ w_true + 0.5 * torch.randn(nv, generator=g)
    return X, y, Xv, yv


def ridge_problem(T=60, lr=0.1, optimizer=None, per_feature=False, seed=0):
    X, y, Xv, yv = ridge_data(seed=seed)
    d = X.shape[1]

    def inner(w, hp, t):
        return 0.5 * ((X @ w - y) ** 2).mean() + 0.5 * (hp["l2"] * w * w).sum()

    def outer(w, hp):
        return 0.5 * ((Xv @ w - yv) ** 2).mean()

    dyn = InnerDynamics(inner, optimizer or SGD(lr), d, T)
    l2 = torch.full((d,), 0.1) if per_feature else torch.tensor(0.1)
    return dyn, outer, dyn.init(torch.zeros(d)), {"l2": l2}, (X, y, Xv, yv)


def closed_form_unrolled(l2, T, lr, data):
    """E(w_T(λ)) for T steps of GD from 0 on the ridge problem: w_T = (I − (I − ηA)^T) A⁻¹ b."""
    X, y, Xv, yv = data
    n, d = X.shape
    A = X.T @ X / n + torch.diag(l2 * torch.ones(d))
    b = X.T @ y / n
    M = torch.linalg.matrix_power(torch.eye(d) - lr * A, T)
    wT = (torch.eye(d) - M) @ torch.linalg.solve(A, b)
    return 0.5 * ((Xv @ wT - yv) ** 2).mean()


def closed_form_optimum(l2, data):
    X, y, Xv, yv = data
    n, d = X.shape
    w = torch.linalg.solve(X.T @ X / n + torch.diag(l2 * torch.ones(d)), X.T @ y / n)
    return 0.5 * ((Xv @ w - yv) ** 2).mean()


def autograd_of(f, x):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(f(x), x)[0]


@pytest.mark.parametrize("mode", EXACT + ["truncated"])
@pytest.mark.parametrize("per_feature", [False, True])
def test_exact_modes_match_the_closed_form_of_unrolled_gd(mode, per_feature):
    T, lr = 60, 0.1
    dyn, outer, z0, hp, data = ridge_problem(T, lr, per_feature=per_feature)
    opts = {"truncate": T} if mode == "truncated" else {}
    res = hypergradient(dyn, outer, z0, hp, mode=mode, **opts)
    expected = autograd_of(lambda l2: closed_form_unrolled(l2, T, lr, data), hp["l2"])
    torch.testing.assert_close(res.grads["l2"], expected, rtol=1e-10, atol=1e-13)
    assert res.value == pytest.approx(float(closed_form_unrolled(hp["l2"], T, lr, data)), rel=1e-12)


@pytest.mark.parametrize(
    "solver, opts", [("cg", {}), ("neumann", {"alpha": 0.3, "iters": 400}), ("fixed_point", {"iters": 2000})]
)
def test_implicit_matches_the_closed_form_at_the_optimum(solver, opts):
    dyn, outer, z0, hp, data = ridge_problem(T=3000, lr=0.3)
    res = hypergradient(dyn, outer, z0, hp, mode="implicit", solver=solver, **opts)
    expected = autograd_of(lambda l2: closed_form_optimum(l2, data), hp["l2"])
    torch.testing.assert_close(res.grads["l2"], expected, rtol=1e-6, atol=1e-10)
    assert res.info["residual"] < 1e-6 and res.info["iterations"] >= 1


def test_truncated_is_an_approximation_that_improves_with_k():
    dyn, outer, z0, hp, data = ridge_problem(T=80)
    exact = hypergradient(dyn, outer, z0, hp, mode="reverse").grads["l2"]
    errs = [
        float((hypergradient(dyn, outer, z0, hp, mode="truncated", truncate=k).grads["l2"] - exact).abs())
        for k in (1, 10, 40)
    ]
    assert errs[0] > errs[1] > errs[2] > 0


def finite_difference(dyn, outer, z0, hp, name, index, h=1e-6):
    def value(delta):
        hp2 = {k: v.clone() for k, v in hp.items()}
        hp2[name].view(-1)[index] += delta
        z = dyn.run(z0, hp2)
        return float(outer(dyn.weights(z), hp2))

    return (value(h) - value(-h)) / (2 * h)


@pytest.mark.parametrize("optimizer", [Momentum("lr", "momentum"), Adam("lr")], ids=["momentum", "adam"])
def test_momentum_and_adam_with_learned_lr_against_finite_differences(optimizer):
    dyn, outer, z0, hp, _ = ridge_problem(T=40, optimizer=optimizer)
    hp = {**hp, "lr": torch.tensor(0.05)}
    if isinstance(optimizer, Momentum):
        hp["momentum"] = torch.tensor(0.8)
    results = {m: hypergradient(dyn, outer, z0, hp, mode=m) for m in EXACT}
    for name in hp:
        fd = finite_difference(dyn, outer, z0, hp, name, 0)
        for m, res in results.items():
            assert float(res.grads[name]) == pytest.approx(fd, rel=1e-6, abs=1e-9), (m, name)
        torch.testing.assert_close(
            results["reverse"].grads[name], results["forward"].grads[name], rtol=1e-10, atol=1e-14
        )
        torch.testing.assert_close(
            results["reverse"].grads[name], results["checkpoint"].grads[name], rtol=1e-10, atol=1e-14
        )


def test_per_example_weights_against_finite_differences():
    X, y, Xv, yv = ridge_data()

    def inner(w, hp, t):
        return 0.5 * (hp["ex"] * (X @ w - y) ** 2).mean() + 0.05 * (w * w).sum()

    def outer(w, hp):
        return 0.5 * ((Xv @ w - yv) ** 2).mean()

    dyn = InnerDynamics(inner, SGD(0.1), X.shape[1], 50)
    hp = {"ex": torch.full((len(X),), 0.5)}
    z0 = dyn.init(torch.zeros(X.shape[1]))
    res = hypergradient(dyn, outer, z0, hp, mode="checkpoint", every=7)
    for i in (0, 5, 17):
        assert float(res.grads["ex"][i]) == pytest.approx(
            finite_difference(dyn, outer, z0, hp, "ex", i), rel=1e-5, abs=1e-10
        )


def test_checkpoint_interval_does_not_change_the_result():
    dyn, outer, z0, hp, _ = ridge_problem(T=50)
    ref = hypergradient(dyn, outer, z0, hp, mode="reverse").grads["l2"]
    for every in (1, 3, 7, 50, 100):
        torch.testing.assert_close(
            hypergradient(dyn, outer, z0, hp, mode="checkpoint", every=every).grads["l2"], ref, rtol=1e-12, atol=1e-15
        )


def test_parametrisation_chain_rule():
    dyn, outer, z0, hp, data = ridge_problem(T=60)
    params = HyperParameters({"l2": Positive(0.1)}, dtype=torch.float64)
    res = hypergradient(dyn, outer, z0, params.values(), mode="reverse")
    g_raw = params.chain(res.grads)["l2"]
    # d/d log(l2) = l2 * d/d l2
    torch.testing.assert_close(g_raw, 0.1 * res.grads["l2"], rtol=1e-12, atol=0)
    box = HyperParameters({"w": BoxTensor(0.5, shape=(3,))}, dtype=torch.float64)
    with torch.no_grad():
        box.raw["w"] += torch.tensor([0.7, -0.9, 0.1])
    box.project()
    assert box.raw["w"].tolist() == pytest.approx([1.0, 0.0, 0.6])
    pf = HyperParameters({"l2": PositiveTensor(0.1, shape=(4,))})
    assert pf.export()["l2"].shape == (4,)


def test_rtho_updates_hyperparameters_during_one_run():
    dyn, outer, z0, hp, data = ridge_problem(T=200, lr=0.1)
    fm = ForwardMode(dyn, outer, z0, hp)
    log_l2, values = torch.log(hp["l2"]), []
    for _ in range(20):
        fm.advance(10)
        hg = fm.hypergradient()
        values.append(hg.value)
        log_l2 = log_l2 - 0.5 * hg.grads["l2"] * torch.exp(log_l2)
        fm.set_hp({"l2": torch.exp(log_l2)})
    assert fm.t == 200 and float(torch.exp(log_l2)) != pytest.approx(0.1)
    assert values[-1] < values[0]


def test_divergence_raises_instead_of_returning_nan():
    dyn, outer, z0, hp, _ = ridge_problem(T=200, lr=50.0)
    for mode in ("reverse", "checkpoint", "forward", "implicit"):
        with pytest.raises(FloatingPointError):
            hypergradient(dyn, outer, z0, hp, mode=mode)


def test_implicit_grads_is_pure_and_vmaps_over_tasks():
    tasks = [ridge_data(seed=s) for s in range(3)]
    d = tasks[0][0].shape[1]
    Xs = torch.stack([t[0] for t in tasks])
    ys = torch.stack([t[1] for t in tasks])
    Xvs = torch.stack([t[2] for t in tasks])
    yvs = torch.stack([t[3] for t in tasks])
    l2 = torch.tensor(0.1)

    def one(X, y, Xv, yv):
        n = X.shape[0]
        w = torch.linalg.solve(X.T @ X / n + l2 * torch.eye(d), X.T @ y / n)

        def inner(w_, hp):
            return 0.5 * ((X @ w_ - y) ** 2).mean() + 0.5 * hp["l2"] * (w_ * w_).sum()

        def outer(w_, hp):
            return 0.5 * ((Xv @ w_ - yv) ** 2).mean()

        return implicit_grads(inner, outer, w, {"l2": l2}, iters=d)["l2"]

    batched = vmap(one)(Xs, ys, Xvs, yvs)
    for i, t in enumerate(tasks):
        expected = autograd_of(lambda v, t=t: closed_form_optimum(v, t), l2)
        torch.testing.assert_close(batched[i], expected, rtol=1e-8, atol=1e-12)


def test_bad_arguments():
    dyn, outer, z0, hp, _ = ridge_problem(T=5)
    with pytest.raises(ValueError, match="unknown mode"):
        hypergradient(dyn, outer, z0, hp, mode="backwards")
    with pytest.raises(ValueError, match="needs truncate"):
        hypergradient(dyn, outer, z0, hp, mode="truncated")
    with pytest.raises(ValueError, match="unknown solver"):
        hypergradient(dyn, outer, z0, hp, mode="implicit", solver="lu")
    with pytest.raises(ValueError, match="alpha"):
        hypergradient(dyn, outer, z0, hp, mode="implicit", solver="neumann")
    with pytest.raises(ValueError, match="expect 6"):
        dyn.init(torch.zeros(3))


def test_a_module_as_outer_variable_against_finite_differences():
    """Hyper-representation in miniature: λ = a representation network, w = a linear head on top."""
    from torch.func import functional_call

    from automl_bilevel.gradient import ModuleParams

    X, y, Xv, yv = ridge_data(d=5)
    torch.manual_seed(0)
    rep = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh()).double()
    kind = ModuleParams(rep)
    params = HyperParameters({"rep": kind}, dtype=torch.float64)

    def features(hp, A):
        return functional_call(rep, kind.params(hp["rep"]), (A,))

    def inner(w, hp, t):
        return 0.5 * ((features(hp, X) @ w - y) ** 2).mean() + 0.01 * (w * w).sum()

    def outer(w, hp):
        return 0.5 * ((features(hp, Xv) @ w - yv) ** 2).mean()

    dyn = InnerDynamics(inner, SGD(0.2), 4, 30)
    z0 = dyn.init(torch.zeros(4))
    hp = params.values()
    res = {m: hypergradient(dyn, outer, z0, hp, mode=m) for m in ("reverse", "checkpoint", "forward")}
    for m in ("checkpoint", "forward"):
        torch.testing.assert_close(res[m].grads["rep"], res["reverse"].grads["rep"], rtol=1e-9, atol=1e-12)
    for i in (0, 7, 23):
        fd = finite_difference(dyn, outer, z0, {"rep": hp["rep"].detach()}, "rep", i)
        assert float(res["reverse"].grads["rep"][i]) == pytest.approx(fd, rel=1e-5, abs=1e-10)
