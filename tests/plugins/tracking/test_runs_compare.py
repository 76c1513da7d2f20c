"""MLflow runs that compare (issue 25 item 2): the parent carries the fit's result as params and metrics,
names and models are the user's choice, and fits inside scikit-learn meta-estimators are told apart."""

from __future__ import annotations

import pytest
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV, cross_val_score

import mlflow
from automl_bilevel import BilevelClassifier
from automl_bilevel.frontends.experiment import Experiment, ExperimentError
from mlflow import MlflowClient


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


def _runs(uri, experiment):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def _parents(runs):
    return [r for r in runs if "automl_bilevel.trial" not in r.data.tags]


def test_the_parent_carries_the_best_params_and_value_and_no_single_trial_value(iris, tracking):
    uri, experiment = tracking
    est = BilevelClassifier(
        n_iter=5, random_state=1, tracking_uri=uri, experiment_name=experiment, run_name="my fit"
    ).fit(*iris)
    client, runs = _runs(uri, experiment)
    (parent,) = _parents(runs)
    assert parent.info.run_name == "my fit"
    assert parent.data.metrics["best_value"] == pytest.approx(est.best_value_)
    for k, v in est.best_params_.items():
        assert float(parent.data.params[f"best.{k}"]) == pytest.approx(v)
    assert parent.data.tags["automl_bilevel.best_trial"] == str(est.best_trial_.number)
    # no parent metric is one trial's value: the trials' values are on the children only
    assert "value" not in parent.data.metrics and "duration" not in parent.data.metrics
    trial_values = {round(c.data.metrics["value"], 12) for c in runs if "automl_bilevel.trial" in c.data.tags}
    worst = max(trial_values)
    assert worst > est.best_value_  # the run had a trial worse than its best: the parent never shows it
    assert all(round(v, 12) != worst for k, v in parent.data.metrics.items() if not k.startswith("final.n"))
    # the runs table can sort fits by their result
    ordered = client.search_runs(
        [parent.info.experiment_id], "tags.automl_bilevel.fit = '1'", order_by=["metrics.best_value ASC"]
    )
    assert ordered[0].info.run_id == parent.info.run_id


def test_log_model_false_logs_no_model(iris, tracking):
    uri, experiment = tracking
    BilevelClassifier(n_iter=1, random_state=0, tracking_uri=uri, experiment_name=experiment, log_model=False).fit(
        *iris
    )
    client, runs = _runs(uri, experiment)
    (parent,) = _parents(runs)
    assert client.search_logged_models([parent.info.experiment_id]) == []
    assert parent.info.status == "FINISHED"


def test_bad_tracking_settings_are_refused_before_any_work(iris):
    with pytest.raises(ValueError, match="log_model"):
        BilevelClassifier(n_iter=1, tracking=False, log_model="no").fit(*iris)
    with pytest.raises(ValueError, match="run_name"):
        BilevelClassifier(n_iter=1, tracking=False, run_name=3).fit(*iris)


def test_experiment_file_tracking_keys(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text(
        '[data]\ndataset = "iris"\n[tracking]\nrun_name = "nightly"\nlog_model = false\nlog_plots = false\n'
    )
    est = Experiment.load(path).build_estimator("classification")
    assert (est.run_name, est.log_model, est.log_plots) == ("nightly", False, False)
    path.write_text('[data]\ndataset = "iris"\n[tracking]\nlog_model = "false"\n')
    with pytest.raises(ExperimentError, match="log_model"):
        Experiment.load(path)


def test_grid_search_fits_nest_under_the_users_run_and_are_told_apart(iris, tracking):
    uri, experiment = tracking
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    est = BilevelClassifier(n_iter=1, random_state=0, tracking_uri=uri, experiment_name=experiment, log_model=False)
    grid = GridSearchCV(est, {"validation_fraction": [0.2, 0.3]}, cv=2)
    with mlflow.start_run(run_name="grid") as outer:
        grid.fit(*iris)
        cross_val_score(est, *iris, cv=2)
    client, runs = _runs(uri, experiment)
    fits = [r for r in _parents(runs) if r.info.run_id != outer.info.run_id]
    assert len(fits) == 2 * 2 + 1 + 2  # two candidates x two folds, the refit, two folds of cross_val_score
    assert all(r.data.tags["mlflow.parentRunId"] == outer.info.run_id for r in fits)
    by_hash: dict[str, list[int]] = {}
    for r in fits:
        by_hash.setdefault(r.data.tags["automl_bilevel.settings_hash"], []).append(
            int(r.data.tags["automl_bilevel.fit"])
        )
    assert len(by_hash) == 2  # one hash per candidate (cross_val_score's fits share the first's settings)
    counts = sorted((sorted(v) for v in by_hash.values()), key=len)
    # the default (0.2): two folds (+ the refit if it won) + cross_val_score's two; 0.3: two folds (+ the refit)
    expected = [2, 5] if grid.best_params_["validation_fraction"] == 0.2 else [3, 4]
    assert [len(v) for v in counts] == expected
    assert all(v == list(range(v[0], v[0] + len(v))) for v in counts)  # a counter, never repeated
    assert all(r.info.status == "FINISHED" for r in fits)
