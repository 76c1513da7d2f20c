"""Segment hypergradients of online HO against exact reverse mode and finite differences."""

from __future__ import annotations

import torch

from automl_bilevel.gradient import SGD, InnerDynamics, Momentum, reverse
from automl_bilevel.gradient.online import ForwardCarry, piecewise_run, segment_reverse

torch.manual_seed(0)
N, D, C = 40, 5, 3
X = torch.randn(N, D, dtype=torch.float64)
Y = torch.randint(0, C, (N,))
XV = torch.randn(30, D, dtype=torch.float64)
YV = torch.randint(0, C, (30,))
BATCHES = [torch.randperm(N)[:16] for _ in range(12)]


def inner_loss(w, hp, t):
    idx = BATCHES[t % len(BATCHES)] if t is not None else slice(None)
    W = w.view(D, C)
    ce = torch.nn.functional.cross_entropy(X[idx] @ W, Y[idx])
    return ce + 0.5 * hp["weight_decay"] * (w * w).sum()


def outer_loss(w, hp):
    return torch.nn.functional.cross_entropy(XV @ w.view(D, C), YV)


def dynamics(opt=None, T=12):
    return InnerDynamics(inner_loss, opt or Momentum("lr", "momentum"), D * C, T)


def values(lr=0.3, wd=0.01):
    return {"lr": torch.tensor(lr, dtype=torch.float64), "weight_decay": torch.tensor(wd, dtype=torch.float64)}


CONST = {"momentum": torch.tensor(0.5, dtype=torch.float64)}
Z0 = dynamics().init(0.1 * torch.randn(D * C, dtype=torch.float64))


def test_a_whole_segment_from_the_start_is_exact_reverse_mode():
    dyn = dynamics()
    ref = reverse(dyn, outer_loss, Z0, {**CONST, **values()})
    value, grads, z = segment_reverse(dyn, outer_loss, Z0, values(), CONST, 0, dyn.T)
    assert abs(value - ref.value) < 1e-12
    for k in ("lr", "weight_decay"):
        torch.testing.assert_close(grads[k], ref.grads[k])
    torch.testing.assert_close(z, ref.z)


def test_a_mid_run_segment_matches_finite_differences():
    dyn = dynamics()
    z4 = dyn.run(Z0, {**CONST, **values()}, 0, 4)
    _, grads, _ = segment_reverse(dyn, outer_loss, z4, values(), CONST, 4, 10)
    eps = 1e-6
    for k in ("lr", "weight_decay"):
        up, down = values(), values()
        up[k] = up[k] + eps
        down[k] = down[k] - eps
        f = [outer_loss(dyn.weights(dyn.run(z4, {**CONST, **v}, 4, 10)), v) for v in (up, down)]
        fd = float(f[0] - f[1]) / (2 * eps)
        assert abs(float(grads[k]) - fd) < 1e-6 * max(1.0, abs(fd)), (k, float(grads[k]), fd)


def test_truncation_only_unrolls_the_last_steps():
    dyn = dynamics()
    _, full, z_full = segment_reverse(dyn, outer_loss, Z0, values(), CONST, 0, 8)
    _, short, z_short = segment_reverse(dyn, outer_loss, Z0, values(), CONST, 0, 8, truncate=2)
    torch.testing.assert_close(z_short, z_full)  # the same run
    # the truncated estimate is the exact gradient of the last 2 steps from the state at step 6
    z6 = dyn.run(Z0, {**CONST, **values()}, 0, 6)
    _, last2, _ = segment_reverse(dyn, outer_loss, z6, values(), CONST, 6, 8)
    torch.testing.assert_close(short["lr"], last2["lr"])
    assert not torch.allclose(short["lr"], full["lr"])


def test_forward_carry_equals_reverse_mode_over_a_whole_run():
    dyn = dynamics()
    carry = ForwardCarry(dyn, values())
    z = carry.advance(Z0, values(), CONST, 0, 5)
    z = carry.advance(z, values(), CONST, 5, dyn.T)  # in two segments, the same values
    value, grads = carry.hypergradient(outer_loss, z, values(), CONST)
    ref = reverse(dyn, outer_loss, Z0, {**CONST, **values()})
    assert abs(value - ref.value) < 1e-12
    for k in ("lr", "weight_decay"):
        torch.testing.assert_close(grads[k], ref.grads[k])


def test_forward_carry_through_a_change_of_values_is_the_derivative_of_a_shift_of_all_of_them():
    """RTHO keeps the tangents when λ changes: the result is d E / d δ where every segment trains with
    its own λ_k + δ (finite differences of exactly that)."""
    dyn = dynamics(SGD("lr"))
    z0 = Z0[: D * C]
    first, second = values(0.3, 0.01), values(0.5, 0.03)
    carry = ForwardCarry(dyn, first)
    z = carry.advance(z0, first, {}, 0, 6)
    z = carry.advance(z, second, {}, 6, dyn.T)
    _, grads = carry.hypergradient(outer_loss, z, second, {})
    eps = 1e-6
    for k in ("lr", "weight_decay"):

        def run(delta, k=k):
            a, b = dict(first), dict(second)
            a[k], b[k] = a[k] + delta, b[k] + delta
            zz = dyn.run(z0, a, 0, 6)
            return float(outer_loss(dyn.weights(dyn.run(zz, b, 6, dyn.T)), b))

        fd = (run(eps) - run(-eps)) / (2 * eps)
        assert abs(float(grads[k]) - fd) < 1e-6 * max(1.0, abs(fd)), (k, float(grads[k]), fd)


def test_piecewise_run_replays_a_schedule():
    dyn = dynamics(SGD("lr"))
    z0 = Z0[: D * C]
    first, second = values(0.3, 0.01), values(0.5, 0.03)
    z = piecewise_run(dyn, z0, lambda t: first if t < 6 else second)
    ref = dyn.run(dyn.run(z0, first, 0, 6), second, 6, dyn.T)
    torch.testing.assert_close(z, ref)
