"""The learned optimizer (L2O-DM) and its flatness-aware regularizers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from automl_bilevel import BilevelClassifier
from automl_bilevel.gradient import SGD
from automl_bilevel.methods.learned import (
    LearnedOptimizer,
    LSTMOptimizer,
    MLPOptimizee,
    hessian_trace,
    local_entropy,
    meta_train_optimizer,
    preprocess,
    top_eigenvalue,
    train_optimizee,
)
from automl_bilevel_plugins.learners.torch_learners import MLPLearner


def quadratic(A):
    return lambda w: 0.5 * w @ A @ w


@pytest.fixture
def spd():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(6, 6, generator=g, dtype=torch.float64)
    return M @ M.T + 0.5 * torch.eye(6, dtype=torch.float64)


def test_preprocessing_follows_the_paper():
    g = torch.tensor([1.0, -0.5, 1e-6, -1e-6, 0.0])
    x = preprocess(g, p=10.0)
    assert torch.allclose(x[:2, 0], torch.log(torch.tensor([1.0, 0.5])) / 10)
    assert x[:2, 1].tolist() == [1.0, -1.0]
    assert x[2:, 0].tolist() == [-1.0, -1.0, -1.0]  # |g| < e^-10 ≈ 4.5e-5
    assert torch.allclose(x[2:, 1], math.exp(10) * g[2:])


def test_hutchinson_trace_is_unbiased_and_differentiable(spd):
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    est = hessian_trace(quadratic(spd), w, samples=4000, generator=torch.Generator().manual_seed(1))
    assert float(est) == pytest.approx(float(torch.trace(spd)), rel=0.05)
    f = lambda v: (v**4).sum()  # H = diag(12 v²): trace 12‖v‖², gradient 24 v  # noqa: E731
    t = hessian_trace(f, w, samples=3)  # exact for a diagonal Hessian (v² = 1)
    (grad,) = torch.autograd.grad(t, w)
    assert torch.allclose(grad, 24 * w.detach())


def test_power_iteration_finds_the_top_eigenvalue(spd):
    w = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    lam = top_eigenvalue(quadratic(spd), w, iters=200, generator=torch.Generator().manual_seed(0))
    assert float(lam) == pytest.approx(float(torch.linalg.eigvalsh(spd)[-1]), rel=1e-6)


def test_local_entropy_gradient_points_to_the_sgld_mean(spd):
    w = torch.ones(6, dtype=torch.float64, requires_grad=True)
    r = local_entropy(quadratic(spd), w, gamma=0.5, steps=50, lr=0.01, noise=0.0)
    (grad,) = torch.autograd.grad(r, w)
    # without noise the chain descends f: its mean lies downhill, so the gradient points uphill of f
    assert float(grad @ (spd @ w.detach())) > 0 and float(r) > 0


def test_the_learned_optimizer_is_a_functional_inner_optimizer():
    net = LSTMOptimizer(seed=0)
    lo = LearnedOptimizer(net)
    w, g = torch.zeros(5), torch.randn(5)
    slots = tuple(torch.zeros(5) for _ in range(lo.n_slots))
    w2, slots2 = lo.update(w, slots, g, {}, 0)
    assert w2.shape == (5,) and len(slots2) == lo.n_slots == 80 and not torch.equal(w2, w)
    with pytest.raises(ValueError, match="hidden"):
        LSTMOptimizer(hidden=0)


def test_meta_training_makes_a_better_optimizer_and_rejects_divergence():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0

    def make(seed):
        return MLPOptimizee(X[:1200], y[:1200], hidden=(20,), batch_size=64, seed=seed)

    net = LSTMOptimizer(seed=0)
    before, _ = train_optimizee(LearnedOptimizer(net), make(100), 60)
    hist = meta_train_optimizer(
        net,
        make,
        meta_iters=25,
        unroll=10,
        horizon=60,
        meta_lr=3e-3,
        regularizer="eigenvalue",
        alpha=1e-3,
        reg_options={"iters": 2},
    )
    after, _ = train_optimizee(LearnedOptimizer(net), make(100), 60)
    test = make(100)
    assert test.accuracy(after, X[1200:], y[1200:]) > test.accuracy(before, X[1200:], y[1200:]) + 0.1
    assert hist["meta_loss"][-1] < hist["meta_loss"][0] and len(hist["regularizer"]) == 25

    wild = LSTMOptimizer(seed=0, output_scale=1e38)  # an optimizer network that diverges
    hist = meta_train_optimizer(wild, make, meta_iters=2, unroll=3, horizon=6)
    assert len(hist["rejected"]) == 2 and "diverged" in hist["rejected"][0][1]
    with pytest.raises(FloatingPointError, match="diverged"):
        train_optimizee(LearnedOptimizer(wild), make(0), 5)
    with pytest.raises(ValueError, match="regularizer"):
        meta_train_optimizer(net, make, regularizer="sharpness")
    sgd, _ = train_optimizee(SGD(lr=0.5), make(100), 60)
    assert np.isfinite(test.accuracy(sgd, X[1200:], y[1200:]))


def test_a_learned_optimizer_trains_any_torch_learner():
    X, y = load_digits(return_X_y=True)
    net = LSTMOptimizer(seed=0)
    meta_train_optimizer(
        net,
        lambda s: MLPOptimizee(X[:1200] / 16.0, y[:1200], hidden=(20,), batch_size=64, seed=s),
        meta_iters=25,
        unroll=10,
        horizon=60,
        meta_lr=3e-3,
    )
    est = BilevelClassifier(
        MLPLearner(optimizer=net, epochs=10, hidden_units=20, activation="tanh"),
        "val_error",
        "random",
        search_space={"weight_decay": (1e-6, 1e-3, "log")},
        n_iter=2,
        tracking=False,
        random_state=0,
    ).fit(X[:500], y[:500])
    assert est.score(X[500:800], y[500:800]) > 0.5
    diverging = MLPLearner(optimizer=LSTMOptimizer(seed=0, output_scale=1e38), epochs=2, hidden_units=8)
    est = BilevelClassifier(
        diverging,
        "val_error",
        "random",
        search_space={"weight_decay": (1e-6, 1e-3, "log")},
        n_iter=2,
        tracking=False,
        random_state=0,
    )
    with pytest.raises(Exception, match="all 2 trials failed"):
        est.fit(X[:300], y[:300])


def test_bad_optimizees_are_refused():
    X, y = load_digits(return_X_y=True)
    with pytest.raises(ValueError, match="activation"):
        MLPOptimizee(X, y, activation="swish")
    with pytest.raises(ValueError, match="one label per row"):
        MLPOptimizee(X, y[:10])
