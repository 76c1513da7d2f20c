"""``timeout`` bounds a running trial: torch learners and meta-training check the deadline between
batches, and the cut trial is dropped as one in flight at the timeout (issue 24)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris

from automl_bilevel import BilevelClassifier, MetaLearnerClassifier
from automl_bilevel.core.deadline import DeadlineExceeded, check_deadline, deadline_scope, remaining
from automl_bilevel.run.engine import AllTrialsFailedError


def test_check_deadline_raises_only_once_the_deadline_has_passed():
    check_deadline()  # no deadline: never raises
    assert remaining() is None
    with deadline_scope(10.0):
        check_deadline()
        assert 9 < remaining() <= 10
    with deadline_scope(0.0), pytest.raises(DeadlineExceeded):
        check_deadline()


@pytest.mark.parametrize("batch_size", [8, 4096])  # a batch sequence to build, or full-batch steps
def test_a_trial_of_a_billion_epochs_stops_at_the_timeout(batch_size):
    X, y = load_iris(return_X_y=True)
    t0 = time.perf_counter()
    with pytest.raises(AllTrialsFailedError, match=r"no trial finished: the search stopped by timeout \(timeout=2"):
        BilevelClassifier(
            "logistic",
            "val_loss",
            "random",
            n_iter=5,
            timeout=2,
            tracking=False,
            random_state=0,
            learner_params={"epochs": 10**9, "batch_size": batch_size},
        ).fit(X.astype(np.float32), y)
    assert time.perf_counter() - t0 < 15  # not the hours a billion epochs take


def test_the_trials_that_finish_before_the_timeout_are_kept():
    X, y = load_iris(return_X_y=True)
    est = BilevelClassifier(
        "logistic",
        "val_loss",
        "random",
        search_space={"epochs": [2, 10**9], "lr": (0.01, 0.5, "log")},
        n_iter=30,
        timeout=3,
        tracking=False,
        random_state=0,
        learner_params={"batch_size": 4096},
    ).fit(X.astype(np.float32), y)
    # the first billion-epoch trial is cut at the deadline and not recorded; those before it are kept
    assert est.n_trials_ >= 1 and all(t.config["epochs"] == 2 and t.ok for t in est.trials_)
    assert est.stop_reason_ == "timeout"


def test_meta_training_stops_at_the_timeout_between_validation_episodes():
    X, y = load_digits(return_X_y=True)
    t0 = time.perf_counter()
    with pytest.raises(AllTrialsFailedError, match="no meta-training step finished"):
        MetaLearnerClassifier(
            "protonet",
            method_params={"width": 8, "depth": 2},
            n_way=2,
            k_shot=1,
            q_queries=2,
            meta_iters=10,
            val_every=1,
            val_episodes=10**8,
            timeout=2,
            tracking=False,
            random_state=0,
        ).fit(X.reshape(-1, 1, 8, 8).astype(np.float32) / 16, y)
    assert time.perf_counter() - t0 < 20


@pytest.mark.slow  # a LocalCluster of two worker processes
def test_the_deadline_reaches_trials_on_dask_workers():
    X, y = load_iris(return_X_y=True)
    t0 = time.perf_counter()
    with pytest.raises(AllTrialsFailedError, match="no trial finished: the search stopped by timeout"):
        BilevelClassifier(
            "logistic",
            "val_loss",
            "random",
            n_iter=4,
            n_workers=2,
            timeout=3,
            tracking=False,
            random_state=0,
            learner_params={"epochs": 10**9, "batch_size": 4096},
        ).fit(X.astype(np.float32), y)
    assert time.perf_counter() - t0 < 40  # worker start-up included
