"""Devices on a CPU-only machine: ``device=`` on torch learners, learned components and hypergradients
(the GPU runs are benchmarks/device_check.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from automl_bilevel import Task
from automl_bilevel.gradient import hypergradient
from automl_bilevel.methods.learned import LossNetwork, LSTMOptimizer, MLPOptimizee, train_optimizee
from automl_bilevel.methods.learned.optimizer import LearnedOptimizer
from automl_bilevel.run.runtime import resolve_device
from automl_bilevel_plugins.learners.torch_learners import LogisticLearner, MLPLearner

TASK = Task("classification", 64, 10)
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


DIGITS = {"n": 400, "val": 200}  # the slice of the shared ``digits`` fixture (tests/conftest.py)


@pytest.mark.parametrize("device", ["cpu", "auto", torch.device("cpu")])
def test_learners_train_where_asked_and_predict_numpy(digits, device):
    X, y, Xv, yv = digits
    lrn = MLPLearner(epochs=10, lr=1e-2, hidden_units=16, device=device)
    model = lrn.fit(X, y, {}, task=TASK, seed=0)
    assert model.device == resolve_device(device)
    pred = model.predict(Xv)
    assert isinstance(pred, np.ndarray) and pred.shape == (200,) and np.mean(pred == yv) > 0.7
    proba = model.predict_proba(Xv)
    assert isinstance(proba, np.ndarray) and np.allclose(proba.sum(1), 1.0)


def test_the_device_does_not_change_the_numbers_on_cpu(digits):
    X, y, Xv, _ = digits
    a = LogisticLearner(epochs=3).fit(X, y, {}, task=TASK, seed=0).predict_proba(Xv)
    b = LogisticLearner(epochs=3, device="cpu").fit(X, y, {}, task=TASK, seed=0).predict_proba(Xv)
    c = LogisticLearner(epochs=3).fit(X, y, {"device": "cpu"}, task=TASK, seed=0).predict_proba(Xv)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_a_fitted_model_pickles_and_predicts_on_cpu(digits):
    X, y, Xv, _ = digits
    model = MLPLearner(epochs=3, hidden_units=16, device="auto").fit(X, y, {}, task=TASK, seed=0)
    loaded = pickle.loads(pickle.dumps(model))
    assert loaded.device.type == "cpu"
    np.testing.assert_allclose(loaded.predict_proba(Xv), model.predict_proba(Xv), rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@needs_cuda
def test_on_cuda_training_and_hypergradients_agree_with_the_cpu(digits):
    """Where a GPU is present (``-m gpu``): a learner trains on it, its model comes back CPU-loadable,
    and its predictions agree with the same training on the CPU."""
    X, y, Xv, _ = digits
    gpu = LogisticLearner(epochs=3, device="cuda").fit(X, y, {}, task=TASK, seed=0)
    cpu = LogisticLearner(epochs=3, device="cpu").fit(X, y, {}, task=TASK, seed=0)
    assert gpu.device.type == "cuda"
    loaded = pickle.loads(pickle.dumps(gpu))
    assert loaded.device.type == "cpu"
    np.testing.assert_allclose(gpu.predict_proba(Xv), cpu.predict_proba(Xv), rtol=1e-3, atol=1e-4)


@no_cuda
def test_cuda_without_cuda_fails_before_any_work(digits):
    with pytest.raises(ValueError, match="device 'cuda' requested but CUDA is not available"):
        MLPLearner(device="cuda")
    X, y, _, _ = digits
    with pytest.raises(ValueError, match="device 'cuda:1' requested but CUDA is not available"):
        LogisticLearner().fit(X, y, {"device": "cuda:1"}, task=TASK, seed=0)


@pytest.mark.parametrize("device", ["gpu", "cuda:first", 7])
def test_a_malformed_device_is_refused_by_the_learner(device):
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda', 'cuda:N'"):
        LogisticLearner(device=device)


def test_data_and_hyperparameters_move_once_per_fit(digits):
    X, y, Xv, yv = digits
    dt = MLPLearner(epochs=2, batch_size=64, hidden_units=8, device="cpu").differentiable(
        X, y, {"l2_per_feature": np.full(64, 1e-3)}, task=TASK, seed=0
    )
    dev = torch.device("cpu")
    tensors = [dt.Xt, dt.yt, dt.z0, dt.tensor(Xv), dt.targets(yv), *dt.constants.values(), *dt.batches]
    assert dt.device == dev and all(t.device == dev for t in tensors)
    assert all(p.device == dev for p in dt.module.parameters())


def test_hypergradients_come_back_on_each_hyperparameters_device(digits):
    X, y, Xv, yv = digits
    dt = LogisticLearner(epochs=2, batch_size=1000, device="auto").differentiable(X, y, {}, task=TASK, seed=0)
    Xv_t, yv_t = dt.tensor(Xv), dt.targets(yv)

    def outer(w, hp):
        return torch.nn.functional.cross_entropy(dt.outputs(w, Xv_t), yv_t)

    cpu_hp = {k: v.cpu() for k, v in dt.constants.items()}  # an outer optimizer's values live on the CPU
    for mode in ("reverse", "checkpoint", "forward", "implicit"):
        res = hypergradient(dt.dynamics, outer, dt.z0, cpu_hp, mode=mode, alpha=0.01)
        assert all(g.device.type == "cpu" and torch.isfinite(g).all() for g in res.grads.values()), mode
    ref = hypergradient(dt.dynamics, outer, dt.z0, dict(dt.constants), mode="reverse")
    got = hypergradient(dt.dynamics, outer, dt.z0, cpu_hp, mode="reverse")
    torch.testing.assert_close(got.grads["lr"], ref.grads["lr"].cpu())
    with pytest.raises(ValueError, match="unknown mode 'sideways'"):
        hypergradient(dt.dynamics, outer, dt.z0, cpu_hp, mode="sideways")


def test_a_loss_network_and_a_learned_optimizer_stay_where_the_user_put_them(digits):
    X, y, Xv, _ = digits
    net, opt = LossNetwork(10, seed=0), LSTMOptimizer(hidden=4, layers=1)
    lrn = MLPLearner(epochs=1, hidden_units=8, loss=net, optimizer=opt, device="cpu")
    lrn.fit(X, y, {}, task=TASK, seed=0).predict(Xv)
    assert next(net.parameters()).device.type == "cpu" and next(opt.parameters()).device.type == "cpu"


def test_optimizee_on_a_device_and_a_learned_optimizer_elsewhere_is_a_clear_error(digits):
    X, y, _, _ = digits
    optimizee = MLPOptimizee(X, y, hidden=(8,), device="cpu", seed=0)
    assert optimizee.X.device.type == "cpu" and optimizee.w0.device.type == "cpu"
    w, losses = train_optimizee(LearnedOptimizer(LSTMOptimizer(hidden=4, layers=1)), optimizee, steps=3)
    assert w.device.type == "cpu" and len(losses) == 3
    elsewhere = LSTMOptimizer(hidden=4, layers=1).to("meta")  # a device the weights are not on
    with pytest.raises(ValueError, match="learned optimizer is on meta but the weights are on cpu"):
        train_optimizee(LearnedOptimizer(elsewhere), optimizee, steps=1)
    with pytest.raises(ValueError, match="device must be"):
        MLPOptimizee(X, y, device="tpu")


def test_saved_components_load_on_the_cpu(tmp_path):
    net = LossNetwork(10, seed=0)
    net.save(tmp_path / "loss.pt")
    loaded = LossNetwork.load(tmp_path / "loss.pt")
    assert next(loaded.parameters()).device.type == "cpu"
    torch.testing.assert_close(loaded.flat(), net.flat())
