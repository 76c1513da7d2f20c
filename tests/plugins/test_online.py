"""The `online` outer optimizer: one training run, hyperparameters moved every K steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from automl_bilevel import BilevelClassifier, CapabilityError
from automl_bilevel.gradient import InnerDynamics

LEARNER = {"batch_size": 64, "epochs": 4}  # 12 steps per epoch on 720 training examples: T = 48
#: a small MLP: the architecture as constants of the space, lr and weight decay tuned
MLP_SPACE = {"lr": (1e-4, 1e-1, "log"), "weight_decay": (1e-7, 1e-2, "log"), "hidden_units": 16}


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:900], y[:900]


def online(learner="logistic", n_iter=50, learner_params=LEARNER, search_space=None, **opt):
    return BilevelClassifier(
        learner,
        "val_loss",
        "online",
        search_space=search_space,
        n_iter=n_iter,
        tracking=False,
        random_state=0,
        learner_params=dict(learner_params),
        optimizer_params=opt,
    )


def test_one_run_with_an_update_every_k_steps(digits):
    est = online(every=6).fit(*digits)
    assert est.n_trials_ == 8 and est.stop_reason_ == "exhausted"  # 48 steps / 6: the run's end, not n_iter
    assert [s["stop"] for s in est.schedule_] == list(range(6, 49, 6))
    assert est.history_["value"][-1] < 0.5 * est.history_["value"][0]  # it trained
    lrs = [s["lr"] for s in est.schedule_]
    assert lrs[0] == pytest.approx(1e-2) and len(set(lrs)) == len(lrs)  # λ moved at every update
    last = est.schedule_[-1]
    assert est.best_params_["lr"] == last["lr"] and est.best_params_["weight_decay"] == last["weight_decay"]
    for t, s in zip(est.trials_, est.schedule_, strict=True):  # a trial's config: what its segment used
        assert t.config["lr"] == s["lr"] and t.metrics["inner_step"] == s["stop"]
    assert est.online_model_.predict_proba(digits[0][:3]).shape == (3, 10)
    assert est.score(*digits) > 0.9


def test_default_every_gives_about_fifty_updates_or_n_iter(digits):
    assert online(learner_params={**LEARNER, "epochs": 10}).fit(*digits).n_trials_ == 40  # 120 steps, every 3
    assert online(n_iter=12).fit(*digits).n_trials_ == 12  # 48 steps, every 4


def test_forward_and_truncated_agree_on_the_first_segment(digits):
    """With tangents starting at zero, forward mode over the first segment is exact, as is truncated
    reverse mode over the whole segment: the same first hypergradient."""
    tr = online(every=8, truncate=8, n_iter=3, learner_params={**LEARNER, "epochs": 1}).fit(*digits)
    fw = online(every=8, n_iter=3, mode="forward", learner_params={**LEARNER, "epochs": 1}).fit(*digits)
    a, b = tr.trials_[0].metrics["hypergrad_norm"], fw.trials_[0].metrics["hypergrad_norm"]
    assert a == pytest.approx(b, rel=1e-3)
    assert tr.trials_[0].value == pytest.approx(fw.trials_[0].value, rel=1e-5)


def test_truncation_defaults_to_a_quarter_of_the_segment(digits):
    quarter = online(every=8, n_iter=3, learner_params={**LEARNER, "epochs": 1}).fit(*digits)
    two = online(every=8, truncate=2, n_iter=3, learner_params={**LEARNER, "epochs": 1}).fit(*digits)
    full = online(every=8, truncate=8, n_iter=3, learner_params={**LEARNER, "epochs": 1}).fit(*digits)
    norms = [e.trials_[0].metrics["hypergrad_norm"] for e in (quarter, two, full)]
    assert norms[0] == norms[1] != norms[2]


def test_mlp_with_validation_mini_batches_and_per_feature_l2(digits):
    est = online(
        "mlp",
        search_space=MLP_SPACE,
        every=8,
        val_batch=32,
        outer_optimizer="sgd",
        outer_lr=0.01,
        tensor_hyperparameters=["l2_per_feature"],
        learner_params={**LEARNER, "device": "auto"},
    ).fit(*digits)
    l2 = est.best_params_["l2_per_feature"]
    assert l2.shape == (64,) and np.ptp(l2) > 0
    assert est.schedule_[-1]["l2_per_feature"].shape == (64,)
    assert est.best_params_["hidden_units"] == 16  # a constant of the space: held, not tuned
    assert est.online_model_.module[0].out_features == 16 and est.model_.module[0].out_features == 16


def test_refit_replays_the_schedule_or_uses_the_final_values(digits):
    X, y = digits
    sched = online(every=12).fit(X, y)
    final = online(every=12, refit_with="final").fit(X, y)
    assert sched.schedule_ == final.schedule_  # the same search
    direct = sched.learner_.fit(X, y, final.best_params_, task=_task(), seed=_seed(final))
    np.testing.assert_allclose(final.predict_proba(X), direct.predict_proba(X), rtol=1e-5, atol=1e-7)
    assert not np.allclose(sched.predict_proba(X), final.predict_proba(X), atol=1e-4)


def test_a_diverging_segment_is_rolled_back_with_a_halved_outer_step(digits, monkeypatch):
    calls = {"n": 0}
    real_step = InnerDynamics.step

    def step(self, t, z, hp, create_graph=False):
        if t == 20:  # the segment covering step 20 diverges the first time it runs
            calls["n"] += 1
            if calls["n"] == 1:
                return torch.full_like(real_step(self, t, z, hp, create_graph), float("nan"))
        return real_step(self, t, z, hp, create_graph)

    monkeypatch.setattr(InnerDynamics, "step", step)
    est = online(every=6).fit(*digits)
    failed = [t for t in est.trials_ if not t.ok]
    assert len(failed) == 1 and est.n_trials_ == 9  # 8 segments + the retried one
    before, retry = est.trials_[failed[0].number - 1], est.trials_[failed[0].number + 1]
    assert retry.metrics["outer_lr"] == pytest.approx(0.5 * before.metrics["outer_lr"])
    assert retry.config["lr"] == before.config["lr"]  # λ rolled back to the last good segment's
    assert failed[0].config["lr"] != before.config["lr"]
    assert [s["stop"] for s in est.schedule_] == list(range(6, 49, 6))  # and the weights too: the full run


# -- bad input, refused before the first inner step ------------------------------------------------
@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(InnerDynamics, "step", refuse)
    monkeypatch.setattr(InnerDynamics, "step_func", refuse)


def test_every_larger_than_the_run_is_refused(digits, no_training):
    with pytest.raises(ValueError, match=r"every=100 is larger than the run, which has 48 inner steps"):
        online(every=100).fit(*digits)


def test_more_updates_than_trials_is_refused(digits, no_training):
    with pytest.raises(ValueError, match=r"makes 24 updates .* more than n_iter=10"):
        online(every=2, n_iter=10).fit(*digits)


def test_a_non_differentiable_hyperparameter_is_refused(digits, no_training):
    est = online()
    est.search_space = {"lr": (1e-3, 1.0, "log"), "batch_size": [32, 64]}
    with pytest.raises(ValueError, match=r"online cannot tune 'batch_size': the learner does not differentiate it"):
        est.fit(*digits)
    with pytest.raises(ValueError, match=r"unsupported tensor hyperparameter 'hidden_units'"):
        online(tensor_hyperparameters=["hidden_units"]).fit(*digits)


def test_a_learner_without_the_differentiable_capability_is_refused(digits, no_training):
    with pytest.raises(CapabilityError, match=r"optimizer 'online' needs capability \['differentiable'\]"):
        BilevelClassifier("sklearn", "val_loss", "online", tracking=False).fit(*digits)


@pytest.mark.parametrize("mode", ["implicit", "reverse", "sideways"])
def test_an_unsupported_mode_is_refused(digits, mode, no_training):
    with pytest.raises(ValueError, match=r"mode must be one of \('truncated', 'forward'\)"):
        online(mode=mode).fit(*digits)


def test_forward_mode_too_large_for_memory_is_refused(digits, no_training):
    with pytest.raises(ValueError, match=r"mode='forward' would carry 66 tangents"):
        online(mode="forward", tensor_hyperparameters=["l2_per_feature"], max_tangent_bytes=10**5).fit(*digits)


def test_a_mode_the_learner_cannot_run_is_refused(digits, monkeypatch):
    def no_forward_rule(self, t, z, hp):
        raise RuntimeError("this operation has no forward-mode rule")

    monkeypatch.setattr(InnerDynamics, "step_func", no_forward_rule)
    with pytest.raises(ValueError, match=r"mode='forward' cannot run with learner LogisticLearner: .*no forward-mode"):
        online(mode="forward").fit(*digits)


def test_cross_validation_is_refused(digits, no_training):
    est = online()
    est.cv = 3
    with pytest.raises(ValueError, match=r"online trains one run on one training set"):
        est.fit(*digits)


def _task():
    from automl_bilevel import Task

    return Task("classification", 64, 10)


def _seed(est):
    """The seed the estimator draws from random_state=0 (what its refit used)."""
    return int(np.random.RandomState(0).randint(np.iinfo(np.int32).max))


def test_regression_with_the_mlp():
    from sklearn.datasets import load_diabetes

    from automl_bilevel import BilevelRegressor

    X, y = load_diabetes(return_X_y=True)
    est = BilevelRegressor(
        "mlp",
        "val_loss",
        "online",
        search_space=MLP_SPACE,
        n_iter=50,
        tracking=False,
        random_state=0,
        learner_params={"batch_size": 64, "epochs": 5},
        optimizer_params={"every": 5},
    ).fit(X, y)
    assert est.n_trials_ == 5 * 6 // 5 and est.history_["value"][-1] < est.history_["value"][0]
    assert est.online_model_.predict(X[:4]).shape == (4,) and est.score(X, y) > 0.2
