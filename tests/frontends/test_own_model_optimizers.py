"""Every outer optimizer with a user's own CNN on image-shaped X (8x8 digits as (N, 1, 8, 8)):
random, smac, smac_mf (budget = epochs), es, hypergradient in all five modes (per-layer weight decay),
hybrid, checkpoint resume, and n_workers=2 on Dask from a plain script with the class in __main__."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from automl_bilevel import BilevelClassifier
from automl_bilevel_plugins.learners import torch_learners

from ..plugins.own_models import PlainCNN, TinyCNN, digits_images

FAST = dict(tracking=False, random_state=0)
TRAIN = dict(epochs=2, batch_size=64)


@pytest.fixture(scope="module")
def images():
    return digits_images(300)


@pytest.mark.parametrize(
    ("optimizer", "params", "space"),
    [
        ("random", {}, {"lr": (1e-3, 1e-1, "log"), "channels": (2, 6)}),
        ("smac", {"n_initial": 2}, {"lr": (1e-3, 1e-1, "log"), "channels": (2, 6)}),
        ("es", {"population_size": 2}, None),
    ],
)
def test_black_box_optimizers(images, optimizer, params, space):
    X, y = images
    clf = BilevelClassifier(
        TinyCNN,
        optimizer=optimizer,
        optimizer_params=params,
        search_space=space,
        learner_params=TRAIN,
        n_iter=3,
        **FAST,
    ).fit(X, y)
    assert clf.n_trials_ >= 2 and all(t.ok for t in clf.trials_)
    if space:
        assert clf.model_.module.conv.out_channels == clf.best_params_["channels"]


def test_smac_multi_fidelity_budget_is_epochs(images, monkeypatch):
    X, y = images
    steps = []
    real = torch_learners.TorchLearner.differentiable

    def spy(self, X, y, config, *, budget=None, **k):
        dt = real(self, X, y, config, budget=budget, **k)
        steps.append((budget, dt.dynamics.T))
        return dt

    monkeypatch.setattr(torch_learners.TorchLearner, "differentiable", spy)
    BilevelClassifier(
        TinyCNN,
        optimizer="smac_mf",
        optimizer_params={"min_budget": 0.25},
        learner_params={"epochs": 4, "batch_size": 60},
        n_iter=4,
        **FAST,
    ).fit(X, y)
    per_epoch = 4  # 240 training images in batches of 60
    searched = [(b, T) for b, T in steps if b is not None]
    assert searched and all(T == max(1, round(4 * b)) * per_epoch for b, T in searched)
    assert len({b for b, _ in searched}) > 1  # several fidelities ran


@pytest.mark.parametrize(
    ("mode", "extra", "module"),
    [
        ("reverse", {}, TinyCNN),
        ("checkpoint", {"checkpoint_every": 3}, TinyCNN),
        ("truncated", {"truncate": 3}, TinyCNN),
        ("implicit", {"solver_iters": 10}, TinyCNN),
        ("forward", {}, PlainCNN),  # forward mode batches tangents with vmap: no BatchNorm running stats
    ],
)
def test_hypergradient_every_mode_with_weight_decay_per_layer(images, mode, extra, module):
    X, y = images
    clf = BilevelClassifier(
        module,
        optimizer="hypergradient",
        optimizer_params={"mode": mode, "tensor_hyperparameters": ["weight_decay_per_layer"], **extra},
        search_space={"lr": (1e-3, 1e-1, "log")},
        learner_params={"epochs": 1, "batch_size": 60, "weight_decay": 1e-3},
        n_iter=3,
        **FAST,
    ).fit(X, y)
    wdl = clf.best_params_["weight_decay_per_layer"]
    n_tensors = len(list(module().parameters()))
    assert wdl.shape == (n_tensors,) and not np.allclose(wdl, 1e-3)  # moved, per layer
    assert any(k.startswith("hp.weight_decay_per_layer.conv.weight") for t in clf.trials_ for k in t.metrics)
    assert all(t.ok for t in clf.trials_)


def test_forward_mode_with_batchnorm_says_what_to_use(images):
    X, y = images
    with pytest.raises(ValueError, match=r"mode='forward' cannot run this learner: the module's \['bn'\] update"):
        BilevelClassifier(
            TinyCNN,
            optimizer="hypergradient",
            optimizer_params={"mode": "forward", "max_backoffs": 0},
            learner_params={"epochs": 1, "batch_size": 60},
            n_iter=1,
            **FAST,
        ).fit(X, y)


def test_hybrid_channels_by_bo_lr_and_per_layer_weight_decay_by_gradients(images):
    X, y = images
    clf = BilevelClassifier(
        TinyCNN,
        optimizer="hybrid",
        optimizer_params={
            "steps": 2,
            "tensor_hyperparameters": ["weight_decay_per_layer"],
            "blackbox_params": {"n_initial": 2},
        },
        search_space={"lr": (1e-3, 1e-1, "log"), "channels": (2, 5)},
        learner_params={"epochs": 1, "batch_size": 60},
        n_iter=2,
        **FAST,
    ).fit(X, y)
    assert clf.best_params_["weight_decay_per_layer"].shape == (6,)
    assert clf.model_.module.conv.out_channels == clf.best_params_["channels"]


def test_checkpoint_resume(images, tmp_path):
    X, y = images
    path = tmp_path / "cnn.jsonl"

    def fit(n):
        return BilevelClassifier(
            TinyCNN,
            search_space={"lr": (1e-3, 1e-1, "log"), "channels": (2, 5)},
            learner_params=TRAIN,
            n_iter=n,
            checkpoint=path,
            **FAST,
        ).fit(X, y)

    first = fit(2)
    second = fit(4)
    assert second.n_trials_ == 4
    assert [t.config for t in second.trials_[:2]] == [t.config for t in first.trials_]


SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from torch import nn
    from automl_bilevel import BilevelClassifier

    class ScriptCNN(nn.Module):  # defined in __main__: travels to the Dask workers by value
        def __init__(self, channels=3, n_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(1, channels, 3, padding=1)
            self.head = nn.Linear(channels * 64, n_classes)

        def forward(self, x):
            return self.head(torch.relu(self.conv(x)).flatten(1))

    d = load_digits()
    X = (d.data[:300] / 16).astype(np.float32).reshape(-1, 1, 8, 8)
    clf = BilevelClassifier(ScriptCNN, search_space={"lr": (1e-3, 1e-1, "log"), "channels": (2, 4)},
                            learner_params={"epochs": 1}, n_iter=4, n_workers=2, tracking=False, random_state=0)
    clf.fit(X, d.target[:300])
    print("TRIALS", clf.n_trials_, sum(t.ok for t in clf.trials_), clf.score(X, d.target[:300]) > 0.3, flush=True)
    """
)


@pytest.mark.slow
def test_n_workers_2_on_dask_with_the_module_class_in_main(tmp_path):
    path = tmp_path / "own_cnn.py"
    path.write_text(SCRIPT)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=500, env=env, cwd=tmp_path
    )
    assert "TRIALS 4 4 True" in proc.stdout, proc.stderr[-3000:]
