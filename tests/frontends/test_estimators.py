"""The scikit-learn contract and bad-input handling of BilevelClassifier / BilevelRegressor."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from automl_bilevel import (
    AllTrialsFailedError,
    BilevelClassifier,
    BilevelRegressor,
    CapabilityError,
    InvalidSearchSpaceError,
    UnknownComponentError,
)

FAST = dict(n_iter=3, tracking=False, random_state=0)


@parametrize_with_checks(
    [
        BilevelClassifier(**FAST, learner_params={"epochs": 60}),
        BilevelRegressor(**FAST, learner_params={"epochs": 60}),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_fit_sets_the_fitted_attributes(iris):
    X, y = iris
    est = BilevelClassifier(n_iter=4, tracking=False, random_state=0).fit(X, y)
    assert set(est.best_params_) == {"lr", "weight_decay"}
    assert est.best_score_ == -est.best_value_ and est.best_value_ == min(est.history_["value"])
    assert est.n_trials_ == len(est.trials_) == 4 and est.stop_reason_ == "n_iter"
    assert est.mlflow_run_id_ is None and not est.interrupted_
    assert est.score(X, y) > 0.9
    assert est.predict_proba(X).shape == (150, 3)


def test_string_labels_are_supported(iris):
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    est = BilevelClassifier(n_iter=2, tracking=False, random_state=0).fit(X, names)
    assert set(est.predict(X)) <= set(names) and est.score(X, names) > 0.85


def test_works_in_pipeline_cross_val_score_and_grid_search(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), BilevelClassifier(n_iter=2, tracking=False, random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.85
    gs = GridSearchCV(
        BilevelClassifier(n_iter=2, tracking=False, random_state=0), {"learner": ["logistic", "sklearn"]}, cv=2
    ).fit(X, y)
    assert gs.best_params_["learner"] in {"logistic", "sklearn"}
    est = clone(gs.best_estimator_)
    assert est.get_params()["n_iter"] == 2 and not hasattr(est, "model_")


def test_pickle_round_trip(iris):
    X, y = iris
    est = BilevelClassifier("mlp", n_iter=2, tracking=False, random_state=0, learner_params={"epochs": 20}).fit(X, y)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(X), est.predict(X))


def test_same_random_state_same_result(iris):
    X, y = iris
    a = BilevelClassifier(n_iter=3, tracking=False, random_state=7).fit(X, y)
    b = BilevelClassifier(n_iter=3, tracking=False, random_state=7).fit(X, y)
    assert a.history_["params"] == b.history_["params"] and a.history_["value"] == b.history_["value"]


def test_sklearn_learner_with_user_space_and_cv():
    X, y = load_breast_cancer(return_X_y=True)
    est = BilevelClassifier(
        "sklearn",
        "val_error",
        learner_params={"estimator": make_pipeline(StandardScaler(), SVC())},
        search_space={"svc__C": (0.01, 100.0, "log"), "svc__gamma": (1e-4, 1.0, "log")},
        cv=3,
        n_iter=4,
        tracking=False,
        random_state=0,
    ).fit(X, y)
    assert set(est.best_params_) == {"svc__C", "svc__gamma"}
    assert est.best_value_ < 0.1 and "value_std" in est.trials_[0].metrics


def test_regressor_on_diabetes():
    X, y = load_diabetes(return_X_y=True)
    est = BilevelRegressor("sklearn", "val_error", n_iter=4, tracking=False, random_state=0).fit(X, y)
    assert est.best_value_ < 0.7 and est.score(X, y) > 0.3


def test_timeout_stops_the_search(iris):
    X, y = iris
    est = BilevelClassifier(n_iter=10_000, timeout=1.0, tracking=False, random_state=0).fit(*iris)
    assert est.stop_reason_ == "timeout" and 1 <= est.n_trials_ < 10_000


def test_finite_space_is_exhausted(iris):
    est = BilevelClassifier(
        "sklearn", "val_error", search_space={"C": [0.1, 1.0, 10.0]}, n_iter=50, tracking=False, random_state=0
    ).fit(*iris)
    assert est.n_trials_ == 3 and est.stop_reason_ == "exhausted"
    assert sorted(p["C"] for p in est.history_["params"]) == [0.1, 1.0, 10.0]


# -- bad input: a clear error, nothing lost ------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.nan, "NaN"),
        (np.inf, "infinity"),
    ],
)
def test_nan_and_inf_in_X(iris, bad, message):
    X, y = iris
    X = X.copy()
    X[3, 1] = bad
    with pytest.raises(ValueError, match=message):  # (preprocess="auto" imputes a NaN: tests/frontends/test_tabular.py)
        BilevelClassifier(**FAST, preprocess="none").fit(X, y)


def test_lengths_differ(iris):
    X, y = iris
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        BilevelClassifier(**FAST).fit(X, y[:-1])


def test_single_class(iris):
    X, _ = iris
    with pytest.raises(ValueError, match="only one class"):
        BilevelClassifier(**FAST).fit(X, np.zeros(len(X)))


def test_unknown_plugin_name_lists_available(iris):
    with pytest.raises(UnknownComponentError, match="unknown optimizer 'smack'; available optimizers: .*random"):
        BilevelClassifier(optimizer="smack", **FAST).fit(*iris)
    with pytest.raises(UnknownComponentError, match="available learners: .*logistic.*mlp.*sklearn"):
        BilevelClassifier(learner="xgb", **FAST).fit(*iris)


@pytest.mark.parametrize(
    "space, message",
    [
        ({"lr": (1.0, 0.1)}, "lower bound"),
        ({"lr": (0.0, 1.0, "log")}, "positive lower bound"),
        ({"learning_rate": (0.1, 1.0)}, "no hyperparameter.*'learning_rate'.*accepts"),
    ],
)
def test_invalid_search_space(iris, space, message):
    with pytest.raises(InvalidSearchSpaceError, match=message):
        BilevelClassifier(search_space=space, **FAST).fit(*iris)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(n_iter=0), "n_iter"),
        (dict(validation_fraction=1.5), "validation_fraction"),
        (dict(cv=1), "cv"),
        (dict(learner=3), "learner"),
    ],
)
def test_invalid_parameters(iris, params, message):
    with pytest.raises(ValueError, match=message):
        BilevelClassifier(**{**FAST, **params}).fit(*iris)


def test_learner_params_are_checked(iris):
    with pytest.raises(ValueError, match="rejected its parameters.*unexpected keyword"):
        BilevelClassifier(learner_params={"epocs": 3}, **FAST).fit(*iris)


def test_failing_trials_are_recorded_and_the_search_goes_on(iris):
    # lr=50 with SGD diverges: those trials fail, the others complete
    est = BilevelClassifier(
        "logistic", search_space={"lr": [1e6, 0.05], "optimizer": ["sgd"]}, n_iter=5, tracking=False, random_state=0
    ).fit(*iris)
    status = dict(zip([p["lr"] for p in est.history_["params"]], est.history_["status"], strict=True))
    assert status == {1e6: "FAILED", 0.05: "COMPLETE"}
    failed = [t for t in est.trials_ if not t.ok][0]
    assert "diverged" in failed.error and est.best_params_["lr"] == 0.05


def test_all_trials_failing_is_a_clear_error(iris):
    with pytest.raises(AllTrialsFailedError, match="all 1 trials failed.*diverged"):
        BilevelClassifier(
            "logistic", search_space={"lr": [1e6], "optimizer": ["sgd"]}, n_iter=3, tracking=False, random_state=0
        ).fit(*iris)


def test_val_loss_needs_predict_proba(iris):
    with pytest.raises(CapabilityError, match="SVC has no predict_proba unless probability=True.*val_error"):
        BilevelClassifier("sklearn", learner_params={"estimator": SVC()}, n_iter=2, tracking=False).fit(*iris)
