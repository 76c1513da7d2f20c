"""The meta-loss network: as the loss of a torch learner, evolved by ES, trained by hypergradients (ML3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from automl_bilevel import BilevelClassifier, Task
from automl_bilevel.gradient import hypergradient
from automl_bilevel.methods.learned import (
    LossNetwork,
    LossNetworkError,
    load_loss_network,
    sample_tasks,
    save_loss_network,
)
from automl_bilevel.methods.recipes.metaloss import (
    evaluate_loss,
    evolve_loss_network,
    mlp_learner,
    train_loss_network_ml3,
)

DIGITS = {"scaled": True}  # the slice of the shared ``digits`` fixture (tests/conftest.py)


@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_the_default_start_is_cross_entropy_and_functional_form_agrees(activation):
    net = LossNetwork(4, activation=activation)
    probs = torch.softmax(3 * torch.randn(64, 4, generator=torch.Generator().manual_seed(0)), 1).requires_grad_(True)
    y = torch.arange(64) % 4
    onehot = torch.nn.functional.one_hot(y, 4).float()
    value = net(probs, onehot)
    assert net.functional(net.flat(), probs, onehot).detach().item() == pytest.approx(value.detach().item(), rel=1e-6)
    assert net(onehot, onehot).item() == pytest.approx(0.0, abs=1e-3)  # a perfect prediction costs nothing
    (g,) = torch.autograd.grad(value, probs)
    p_true = probs[torch.arange(64), y].detach()
    slope = -64 * g[torch.arange(64), y]  # d loss / d p_true per example
    inside = (p_true > 0.1) & (p_true < 0.9)
    assert inside.sum() > 10
    # the slope of −log p, 1/p, to within the piecewise fit (a ReLU hinge is exact at the knots only)
    assert torch.allclose(slope[inside], 1 / p_true[inside], rtol=0.45)
    wrong = torch.ones_like(onehot, dtype=torch.bool)
    wrong[torch.arange(64), y] = False
    assert float(g[wrong].abs().max()) < 1e-3  # the other classes do not enter, as in cross-entropy


def test_other_starts_and_bad_settings():
    net = LossNetwork(4, init="one_minus_p", gain=10.0, activation="relu")
    probs = torch.softmax(torch.randn(6, 4), 1)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    onehot = torch.nn.functional.one_hot(y, 4).float()
    expect = 10.0 * (1 - probs[torch.arange(6), y]).mean()
    assert net(probs, onehot).item() == pytest.approx(float(expect), rel=1e-5)
    with pytest.raises(LossNetworkError, match="3 classes; this loss network expects 4"):
        net(probs[:, :3], onehot[:, :3])
    with pytest.raises(LossNetworkError, match="expected"):
        net.functional(torch.zeros(5), probs, onehot)
    with pytest.raises(ValueError, match="init"):
        LossNetwork(4, init="xavier")
    with pytest.raises(ValueError, match="activation"):
        LossNetwork(4, activation="tanh")
    with pytest.raises(ValueError, match="hidden >= 10"):
        LossNetwork(4, hidden=4)


def test_training_with_the_default_start_is_at_least_as_good_as_cross_entropy(digits):
    X, y = digits
    tasks = sample_tasks(X, y, 4, n_train=(30, 60), n_val=300, seed=0)
    ce = np.mean(evaluate_loss("default", tasks, n_classes=10))
    mse = np.mean(evaluate_loss("mse", tasks, n_classes=10))
    start = np.mean(evaluate_loss(LossNetwork(10), tasks, n_classes=10))
    assert start > max(ce - 0.05, mse + 0.1)  # (its slope is capped at 1/0.02 and smoothed, so not equal)


def test_save_and_load_round_trip(tmp_path):
    for net in (LossNetwork(10, init="random", seed=3), LossNetwork(10, gain=2.0, activation="relu")):
        save_loss_network(net, tmp_path / "loss.pt")
        back = load_loss_network(tmp_path / "loss.pt")
        assert torch.equal(back.flat(), net.flat()) and back.settings() == net.settings()
    with pytest.raises(FileNotFoundError, match="no saved loss network"):
        LossNetwork.load(tmp_path / "missing.pt")
    torch.save({"kind": "learned_optimizer", "state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not hold a saved loss network"):
        LossNetwork.load(tmp_path / "other.pt")


def test_a_loss_network_is_the_loss_of_any_torch_learner_and_bad_ones_fail_the_trial(digits):
    X, y = digits
    est = BilevelClassifier(
        mlp_learner(LossNetwork(10)),
        "val_error",
        "random",
        search_space={"lr": (0.05, 0.2)},
        n_iter=2,
        tracking=False,
        random_state=0,
    ).fit(X[:400], y[:400])
    assert est.score(X[400:800], y[400:800]) > 0.5  # the cross-entropy start trains
    few = BilevelClassifier(
        mlp_learner(LossNetwork(5)),
        "val_error",
        "random",
        search_space={"lr": (0.05, 0.2)},
        n_iter=2,
        tracking=False,
        random_state=0,
    )
    with pytest.raises(Exception, match="this loss network expects 5"):
        few.fit(X[:400], y[:400])  # every trial failed, each with the reason
    nan_net = LossNetwork(10)
    with torch.no_grad():
        nan_net.net[0].weight.fill_(math.nan)
    bad = BilevelClassifier(
        mlp_learner(nan_net),
        "val_error",
        "es",
        n_iter=4,
        tracking=False,
        random_state=0,
        optimizer_params={"strategy": "mu_plus_lambda", "population_size": 2},
    )
    with pytest.raises(Exception, match="all 4 trials failed"):
        bad.fit(X[:300], y[:300])
    assert all(s == "FAILED" for s in bad.history_["status"]) if hasattr(bad, "history_") else True


def test_es_evolves_a_loss_that_trains_better(digits):
    X, y = digits
    train = sample_tasks(X[:1000], y[:1000], 3, n_train=(30, 50), n_val=300, seed=0)
    test = sample_tasks(X[1000:], y[1000:], 4, n_train=(30, 50), n_val=300, seed=1)
    weak = LossNetwork(10, init="one_minus_p", gain=10.0, activation="relu")  # a start with room to improve
    start = np.mean(evaluate_loss(weak, test, n_classes=10))
    net, res = evolve_loss_network(train, n_classes=10, n_evaluations=40, population_size=10, sigma0=0.05, net=weak)
    assert res.best.value < min(t.value for t in res.trials[:10])  # better than anything in generation 1
    assert np.mean(evaluate_loss(net, test, n_classes=10)) > start + 0.1  # and it transfers to unseen tasks


def test_ml3_hypergradient_agrees_across_independent_modes(digits):
    # reverse (backprop through the unroll), forward (jvp tangents) and checkpointed reverse are
    # separate algorithms; they are checked against finite differences on smooth problems in
    # tests/hypergrad. A ReLU loss network is piecewise linear with very small pieces, where finite
    # differences in float32 do not converge, so here the modes are checked against each other.
    X, y = digits
    split = sample_tasks(X, y, 1, n_train=30, n_val=200, seed=0)[0]
    learner = mlp_learner(LossNetwork(10, init="random", seed=1), inner_steps=5, hidden_units=16, lr=1.0)
    dt = learner.differentiable(split.X_train, split.y_train, {}, task=Task("classification", 64, 10), seed=0)
    Xv, yv = dt.tensor(split.X_val), dt.targets(split.y_val)

    def outer(w, hp):
        return torch.nn.functional.cross_entropy(dt.outputs(w, Xv), yv)

    grads = {
        m: hypergradient(
            dt.dynamics,
            outer,
            dt.z0,
            {"loss_net": dt.constants["loss_net"], **{k: v for k, v in dt.constants.items() if k != "loss_net"}},
            mode=m,
        ).grads["loss_net"]
        for m in ("reverse", "forward", "checkpoint")
    }
    assert float(grads["reverse"].abs().max()) > 0
    for m in ("forward", "checkpoint"):
        assert torch.allclose(grads[m], grads["reverse"], rtol=1e-3, atol=1e-6)


def test_ml3_training_lowers_the_validation_loss(digits):
    X, y = digits
    tasks = sample_tasks(X, y, 1, n_train=40, n_val=300, seed=0)
    net, res = train_loss_network_ml3(tasks, n_classes=10, outer_steps=15, outer_lr=1e-2, inner_steps=10)
    assert len(res.values) + len(res.rejected) == 15
    assert np.mean(res.values[-3:]) < np.mean(res.values[:3])


def test_ml3_numbers_rejected_steps_like_held_out_checks_and_l2o(digits):
    """A rejected step is reported by its step number from 0, as held-out checks and L2O's rejected
    steps are (it was reported one higher)."""
    X, y = digits
    tasks = sample_tasks(X, y, 2, n_train=40, n_val=100, seed=0)
    _, res = train_loss_network_ml3(
        tasks[:1], n_classes=10, outer_steps=4, outer_lr=1e6, inner_steps=5, held_out=tasks[1:], eval_every=1
    )
    assert res.search is not None
    failed = [t.number for t in res.search.trials if not t.ok]
    assert failed, "an outer learning rate of 1e6 must make some step diverge"
    assert [step for step, _ in res.rejected] == failed
    assert {step for step, _ in res.held_out} <= set(range(4)) and max(failed) <= 3


def test_sample_tasks_refuses_impossible_sizes(digits):
    X, y = digits
    with pytest.raises(ValueError, match="one training example per class"):
        sample_tasks(X, y, 1, n_train=5)
    with pytest.raises(ValueError, match="available"):
        sample_tasks(X[:100], y[:100], 1, n_train=50, n_val=100)


def test_ml3_keeps_the_state_best_on_held_out_tasks(digits):
    X, y = digits
    tasks = sample_tasks(X[:1000], y[:1000], 4, n_train=40, n_val=300, seed=0)
    held = sample_tasks(X[1000:], y[1000:], 2, n_train=40, n_val=300, seed=1)
    net, res = train_loss_network_ml3(
        tasks,
        n_classes=10,
        outer_steps=6,
        outer_lr=3e-2,
        inner_steps=5,
        tasks_per_step=2,
        truncate=3,
        held_out=held,
        eval_every=3,
    )
    assert [s for s, _ in res.held_out] == [0, 3, 5]  # every 3 steps from the start, and the last step
    best_step, best_acc = max(res.held_out, key=lambda h: h[1])
    assert res.best_step == best_step
    again = np.mean(evaluate_loss(net, held, n_classes=10, inner_steps=5))
    assert again == pytest.approx(best_acc, abs=1e-9)  # the returned network is the one that scored best
    with pytest.raises(ValueError, match="tasks_per_step >= 1"):
        train_loss_network_ml3(tasks, n_classes=10, tasks_per_step=0)
