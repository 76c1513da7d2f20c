"""The torch learners' differentiable training: modes agree, fit runs the same dynamics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from automl_bilevel import Task
from automl_bilevel.gradient import hypergradient
from automl_bilevel_plugins.learners.torch_learners import LogisticLearner, MLPLearner

DIGITS = {"n": 600, "val": 300}  # the slice of the shared ``digits`` fixture (tests/conftest.py)


def task_of(learner, digits, **cfg):
    X, y, Xv, yv = digits
    dt = learner.differentiable(X, y, cfg, task=Task("classification", 64, 10), seed=0)
    Xv_t, yv_t = dt.tensor(Xv), dt.targets(yv)

    def outer(w, hp):
        return torch.nn.functional.cross_entropy(dt.outputs(w, Xv_t), yv_t)

    return dt, outer


@pytest.mark.parametrize(
    "learner",
    [
        LogisticLearner(epochs=2, batch_size=128, optimizer="adam"),
        MLPLearner(epochs=2, batch_size=200, optimizer="momentum", hidden_units=16),
    ],
    ids=["logistic-adam-minibatch", "mlp-momentum"],
)
def test_float32_exact_modes_agree_on_real_data(learner, digits):
    dt, outer = task_of(learner, digits)
    hp = dict(dt.constants, l2_per_feature=torch.full((64,), 1e-3))
    res = {m: hypergradient(dt.dynamics, outer, dt.z0, hp, mode=m) for m in ("reverse", "checkpoint", "forward")}
    for m in ("checkpoint", "forward"):
        for k in ("lr", "weight_decay", "l2_per_feature"):
            torch.testing.assert_close(res[m].grads[k], res["reverse"].grads[k], rtol=2e-4, atol=1e-6)
    assert res["reverse"].grads["l2_per_feature"].abs().sum() > 0


def test_fit_trains_the_same_dynamics_that_are_differentiated(digits):
    X, y, Xv, yv = digits
    lrn = LogisticLearner(epochs=3, batch_size=128)
    dt, outer = task_of(lrn, digits)
    res = hypergradient(dt.dynamics, outer, dt.z0, dict(dt.constants), mode="reverse")
    model = lrn.fit(X, y, {}, task=Task("classification", 64, 10), seed=0)
    p = model.predict_proba(Xv)
    ce = -np.mean(np.log(p[np.arange(len(yv)), yv]))
    assert ce == pytest.approx(res.value, rel=1e-4)


def test_example_weights_hyperparameter(digits):
    dt, outer = task_of(LogisticLearner(epochs=5, batch_size=10_000), digits)
    hp = dict(dt.constants, example_weights=torch.full((600,), 0.5))
    g = hypergradient(dt.dynamics, outer, dt.z0, hp, mode="reverse").grads["example_weights"]
    assert g.shape == (600,) and torch.isfinite(g).all() and (g < 0).sum() > 100
