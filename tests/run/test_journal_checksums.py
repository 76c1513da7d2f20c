"""Journal records carry a checksum: an edited or corrupted record is refused with file:line, a torn
last line is still dropped, and a damaged header is a clear error (issue 24)."""

from __future__ import annotations

import json

import pytest
from sklearn.datasets import load_iris

from automl_bilevel import BilevelClassifier
from automl_bilevel.run.journal import JournalMismatchError, JournalRecordError, checksum

SPACE = {"C": (0.01, 100.0, "log")}


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


def fit(path, n, iris):
    return BilevelClassifier(
        "sklearn", "val_error", "random", search_space=SPACE, n_iter=n, checkpoint=path, tracking=False, random_state=0
    ).fit(*iris)


def _edit(path, line_no, change):
    lines = path.read_text().splitlines()
    lines[line_no - 1] = change(lines[line_no - 1])
    path.write_text("\n".join(lines) + "\n")


def test_every_record_and_the_header_carry_their_checksum(tmp_path, iris):
    path = tmp_path / "search.jsonl"
    fit(path, 3, iris)
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        assert rec["sum"] == checksum(rec)


def _forge_value(line: str) -> str:
    rec = json.loads(line)
    rec["value"] = -100.0  # inside the space, well formed: only the checksum tells
    return json.dumps(rec, sort_keys=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (_forge_value, "checksum mismatch: the record was edited or corrupted"),
        (lambda line: line.replace('"COMPLETE"', '"FAILED"'), "checksum mismatch"),
        (lambda line: json.dumps({k: v for k, v in json.loads(line).items() if k != "sum"}), "has no checksum"),
        (lambda line: line[:10] + "\x00" + line[11:], "corrupt record"),
    ],
)
def test_an_edited_or_corrupted_record_is_refused_with_file_and_line(tmp_path, iris, change, message):
    path = tmp_path / "search.jsonl"
    fit(path, 3, iris)
    _edit(path, 3, change)
    with pytest.raises(JournalRecordError, match=message) as info:
        fit(path, 5, iris)
    assert f"{path}:3:" in str(info.value)


def test_a_torn_last_line_is_still_dropped(tmp_path, iris):
    path = tmp_path / "search.jsonl"
    fit(path, 3, iris)
    whole = path.read_text().splitlines()[-1]
    with path.open("a") as fh:
        fh.write(whole[: len(whole) // 2])  # killed mid-write
    assert fit(path, 5, iris).n_trials_ == 5
    assert all(json.loads(line)["sum"] for line in path.read_text().splitlines())


@pytest.mark.parametrize(
    "change, error, message",
    [
        (
            lambda h: {**h, "seed": "abc"},
            JournalMismatchError,
            r":1: (checksum mismatch|the header's seed must be an integer)",
        ),
        (
            lambda h: {k: v for k, v in h.items() if k != "sum"} | {"seed": "abc"},
            JournalRecordError,
            ":1: the record has no checksum",
        ),
        (lambda h: {**h, "version": 7}, JournalMismatchError, "unknown checkpoint version 7"),
    ],
)
def test_a_damaged_header_is_a_clear_error(tmp_path, iris, change, error, message):
    path = tmp_path / "search.jsonl"
    fit(path, 2, iris)
    _edit(path, 1, lambda line: json.dumps(change(json.loads(line))))
    with pytest.raises(error, match=message):
        fit(path, 3, iris)


def test_a_header_with_a_non_integer_seed_and_a_valid_checksum_is_a_clear_error(tmp_path, iris):
    path = tmp_path / "search.jsonl"
    fit(path, 2, iris)

    def bad_seed(line):
        h = {k: v for k, v in json.loads(line).items() if k != "sum"} | {"seed": "abc"}
        return json.dumps({**h, "sum": checksum(h)})

    _edit(path, 1, bad_seed)
    with pytest.raises(JournalMismatchError, match=r":1: the header's seed must be an integer, got 'abc'"):
        fit(path, 3, iris)


def test_a_checkpoint_written_before_checksums_is_still_read(tmp_path, iris, monkeypatch):
    from automl_bilevel.run import journal

    warned = []
    monkeypatch.setattr(journal.log, "warning", lambda msg, *args: warned.append(msg % args))
    path = tmp_path / "search.jsonl"
    fit(path, 2, iris)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[0]["version"] = 1
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "sum"}) + "\n" for r in lines))
    assert fit(path, 3, iris).n_trials_ == 3
    assert any("predates record checksums" in w for w in warned)
