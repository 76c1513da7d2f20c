"""Trial records and the history table (``history_``): one column per hyperparameter, as Optuna's."""

from __future__ import annotations

import math

import pandas as pd
from sklearn.datasets import load_iris

from automl_bilevel import COMPLETE, FAILED, BilevelClassifier, Trial
from automl_bilevel.core.trials import history_table


def test_history_has_one_params_column_per_hyperparameter():
    trials = [
        Trial(0, {"kernel": "rbf", "C": 1.0, "gamma": 0.1}, 0.3),
        Trial(1, {"kernel": "linear", "C": 10.0}, math.nan, FAILED, error="ValueError: boom"),  # gamma inactive
        Trial(2, {"kernel": "rbf", "C": 0.5, "gamma": 0.01}, 0.2, budget=0.5),
    ]
    h = history_table(trials)
    assert h["params_kernel"] == ["rbf", "linear", "rbf"]
    assert h["params_C"] == [1.0, 10.0, 0.5]
    assert h["params_gamma"] == [0.1, None, 0.01]
    assert h["best_value"] == [0.3, 0.3, 0.2] and h["status"] == [COMPLETE, FAILED, COMPLETE]
    assert h["budget"] == [None, None, 0.5] and h["params"][1] == {"kernel": "linear", "C": 10.0}
    assert list(h)[-3:] == ["params_kernel", "params_C", "params_gamma"]  # in order of first appearance
    assert history_table([]) == {
        k: [] for k in ("number", "value", "best_value", "status", "duration", "budget", "params", "error")
    }


def test_history_is_a_data_frame_like_optunas_trials_dataframe():
    est = BilevelClassifier(
        "sklearn",
        "val_error",
        n_iter=4,
        tracking=False,
        random_state=0,
        search_space={"C": (0.01, 100.0, "log"), "fit_intercept": [True, False]},
    )
    df = pd.DataFrame(est.fit(*load_iris(return_X_y=True)).history_)
    assert len(df) == 4 and {"number", "value", "params_C", "params_fit_intercept"} <= set(df.columns)
    assert df["params_C"].between(0.01, 100.0).all()
    best = df.loc[df["value"].idxmin()]
    assert (
        best["params_C"] == est.best_params_["C"] and best["params_fit_intercept"] == est.best_params_["fit_intercept"]
    )
