"""The checkpoint journal under crashes and forged or damaged records."""

from __future__ import annotations

import json

import pytest

from automl_bilevel import BilevelClassifier, as_configspace
from automl_bilevel.run.journal import Journal, JournalRecordError
from mlflow import MlflowClient

SPACE = {"C": (0.01, 100.0, "log")}


def fit(path, n, iris, **kw):
    return BilevelClassifier(
        "sklearn",
        "val_error",
        "random",
        search_space=SPACE,
        n_iter=n,
        checkpoint=path,
        tracking=False,
        random_state=0,
        **kw,
    ).fit(*iris)


def test_a_torn_last_line_is_dropped_so_a_second_resume_still_works(tmp_path, iris):
    path = tmp_path / "search.jsonl"
    fit(path, 3, iris)
    with path.open("a") as fh:
        fh.write('{"config": {"C": 1.0}, "val')  # killed mid-write
    assert fit(path, 5, iris).n_trials_ == 5
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 5 and all(json.loads(line) for line in lines)  # no record glued onto the torn one
    with path.open("a") as fh:
        fh.write('{"config": {"C"')
    assert fit(path, 7, iris).n_trials_ == 7
    assert len(path.read_text().splitlines()) == 1 + 7


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path, iris):
    path = tmp_path / "search.jsonl"
    fit(path, 3, iris)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    est = fit(path, 4, iris)
    assert est.n_trials_ == 4 and len(path.read_text().splitlines()) == 1 + 4


def _journal_with(tmp_path, record) -> Journal:
    path = tmp_path / "search.jsonl"
    j = Journal(path, {"a": 1})
    j.open(0)
    with path.open("a") as fh:
        fh.write(json.dumps({"config": {"C": 1.0}, "value": 0.1, "status": "COMPLETE", "duration": 0.1}) + "\n")
        fh.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return Journal(path, {"a": 1})


@pytest.mark.parametrize(
    "record, message",
    [
        ({"config": {"C": 1e9}, "value": -5.0, "status": "COMPLETE", "duration": 0.1}, r"C=1000000000.0 is outside"),
        (
            {"config": {"gamma": 1.0}, "value": 0.1, "status": "COMPLETE", "duration": 0.1},
            "'gamma' is not a hyperparameter",
        ),
        ({"config": {"C": 1.0}, "value": 0.1, "status": "COMPLETE"}, "record lacks duration"),
        ({"config": {"C": 1.0}, "value": "low", "status": "COMPLETE", "duration": 0.1}, "'value' must be a number"),
        ({"config": {"C": 1.0}, "value": 0.1, "status": "DONE", "duration": 0.1}, "'status' must be"),
        ({"config": {"C": 1.0}, "value": None, "status": "COMPLETE", "duration": 0.1}, "COMPLETE trial needs"),
        ({"config": {"C": 1.0}, "value": 0.1, "status": "COMPLETE", "duration": -1}, "'duration' must be"),
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "corrupt record"),
    ],
)
def test_bad_records_are_refused_with_file_and_line(tmp_path, record, message):
    j = _journal_with(tmp_path, record)
    j.path.write_text(
        j.path.read_text()
        + json.dumps({"config": {"C": 1.0}, "value": 0.1, "status": "COMPLETE", "duration": 0.1})
        + "\n"
    )  # the bad one is not last
    with pytest.raises(JournalRecordError, match=message) as info:
        j.open(0, as_configspace(SPACE))
    assert f"{j.path}:3:" in str(info.value)


def test_a_forged_record_never_becomes_the_best(tmp_path, iris):
    path = tmp_path / "search.jsonl"
    fit(path, 2, iris)
    with path.open("a") as fh:
        fh.write(json.dumps({"config": {"C": 1e9}, "value": -1.0, "status": "COMPLETE", "duration": 0.1}) + "\n")
    with pytest.raises(JournalRecordError, match=r"search.jsonl:4: C=1000000000.0 is outside the search space"):
        fit(path, 4, iris)


@pytest.mark.parametrize(
    "make_path, message",
    [
        (lambda tmp: "", "checkpoint must be a file path, got ''"),
        (lambda tmp: str(tmp), "is a directory; give a file path"),
    ],
)
def test_unusable_checkpoint_paths_fail_before_a_run_exists(tmp_path, iris, tracking, make_path, message):
    uri, experiment = tracking
    with pytest.raises(ValueError, match=message):
        BilevelClassifier(
            "sklearn",
            "val_error",
            "random",
            n_iter=2,
            checkpoint=make_path(tmp_path),
            tracking_uri=uri,
            experiment_name=experiment,
        ).fit(*iris)
    assert MlflowClient(uri).get_experiment_by_name(experiment) is None
