"""Bad input found when tried: each is refused with a message that names the problem, before any work."""

from __future__ import annotations

import os
import time

import pytest
from sklearn.datasets import load_iris

from automl_bilevel import BilevelClassifier
from automl_bilevel.frontends.cli import main
from automl_bilevel.frontends.data import DatasetNotFoundError, load_dataset
from automl_bilevel.frontends.experiment import Experiment, ExperimentError
from automl_bilevel.run.engine import AllTrialsFailedError
from mlflow import MlflowClient


@pytest.mark.parametrize(
    "section, line, message",
    [
        ("tracking", 'enabled = "false"', r"\[tracking\] enabled must be true or false .*got 'false'"),
        (
            "estimator",
            'task = "regresion"',
            r"\[estimator\] task must be 'classification' or 'regression', got 'regresion'",
        ),
        ("data", "max_samples = -5", r"\[data\] max_samples must be an integer >= 1, got -5"),
        ("estimator", 'n_iter = "20"', r"n_iter must be an integer >= 1, got '20'"),
        ("estimator", "n_iter = true", r"n_iter must be an integer >= 1, got True"),
        ("data", "test_size = 1.5", r"test_size must be a number between 0 and 1"),
        ("estimator", 'checkpoint = ""', r"checkpoint must be a non-empty string"),
        ("estimator", "learner_params = 3", r"learner_params must be a table"),
    ],
)
def test_experiment_values_are_typed(tmp_path, section, line, message):
    body = {"data": ['dataset = "iris"'], "estimator": [], "tracking": []}
    body[section].append(line)
    text = "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in body.items())
    (tmp_path / "e.toml").write_text(text)
    with pytest.raises(ExperimentError, match=message):
        Experiment.load(tmp_path / "e.toml")


def test_csv_with_another_separator_and_text_labels(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a;b;label\n1.0;2.0;cat\n3.0;4.5;dog\n0.5;1.0;cat\n")
    X, y, task = load_dataset(str(p))
    assert X.shape == (3, 2) and list(y) == ["cat", "dog", "cat"] and task == "classification"


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b,target\n", "only a header row, no data rows"),
        ("", "the file is empty"),
        ("a,b,target\n1,2,\n2,3,1\n", "target column 'target' has missing values \\(first in row 2"),
        ("onlyone\n1\n2\n", "needs at least one feature column"),
    ],
)
def test_bad_csv_files_name_the_problem(tmp_path, text, message):
    p = tmp_path / "d.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_dataset(str(p))


def test_a_missing_data_dir_does_not_fall_back_to_another_copy(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data_dir .*nowhere.* is not a folder"):
        load_dataset("mnist", data_dir=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", data_dir=str(tmp_path / "empty"))
    assert "shared" not in str(err.value) and "/usr/share" not in str(err.value)  # looked only there


@pytest.mark.parametrize("bad", [-5, 0, 2.5, True])
def test_max_samples_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="max_samples must be an integer >= 1"):
        load_dataset("iris", max_samples=bad)


def test_json_out_to_a_directory_is_refused_before_the_run(tmp_path, capsys, tracking):
    uri, experiment = tracking
    t0 = time.perf_counter()
    assert main(["run", "--n-iter", "2", "--tracking-uri", uri, "--json-out", str(tmp_path), "-q"]) == 2
    assert "is a directory" in capsys.readouterr().err and time.perf_counter() - t0 < 5
    assert (
        MlflowClient(uri).search_runs(
            [MlflowClient(uri).get_experiment_by_name("automl-bilevel").experiment_id]
            if MlflowClient(uri).get_experiment_by_name("automl-bilevel")
            else [],
            f"attributes.start_time > {int((time.time() - 30) * 1000)}",
        )
        == []
    )
    assert main(["run", "--no-tracking", "--json-out", str(tmp_path / "no" / "res.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_sqlite_store_in_an_unwritable_folder_fails_before_a_run(monkeypatch):
    from automl_bilevel_plugins.tracking.mlflow.store import TrackingError

    ro = "/proc/self"  # exists, and not even root may create files there
    assert os.path.isdir(ro)
    t0 = time.perf_counter()
    with pytest.raises(TrackingError, match="is not writable"):
        BilevelClassifier("sklearn", "val_error", n_iter=2, tracking_uri=f"sqlite:///{ro}/mlflow.db").fit(
            *load_iris(return_X_y=True)
        )
    assert time.perf_counter() - t0 < 10


def test_a_timeout_that_lets_no_trial_finish_says_so():
    with pytest.raises(
        AllTrialsFailedError, match=r"no trial finished: the search stopped by timeout \(timeout=1e-09\)"
    ):
        BilevelClassifier("sklearn", "val_error", n_iter=3, timeout=1e-9, tracking=False).fit(
            *load_iris(return_X_y=True)
        )


@pytest.mark.parametrize(
    "var, value, message",
    [
        ("AUTOML_BILEVEL_FLUSH_TIMEOUT", "soon", "is not a number of seconds"),
        ("AUTOML_BILEVEL_FLUSH_TIMEOUT", "-1", "must be >= 0"),
    ],
)
def test_bad_tracking_settings_fail_before_a_run(monkeypatch, tracking, var, value, message):
    from automl_bilevel_plugins.tracking.mlflow.store import TrackingError

    uri, experiment = tracking
    monkeypatch.setenv(var, value)
    with pytest.raises(TrackingError, match=message):
        BilevelClassifier("sklearn", "val_error", n_iter=2, tracking_uri=uri, experiment_name=experiment).fit(
            *load_iris(return_X_y=True)
        )
    assert MlflowClient(uri).get_experiment_by_name(experiment) is None


def test_nan_predictions_under_val_error_fail_the_trial():
    import numpy as np

    from automl_bilevel import InnerLearner

    class NaNModel:
        def predict(self, X):
            return np.full(len(X), np.nan)

    class NaNLearner(InnerLearner):
        def param_names(self, task):
            return None

        def fit(self, X, y, config, *, task, seed, budget=None):
            return NaNModel()

    with pytest.raises(AllTrialsFailedError, match="predicted 30 non-finite value"):
        BilevelClassifier(NaNLearner(), "val_error", n_iter=2, tracking=False, random_state=0).fit(
            *load_iris(return_X_y=True)
        )
