"""`hybrid` with inner="online": a black box over the discrete choices, one online run per trial."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from automl_bilevel import BilevelClassifier
from automl_bilevel.gradient import InnerDynamics

SPACE = {
    "lr": (1e-3, 1e-1, "log"),
    "weight_decay": (1e-7, 1e-2, "log"),
    "hidden_units": [8, 16],
    "activation": ["relu", "tanh"],
}


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:600], y[:600]


def hybrid(**opt):
    return BilevelClassifier(
        "mlp",
        "val_loss",
        "hybrid",
        search_space=SPACE,
        n_iter=3,
        tracking=False,
        random_state=0,
        learner_params={"batch_size": 64, "epochs": 2},  # 480 training examples: 16 steps per run
        optimizer_params={"blackbox": "random", "inner": "online", **opt},
    )


def test_one_online_run_per_blackbox_trial(digits, monkeypatch):
    steps = {"n": 0}
    real = InnerDynamics.step

    def count(self, t, z, hp, create_graph=False):
        steps["n"] += 1
        return real(self, t, z, hp, create_graph)

    monkeypatch.setattr(InnerDynamics, "step", count)
    est = hybrid(online_params={"every": 4}).fit(*digits)
    assert est.n_trials_ == 3
    for t in est.trials_:
        assert t.ok and t.metrics["online_updates"] == 4  # 16 steps, an update every 4
        assert t.value == t.metrics["outer_value.3"]  # the value at the run's end
        assert {"hidden_units", "activation", "lr", "weight_decay"} <= set(t.config)
    # inner steps: 3 trials x (one run of 16 + the set-up's probe of the mode, one step on a copy), plus
    # the refit on 600 examples (10 steps x 2 epochs)
    assert steps["n"] == 3 * (16 + 1) + 20
    best = est.best_trial_
    assert est.best_params_["lr"] == pytest.approx(best.metrics["tuned.lr"])
    assert est.best_params_["hidden_units"] == best.config["hidden_units"]
    assert np.isfinite(est.best_value_) and est.score(*digits) > 0.5


def test_online_settings_are_checked_when_the_hybrid_is_made(digits):
    with pytest.raises(ValueError, match=r"online: mode must be one of"):
        hybrid(online_params={"mode": "implicit"}).fit(*digits)
    with pytest.raises(ValueError, match=r"online_params are settings of inner='online'"):
        BilevelClassifier(
            "mlp", optimizer="hybrid", optimizer_params={"online_params": {"every": 2}}, tracking=False
        ).fit(*digits)
    with pytest.raises(ValueError, match=r"inner must be one of \('hypergradient', 'online'\)"):
        hybrid(inner="offline").fit(*digits)
    with pytest.raises(ValueError, match=r"set \['outer_lr'\] as hybrid's own parameters"):
        hybrid(online_params={"outer_lr": 0.1}).fit(*digits)
