"""The `hypergradient` outer optimizer through the estimator: modes, divergence, tracking."""

from __future__ import annotations

import numpy as np
import pytest

from automl_bilevel import BilevelClassifier, BilevelRegressor, CapabilityError
from mlflow import MlflowClient

FULL_BATCH_SGD = {"batch_size": 4096, "epochs": 40, "optimizer": "sgd"}


DIGITS = {"n": 900}  # the slice of the shared ``digits`` fixture (tests/conftest.py)


def fit(digits, mode="reverse", n_iter=6, **opt):
    return BilevelClassifier(
        "logistic",
        optimizer="hypergradient",
        n_iter=n_iter,
        tracking=False,
        random_state=0,
        learner_params=FULL_BATCH_SGD,
        optimizer_params={"mode": mode, **opt},
    ).fit(*digits)


def test_exact_modes_follow_the_same_trajectory(digits):
    ref = fit(digits, "reverse")
    assert ref.history_["value"][-1] < ref.history_["value"][0]  # the outer objective goes down
    for mode in ("checkpoint", "forward"):
        other = fit(digits, mode)
        np.testing.assert_allclose(other.history_["value"], ref.history_["value"], rtol=1e-4)
    trunc = fit(digits, "truncated", truncate=40)
    np.testing.assert_allclose(trunc.history_["value"], ref.history_["value"], rtol=1e-4)


def test_implicit_mode_reports_solver_diagnostics(digits):
    est = fit(digits, "implicit", n_iter=3, solver="cg", solver_iters=30)
    t = est.trials_[0]
    assert "solver_residual" in t.metrics and 1 <= t.metrics["solver_iterations"] <= 30


def test_per_feature_l2_through_the_estimator(digits):
    est = BilevelClassifier(
        "logistic",
        optimizer="hypergradient",
        n_iter=5,
        tracking=False,
        random_state=0,
        learner_params={"batch_size": 4096, "epochs": 30},
        optimizer_params={"tensor_hyperparameters": ["l2_per_feature"]},
    ).fit(*digits)
    l2 = est.best_params_["l2_per_feature"]
    assert l2.shape == (64,) and np.all(l2 > 0) and np.ptp(l2) > 0
    assert est.score(*digits) > 0.9  # the refit uses the learned per-feature weights


def test_a_diverging_step_is_rejected_and_the_lr_backed_off():
    # linear least squares with SGD diverges once lr > 2/λmax; a huge unclipped outer step on log(lr)
    # throws lr past that: the step is rejected, λ goes back, the outer lr halves, the run goes on
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    est = BilevelRegressor(
        "mlp",
        optimizer="hypergradient",
        n_iter=10,
        tracking=False,
        random_state=0,
        search_space={"lr": {"low": 1e-4, "high": 100.0, "log": True, "default": 0.05}},
        learner_params={"n_layers": 0, "optimizer": "sgd", "momentum": 0.0, "epochs": 30, "batch_size": 4096},
        optimizer_params={"outer_lr": 3.0, "clip": None},
    ).fit(X, y)
    statuses = est.history_["status"]
    assert "FAILED" in statuses and statuses[0] == "COMPLETE"
    failed = [t for t in est.trials_ if not t.ok]
    assert all("diverged" in t.error or "objective is" in t.error for t in failed), [t.error for t in failed]
    after = [t for t in est.trials_ if t.ok and t.number > failed[0].number]
    assert after and after[0].metrics["backoffs"] >= 1 and after[0].metrics["outer_lr"] < 3.0
    assert np.isfinite(est.best_value_) and est.score(X, y) > 0.3


def test_early_stopping(digits):
    est = fit(digits, "reverse", n_iter=50, outer_lr=1e-6, patience=2, min_delta=1e-3)
    assert est.stop_reason_ == "optimizer" and est.n_trials_ <= 4


def test_needs_differentiable_components(digits):
    with pytest.raises(CapabilityError, match="learner 'sklearn'"):
        BilevelClassifier("sklearn", optimizer="hypergradient", tracking=False).fit(*digits)
    with pytest.raises(CapabilityError, match="objective 'val_error'"):
        BilevelClassifier("logistic", "val_error", optimizer="hypergradient", tracking=False).fit(*digits)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"mode": "sideways"}, "mode must be one of"),
        ({"mode": "truncated"}, "needs truncate"),
        ({"outer_lr": -1}, "outer_lr must be positive"),
        ({"tensor_hyperparameters": ["dropout_per_unit"]}, "unsupported tensor hyperparameter 'dropout_per_unit'"),
    ],
)
def test_bad_parameters(digits, params, message):
    with pytest.raises(ValueError, match=message):
        BilevelClassifier("logistic", optimizer="hypergradient", optimizer_params=params, tracking=False).fit(*digits)


def test_no_continuous_hyperparameter_is_a_clear_error(digits):
    with pytest.raises(ValueError, match="no continuous hyperparameter"):
        BilevelClassifier("logistic", optimizer="hypergradient", search_space={"epochs": [5, 10]}, tracking=False).fit(
            *digits
        )


def test_regression_with_mlp():
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    est = BilevelRegressor(
        "mlp",
        optimizer="hypergradient",
        n_iter=4,
        tracking=False,
        random_state=0,
        search_space={"lr": (1e-4, 1e-1, "log"), "weight_decay": (1e-6, 1e-1, "log")},
        learner_params={"epochs": 20, "batch_size": 4096},
    ).fit(X, y)
    assert np.isfinite(est.best_value_) and est.history_["value"][-1] <= est.history_["value"][0]


def test_outer_steps_are_tracked_as_metric_steps(digits, tracking):
    uri, experiment = tracking
    est = BilevelClassifier(
        "logistic",
        optimizer="hypergradient",
        n_iter=4,
        random_state=0,
        tracking_uri=uri,
        experiment_name=experiment,
        learner_params=FULL_BATCH_SGD,
    ).fit(*digits)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1  # outer steps are steps of the parent, not child runs
    for key in ("value", "hypergrad_norm", "hp.lr", "hp.weight_decay"):
        assert [m.step for m in client.get_metric_history(est.mlflow_run_id_, key)] == [0, 1, 2, 3]


def test_a_checkpointed_run_continues_exactly_where_it_stopped(digits, tmp_path):
    # the outer state (λ, Adam's moments, step, best point) is saved with the trials: a run of 3 steps
    # continued to 6 follows the same trajectory as 6 steps in one go, to float tolerance
    ckpt = tmp_path / "hg.jsonl"
    opts = {"tensor_hyperparameters": ["l2_per_feature"], "outer_lr": 0.3}
    kw = dict(
        learner="logistic",
        optimizer="hypergradient",
        tracking=False,
        random_state=0,
        learner_params=FULL_BATCH_SGD,
        optimizer_params=opts,
    )
    first = BilevelClassifier(n_iter=3, checkpoint=str(ckpt), **kw).fit(*digits)
    assert first.n_trials_ == 3 and (tmp_path / "hg.jsonl.state").exists()
    resumed = BilevelClassifier(n_iter=6, checkpoint=str(ckpt), **kw).fit(*digits)
    whole = BilevelClassifier(n_iter=6, **kw).fit(*digits)
    assert resumed.n_trials_ == 6
    np.testing.assert_allclose(resumed.history_["value"], whole.history_["value"], rtol=1e-6)
    np.testing.assert_allclose(resumed.best_params_["l2_per_feature"], whole.best_params_["l2_per_feature"], rtol=1e-6)
    assert [t.metrics["outer_lr"] for t in resumed.trials_] == [t.metrics["outer_lr"] for t in whole.trials_]


def test_a_state_file_that_is_missing_or_foreign_is_refused(digits, tmp_path):
    ckpt = tmp_path / "hg.jsonl"
    kw = dict(
        learner="logistic", optimizer="hypergradient", tracking=False, random_state=0, learner_params=FULL_BATCH_SGD
    )
    BilevelClassifier(n_iter=2, checkpoint=str(ckpt), **kw).fit(*digits)
    state = tmp_path / "hg.jsonl.state"
    state.write_bytes(b"not a state")
    with pytest.raises(ValueError, match="not a readable outer-state file"):
        BilevelClassifier(n_iter=3, checkpoint=str(ckpt), **kw).fit(*digits)
    state.unlink()
    with pytest.raises(ValueError, match="no outer state"):
        BilevelClassifier(n_iter=3, checkpoint=str(ckpt), **kw).fit(*digits)


def test_a_journal_line_ahead_of_the_state_is_done_again(digits, tmp_path):
    # a crash between the journal line and the state's rename: the extra line is dropped and redone
    ckpt = tmp_path / "hg.jsonl"
    kw = dict(
        learner="logistic", optimizer="hypergradient", tracking=False, random_state=0, learner_params=FULL_BATCH_SGD
    )
    BilevelClassifier(n_iter=3, checkpoint=str(ckpt), **kw).fit(*digits)
    state_after_3 = (tmp_path / "hg.jsonl.state").read_bytes()
    BilevelClassifier(n_iter=4, checkpoint=str(ckpt), **kw).fit(*digits)
    (tmp_path / "hg.jsonl.state").write_bytes(state_after_3)  # the 4th trial's state never landed
    resumed = BilevelClassifier(n_iter=5, checkpoint=str(ckpt), **kw).fit(*digits)
    whole = BilevelClassifier(n_iter=5, **kw).fit(*digits)
    np.testing.assert_allclose(resumed.history_["value"], whole.history_["value"], rtol=1e-6)
    assert len(ckpt.read_text().splitlines()) == 1 + 5


def test_outer_steps_are_evaluated_on_a_dask_worker(digits):
    from distributed import LocalCluster

    kw = dict(
        learner="logistic",
        optimizer="hypergradient",
        n_iter=3,
        tracking=False,
        random_state=0,
        learner_params=FULL_BATCH_SGD,
    )
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = BilevelClassifier(dask_address=cluster.scheduler_address, **kw).fit(*digits)
    local = BilevelClassifier(**kw).fit(*digits)
    np.testing.assert_allclose(remote.history_["value"], local.history_["value"], rtol=1e-5)
