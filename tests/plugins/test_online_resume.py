"""The `online` optimizer inside the one loop: exact mid-run resume, plain-data state, tracking."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from automl_bilevel import BilevelClassifier
from automl_bilevel_plugins.optimizers.online import OnlineOptimizer
from mlflow import MlflowClient


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:900], y[:900]


CASES = {
    # Adam's slots in the inner state, Adam on λ, per-feature L2 as a tensor outer variable
    "truncated": (
        "logistic",
        {"batch_size": 64, "epochs": 4},
        {"every": 6, "tensor_hyperparameters": ["l2_per_feature"]},
    ),
    # momentum's slot, forward tangents carried across the interruption, SGD on λ
    "forward": (
        "mlp",
        {"batch_size": 64, "epochs": 2, "optimizer": "momentum", "hidden_units": 8},
        {"every": 4, "mode": "forward", "outer_optimizer": "sgd", "outer_lr": 0.02},
    ),
}


def estimator(case, **kw):
    learner, lp, op = CASES[case]
    space = {"lr": (1e-3, 1e-1, "log"), "weight_decay": (1e-7, 1e-2, "log"), "momentum": (0.5, 0.99)}
    settings = dict(n_iter=50, tracking=False, random_state=0, learner_params=lp, optimizer_params=op)
    return BilevelClassifier(
        learner, "val_loss", "online", search_space=space if learner == "mlp" else None, **{**settings, **kw}
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_run_interrupted_after_k_updates_resumes_to_the_same_trajectory(digits, case, tmp_path, monkeypatch):
    whole = estimator(case).fit(*digits)
    ckpt = str(tmp_path / "online.jsonl")
    real = OnlineOptimizer.evaluate
    k = 3

    def interrupted(self, problem, proposal):
        if proposal.info.update == k:
            raise KeyboardInterrupt  # Ctrl-C during the 4th segment
        return real(self, problem, proposal)

    monkeypatch.setattr(OnlineOptimizer, "evaluate", interrupted)
    with pytest.warns(RuntimeWarning, match="interrupted after 3 trials"), pytest.raises(KeyboardInterrupt):
        estimator(case, checkpoint=ckpt).fit(*digits)
    monkeypatch.setattr(OnlineOptimizer, "evaluate", real)
    resumed = estimator(case, checkpoint=ckpt).fit(*digits)

    assert resumed.n_trials_ == whole.n_trials_ > k
    np.testing.assert_array_equal(resumed.history_["value"], whole.history_["value"])  # bit for bit
    assert len(resumed.schedule_) == len(whole.schedule_)
    for a, b in zip(resumed.schedule_, whole.schedule_, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    X = digits[0]
    np.testing.assert_array_equal(resumed.online_model_.predict_proba(X), whole.online_model_.predict_proba(X))
    np.testing.assert_array_equal(resumed.predict_proba(X), whole.predict_proba(X))


def test_a_resume_with_another_segment_length_is_refused(digits, tmp_path):
    ckpt = str(tmp_path / "online.jsonl")
    lp = {"batch_size": 64, "epochs": 4}
    first = BilevelClassifier(
        "logistic", "val_loss", "online", n_iter=12, tracking=False, random_state=0, learner_params=lp, checkpoint=ckpt
    ).fit(*digits)
    assert first.n_trials_ == 12  # 48 steps, every 4: the run is complete, its state saved
    with pytest.raises(ValueError, match=r"updates every 4 of 48 inner steps, this one every 2 of 48"):
        BilevelClassifier(
            "logistic",
            "val_loss",
            "online",
            n_iter=24,
            tracking=False,
            random_state=0,
            learner_params=lp,
            checkpoint=ckpt,
        ).fit(*digits)


def _plain(value, path="state"):
    """Raise unless ``value`` is plain data: numbers, strings, None, lists/tuples, dicts, tensors, arrays."""
    if isinstance(value, (bool, int, float, str, type(None), torch.Tensor, np.ndarray)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _plain(v, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, (str, int)), f"{path} has key {k!r}"
            _plain(v, f"{path}.{k}")
        return
    raise AssertionError(f"{path} is a {type(value).__name__}, not plain data")


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_saved_state_is_plain_data_with_the_inner_weights_and_slots(digits, case, monkeypatch):
    states = []
    real = OnlineOptimizer.tell

    def tell(self, proposal, trial):
        real(self, proposal, trial)
        states.append(self.state_dict())

    monkeypatch.setattr(OnlineOptimizer, "tell", tell)
    estimator(case).fit(*digits)
    last = states[-1]
    _plain(last)
    n_slots = 2 if case == "truncated" else 1  # Adam: m and v; momentum: v
    z = last["z"]
    assert z.ndim == 1 and z.numel() % (1 + n_slots) == 0 and z.device.type == "cpu"
    assert ("Z" in last) == (case == "forward")


def test_each_update_is_a_metric_step_of_the_tracked_run(digits, tracking):
    uri, experiment = tracking
    est = estimator("truncated", tracking=True, tracking_uri=uri, experiment_name=experiment).fit(*digits)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1  # updates are steps of the parent, not child runs
    for key in ("value", "hypergrad_norm", "hp.lr", "hp.weight_decay", "inner_step"):
        assert [m.step for m in client.get_metric_history(est.mlflow_run_id_, key)] == list(range(8))


def test_a_timeout_stops_the_run_and_keeps_what_was_trained(digits, monkeypatch):
    real = OnlineOptimizer.evaluate
    calls = []

    def slow(self, problem, proposal):
        calls.append(1)
        if len(calls) == 2:
            time.sleep(2.5)  # the second segment outlasts the 2 s budget: the deadline cuts it, it is dropped
        return real(self, problem, proposal)

    monkeypatch.setattr(OnlineOptimizer, "evaluate", slow)
    est = estimator("truncated", timeout=2.0).fit(*digits)
    assert est.stop_reason_ == "timeout" and est.n_trials_ == 1 and len(est.schedule_) == 1
    assert est.schedule_[0]["stop"] == 6 and est.score(*digits) > 0.5  # refit replays the one update
