"""What a scikit-learn user reaches for first: n_jobs, readable errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_iris

from automl_bilevel import BilevelClassifier, BilevelRegressor
from automl_bilevel_plugins.optimizers.random_search import RandomSearch

FAST = dict(learner="sklearn", objective="val_error", n_iter=2, tracking=False, random_state=0)


@pytest.mark.parametrize(
    "y, shown",
    [
        (np.zeros(150), "only one class: 0.0"),
        (np.full(150, 3), "only one class: 3"),
        (np.array(["setosa"] * 150), "only one class: 'setosa'"),
        (np.array(["setosa"] * 150, dtype=object), "only one class: 'setosa'"),
    ],
)
def test_single_class_error_shows_the_label_as_written(y, shown):
    X, _ = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match=shown + "$") as err:
        BilevelClassifier(**FAST).fit(X, y)
    assert "np." not in str(err.value)


def test_n_jobs_is_accepted_like_in_scikit_learn():
    est = BilevelClassifier(n_jobs=1, **FAST)
    assert est.get_params()["n_jobs"] == 1 and clone(est).n_jobs == 1
    assert BilevelRegressor(n_jobs=2).get_params()["n_jobs"] == 2
    est.fit(*load_iris(return_X_y=True))
    assert est.n_trials_ == 2


@pytest.mark.parametrize(
    "n_jobs, n_workers, expected",
    [
        (None, 3, 3),
        (2, 1, 2),
        (2, 2, 2),
        (-1, 1, os.cpu_count()),
        (-2, 1, max(os.cpu_count() - 1, 1)),
    ],
)
def test_n_jobs_means_n_workers(n_jobs, n_workers, expected):
    assert BilevelClassifier(n_jobs=n_jobs, n_workers=n_workers)._n_workers() == expected


@pytest.mark.parametrize(
    "params, message",
    [
        ({"n_jobs": 0}, "n_jobs=0 means no worker"),
        (
            {"n_jobs": 2, "n_workers": 3},
            "n_jobs=2 and n_workers=3 disagree; n_jobs is scikit-learn's name for n_workers",
        ),
        (
            {"n_jobs": 2, "optimizer": RandomSearch(), "learner": "logistic", "objective": "val_loss"},
            "evaluates one proposal at a time",
        ),
    ],
)
def test_bad_n_jobs_is_refused_before_any_work(params, message):
    est = BilevelClassifier(**{**FAST, **params})
    with pytest.raises(ValueError, match=message):
        est.fit(*load_iris(return_X_y=True))
    assert not hasattr(est, "trials_")


def test_n_jobs_of_the_wrong_type_is_a_parameter_error():
    with pytest.raises(ValueError, match="'n_jobs' parameter"):
        BilevelClassifier(n_jobs="all", **FAST).fit(*load_iris(return_X_y=True))
