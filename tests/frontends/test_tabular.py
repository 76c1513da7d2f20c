"""Tabular data from files and frames (issue 25 item 4): a CSV with text columns and missing values runs
through `automl-bilevel run`; the encoding and imputation are part of the fitted and logged model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import mlflow
from automl_bilevel import BilevelClassifier
from automl_bilevel.frontends.cli import main
from automl_bilevel.frontends.data import load_dataset
from automl_bilevel.frontends.experiment import Experiment


def _table(n=240, seed=0):
    """An OpenML-style table (credit-g like): numbers, text categories, a boolean, missing values; the
    label depends on a category and a number, so a model that ignores either is worse."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "duration": rng.integers(4, 72, n).astype(float),
            "purpose": rng.choice(["car", "furniture", "education", "business"], n),
            "amount": rng.lognormal(8, 0.6, n).round(0),
            "housing": rng.choice(["own", "rent", "free"], n),
            "foreign_worker": rng.choice([True, False], n),
        }
    )
    risk = (df["purpose"] == "education") | (df["duration"] > 48)
    df["class"] = np.where(risk, "bad", "good")
    df.loc[::9, "amount"] = np.nan
    df.loc[::13, "housing"] = np.nan
    df = df[["class", "duration", "purpose", "amount", "housing", "foreign_worker"]]  # the target first
    return df


def test_a_csv_with_text_and_missing_values_runs_from_the_cli(tmp_path):
    csv = tmp_path / "credit.csv"
    _table().to_csv(csv, index=False)
    exp = tmp_path / "e.toml"
    exp.write_text(
        f'[data]\ndataset = "{csv}"\ntarget = "class"\n[estimator]\nlearner = "sklearn"\nobjective = "val_error"\n'
        "n_iter = 3\nrandom_state = 0\n[tracking]\nenabled = false\n"
    )
    out = tmp_path / "r.json"
    assert main(["run", str(exp), "-q", "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["task"] == "classification" and res["test_score"] > 0.85  # "good" alone is about 0.65


def test_the_fitted_and_logged_model_encode_new_rows(tmp_path, tracking):
    uri, experiment = tracking
    csv = tmp_path / "credit.csv"
    _table().to_csv(csv, index=False)
    X, y, task = load_dataset(str(csv), target="class")
    assert isinstance(X, pd.DataFrame) and list(X.columns)[0] == "duration" and task == "classification"
    est = BilevelClassifier(
        "sklearn", "val_error", n_iter=2, random_state=0, tracking_uri=uri, experiment_name=experiment, log_plots=False
    ).fit(X, y)
    names = list(est.preprocessor_.get_feature_names_out())
    assert "categorical__purpose_education" in names and "numeric__missingindicator_amount" in names
    new = pd.DataFrame(
        {
            "duration": [60.0, 12.0],
            "purpose": ["education", "a category never seen"],
            "amount": [np.nan, 3000.0],
            "housing": [None, "own"],
            "foreign_worker": [False, True],
        }
    )
    pred = est.predict(new)
    assert list(pred) == ["bad", "good"]
    mlflow.set_tracking_uri(uri)
    logged = mlflow.sklearn.load_model(f"runs:/{est.mlflow_run_id_}/model")
    assert list(logged.predict(new)) == list(pred)  # the encoding travels with the logged model


def test_an_array_with_missing_values_is_imputed_and_preprocess_none_names_text_columns():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] > 0).astype(int)
    X[::5, 1] = np.nan
    est = BilevelClassifier("sklearn", "val_error", n_iter=1, random_state=0, tracking=False).fit(X, y)
    assert est.n_features_in_ == 4  # three columns and the indicator of the one with missing values
    assert est.predict(np.array([[1.0, np.nan, 0.0]])).shape == (1,)
    df = _table().drop(columns="class")
    with pytest.raises(ValueError, match="column\\(s\\) 'purpose', 'housing' are not numeric; pass preprocess='auto'"):
        BilevelClassifier(n_iter=1, tracking=False, preprocess="none").fit(df, np.resize(y, len(df)))
    with pytest.raises(ValueError, match="preprocess"):
        BilevelClassifier(n_iter=1, tracking=False, preprocess="yes").fit(X, y)


def test_a_target_that_is_not_a_column_is_refused_by_name(tmp_path):
    csv = tmp_path / "credit.csv"
    _table(20).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="target = 'klass' is not a column; the columns are 'class', 'duration'"):
        load_dataset(str(csv), target="klass")
    with pytest.raises(ValueError, match="names a column of a CSV file; dataset 'iris' is not one"):
        load_dataset("iris", target="class")
    (tmp_path / "e.toml").write_text('[data]\ndataset = "iris"\ntarget = 3\n')
    with pytest.raises(ValueError, match="target"):
        Experiment.load(tmp_path / "e.toml")
