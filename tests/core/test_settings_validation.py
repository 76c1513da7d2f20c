"""Bad settings and bad data get a clear error before any work, naming the setting (issue 24): the
optimizers' declarative tables, the search space, the data, the experiment file, meta-training."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris

import automl_bilevel.frontends.base as estimator_base
from automl_bilevel import BilevelClassifier, MetaLearnerClassifier
from automl_bilevel.core.space import InvalidSearchSpaceError, as_configspace
from automl_bilevel.frontends.experiment import Experiment, ExperimentError
from automl_bilevel.run.engine import AllTrialsFailedError


@pytest.fixture
def no_work(monkeypatch):
    """Any search that starts fails the test: the error must come before any work."""

    def search(*args, **kwargs):
        raise AssertionError("the search started")

    monkeypatch.setattr(estimator_base, "run_search", search)  # every estimator searches through it


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X.astype(np.float32), y


def _fit(X, y, learner="logistic", objective="val_loss", optimizer="hypergradient", **kw):
    return BilevelClassifier(learner, objective, optimizer, n_iter=2, tracking=False, random_state=0, **kw).fit(X, y)


@pytest.mark.parametrize(
    "optimizer, params, message",
    [
        ("hypergradient", {"inner_steps": 0}, r"inner_steps must be an int in the range \[1, inf\) or None, got 0"),
        ("hypergradient", {"inner_steps": -3}, "inner_steps must be"),
        ("hypergradient", {"mode": "truncated", "truncate": -1}, "truncate must be an int in the range"),
        ("hypergradient", {"patience": -1}, "patience must be an int in the range"),
        ("hypergradient", {"max_backoffs": -1}, "max_backoffs must be an int in the range"),
        ("hypergradient", {"outer_lr": math.inf}, "outer_lr must be positive .*got inf"),
        ("hypergradient", {"outer_lr": "0.1"}, "outer_lr must be positive .*got '0.1'"),
        ("hypergradient", {"solver_iters": 0}, "solver_iters must be an int in the range"),
        ("hypergradient", {"tensor_hyperparameters": "l"}, "tensor_hyperparameters must be a list or a tuple, got 'l'"),
        ("hypergradient", {"inner_steps": True}, "inner_steps must be"),
        ("smac", {"n_initial": "2"}, "n_initial must be an int in the range .*got '2'"),
        ("smac", {"random_probability": "0.5"}, r"random_probability must be a float in the range \[0.0, 1.0\]"),
        ("smac", {"use_priors": "no"}, "use_priors must be True or False, got 'no'"),
        ("smac", {"logging_level": "x"}, "logging_level must be an int in the range"),
        ("es", {"lr": "x"}, "lr must be positive .*got 'x'"),
        ("es", {"population_size": 1}, "population_size must be"),
        ("random", {"start_with_default": "yes"}, "start_with_default must be True or False, got 'yes'"),
        ("hybrid", {"blackbox": "random", "warm_start": "no"}, "warm_start must be True or False, got 'no'"),
        ("hybrid", {"blackbox": "random", "inner_steps": 0}, "inner_steps must be an int in the range"),
    ],
)
def test_optimizer_settings_are_refused_by_their_table_before_any_work(iris, no_work, optimizer, params, message):
    kw = {"learner": "sklearn", "objective": "val_error"} if optimizer != "hypergradient" else {}
    with pytest.raises(ValueError, match=message):
        _fit(*iris, optimizer=optimizer, optimizer_params=params, **kw)


def test_a_tensor_init_of_the_wrong_length_names_the_setting_and_the_shape(iris):
    with pytest.raises(ValueError, match=r"tensor_init\['l2_per_feature'\] has shape \(3,\), but .* needs \(4,\)"):
        _fit(
            *iris,
            optimizer_params={
                "tensor_hyperparameters": ["l2_per_feature"],
                "tensor_init": {"l2_per_feature": [1, 2, 3]},
            },
        )


@pytest.mark.parametrize(
    "space, message",
    [
        ({"C": {"low": 0.01, "high": 10.0, "log": "false"}}, "'log' must be true or false"),
        ({"C": {"low": 0.01, "high": 10.0, "type": "str"}}, "'type' must be 'int' or 'float'"),
        ({"C": (1e-300, 1e300, "log")}, r"'C': the log-scale range \[1e-300, 1e\+300\] spans 600 decades"),
        ({"C": (1e-16, 0.1, "log")}, "'C': ConfigSpace cannot search the range"),
        ({"C": (-1e300, 1e300)}, "too wide to search on a linear scale"),
    ],
)
def test_bad_search_space_entries_are_refused_clearly(space, message):
    with pytest.raises(InvalidSearchSpaceError, match=message):
        as_configspace(space, seed=0)


def test_a_string_log_flag_in_a_search_space_fails_the_fit_before_work(iris, no_work):
    with pytest.raises(InvalidSearchSpaceError, match="'log' must be true or false"):
        _fit(*iris, "sklearn", "val_error", "random", search_space={"C": {"low": 0.01, "high": 10.0, "log": "false"}})


@pytest.mark.parametrize(
    "n, kw, message",
    [
        (150, {"validation_fraction": 0.001}, "validation_fraction=0.001 of 150 samples gives 1 validation"),
        (150, {"validation_fraction": 0.01}, r"fewer than one per class \(3 classes\)"),
        (3, {}, "needs at least 2 validation samples"),
        (150, {"cv": 1000}, "cv=1000 needs at least 1000 samples per class; the smallest class has 50"),
    ],
)
def test_splits_the_data_cannot_honour_are_refused(iris, no_work, n, kw, message):
    X, y = iris
    idx = np.r_[0, 50, 100] if n == 3 else np.arange(150)
    with pytest.raises(ValueError, match=message):
        _fit(X[idx], y[idx], "sklearn", "val_error", "random", **kw)


def test_a_huge_feature_value_is_refused_before_work(iris, no_work):
    X, y = iris
    X = X.astype(np.float64)
    X[17, 2] = 1e300
    with pytest.raises(ValueError, match=r"X\[17, 2\] = 1e\+300 \(feature 2\) is beyond float32's range"):
        _fit(X, y, "sklearn", "val_error", "random")


def test_a_large_feature_value_is_warned_about_loudly(iris):
    X, y = iris
    X = X.astype(np.float64)
    X[3, 1] = 1e14
    with pytest.warns(UserWarning, match=r"X\[3, 1\] = 100000000000000.0 \(feature 1\).*scale them"):
        _fit(X, y, "sklearn", "val_error", "random")


def test_a_frame_with_a_non_numeric_column_names_the_column(iris, no_work):
    # without preprocessing (preprocess="none"); the default one-hot encodes them (tests/frontends/test_tabular.py)
    pd = pytest.importorskip("pandas")
    X, y = iris
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(colour=["y"] * len(y))
    frame["kind"] = pd.Categorical(["p"] * len(y))
    with pytest.raises(ValueError, match=r"column\(s\) 'colour', 'kind' are not numeric"):
        _fit(frame, y, "sklearn", "val_error", "random", preprocess="none")


# -- experiment files --------------------------------------------------------------------------------------
def _experiment(**sections):
    raw = {
        "data": {"dataset": "iris"},
        "estimator": {"learner": "sklearn", "n_iter": 1},
        "tracking": {"enabled": False},
    }
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return raw


def test_an_experiment_name_longer_than_mlflow_allows_is_a_clear_error():
    with pytest.raises(ExperimentError, match="name is 600 characters long; at most 500"):
        Experiment.from_dict(_experiment(name="x" * 600))
    with pytest.raises(ExperimentError, match=r"\[tracking\] experiment must be a non-empty string of at most 500"):
        Experiment.from_dict(_experiment(tracking={"experiment": "x" * 600}))


def test_too_few_samples_in_an_experiment_file_names_max_samples(no_work):
    exp = Experiment.from_dict(_experiment(data={"max_samples": 3}))
    with pytest.raises(ExperimentError, match=r"\[data\] max_samples = 3 is too few for dataset 'iris'"):
        exp.run(verbose=0)


def test_a_continuous_target_with_task_classification_is_a_clear_error(no_work):
    exp = Experiment.from_dict(_experiment(data={"dataset": "diabetes"}, estimator={"task": "classification"}))
    with pytest.raises(ExperimentError, match="has a continuous target .* use task = 'regression'"):
        exp.run(verbose=0)


# -- meta-training -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.reshape(-1, 1, 8, 8).astype(np.float32) / 16, y


def _meta(method="protonet", **kw):
    base = dict(n_way=2, k_shot=1, q_queries=2, meta_iters=2, tracking=False, random_state=0)
    return MetaLearnerClassifier(method, **{**base, **kw})


@pytest.mark.parametrize(
    "method, params, message",
    [
        ("protonet", {"width": 0}, "width must be an int in the range"),
        ("protonet", {"width": -4}, "width must be an int in the range"),
        ("hyperrep", {"mode": "nope"}, "mode must be one of"),
    ],
)
def test_meta_learner_settings_are_refused_before_any_work(digits, no_work, method, params, message):
    with pytest.raises(ValueError, match=message):
        _meta(method, method_params={"depth": 2, **params}).fit(*digits)


def test_meta_training_with_no_finished_step_raises_as_bilevel_classifier_does(digits):
    with pytest.raises(AllTrialsFailedError, match="no meta-training step finished: .*timeout"):
        _meta(method_params={"width": 8, "depth": 2}, timeout=1e-9).fit(*digits)
