"""Reading a checkpoint never runs code, and writing one never follows a planted symlink (issue 24)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_iris

from automl_bilevel import BilevelClassifier
from automl_bilevel.run import checkpoint as checkpoint_module
from automl_bilevel.run.safe_io import (
    CheckpointWriteError,
    UnsafeCheckpointError,
    check_plain,
    load_plain,
)

SPACE = {"C": (0.01, 100.0, "log")}
SMALL = {"epochs": 2, "batch_size": 4096, "hidden_units": 8}


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X.astype("float32"), y


def _hypergradient(path, n, **kw):
    return BilevelClassifier(
        "logistic",
        "val_loss",
        "hypergradient",
        n_iter=n,
        checkpoint=path,
        tracking=False,
        random_state=0,
        learner_params={"epochs": 3},
        **kw,
    )


class _Payload:
    """Unpickling this calls ``os.system``: what an attacker plants as ``<checkpoint>.state``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_a_planted_state_that_would_run_code_is_refused_with_its_path_and_runs_nothing(tmp_path, iris, how):
    path = tmp_path / "search.jsonl"
    _hypergradient(path, 2).fit(*iris)
    state = Path(f"{path}.state")
    marker = tmp_path / "pwned"
    payload = {"format": "automl_bilevel.outer_state", "n_trials": 2, "state": _Payload(marker)}
    with state.open("wb") as fh:
        if how == "pickle":
            pickle.dump(payload, fh)
        else:
            torch.save(payload, fh)
    with pytest.raises(UnsafeCheckpointError, match=rf"{state}.*refused without running it"):
        _hypergradient(path, 4).fit(*iris)
    assert not marker.exists()


def test_the_outer_state_on_disk_is_plain_data_readable_with_weights_only(tmp_path, iris):
    path = tmp_path / "search.jsonl"
    _hypergradient(path, 2).fit(*iris)
    saved = torch.load(f"{path}.state", weights_only=True)
    check_plain(saved)
    assert saved["n_trials"] == 2 and saved["state"]["step"] == 2
    assert load_plain(Path(f"{path}.state"))["n_trials"] == 2


def test_check_plain_names_the_entry_that_is_not_plain_data():
    import numpy as np

    check_plain({"a": [1, 2.0, None, "x", torch.ones(2)], 3: (True,)})
    with pytest.raises(TypeError, match=r"state\['a'\]\[1\] is a numpy.ndarray"):
        check_plain({"a": [1, np.ones(2)]})
    with pytest.raises(TypeError, match="keys must be str or int"):
        check_plain({(1, 2): 1})


def _fit_random(path, n, iris):
    return BilevelClassifier(
        "sklearn", "val_error", "random", search_space=SPACE, n_iter=n, checkpoint=path, tracking=False, random_state=0
    ).fit(*iris)


def test_a_symlink_planted_at_a_temporary_name_is_never_written_through(tmp_path, iris):
    path = tmp_path / "search.jsonl"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    # the names the old code used for its temporary files
    for name in (f"{path}.state.tmp", f"{path}.tmp"):
        os.symlink(victim, name)
    _hypergradient(path, 2).fit(*iris)
    _hypergradient(path, 3).fit(*iris)
    assert victim.read_text() == "precious"
    assert torch.load(f"{path}.state", weights_only=True)["n_trials"] == 3


def test_a_symlink_at_the_checkpoint_path_is_refused_and_its_target_is_not_created(tmp_path, iris):
    path = tmp_path / "search.jsonl"
    target = tmp_path / "elsewhere" / "created.jsonl"
    target.parent.mkdir()
    os.symlink(target, path)
    with pytest.raises(UnsafeCheckpointError, match="is a symbolic link"):
        _fit_random(path, 2, iris)
    assert not target.exists()


def test_a_symlink_at_the_state_path_is_not_written_through(tmp_path, iris):
    path = tmp_path / "search.jsonl"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, f"{path}.state")
    _hypergradient(path, 2).fit(*iris)  # a fresh journal: the planted link is removed, not followed
    assert victim.read_text() == "precious" and not Path(f"{path}.state").is_symlink()


def test_a_checkpoint_under_the_home_folder_expands_the_user(tmp_path, iris, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    _fit_random("~/x.jsonl", 2, iris)
    assert (tmp_path / "home" / "x.jsonl").exists() and not (tmp_path / "~").exists()


def _in_own_mount(tmp_path: Path, mount_opts: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with a small tmpfs mounted (``mount_opts``) at ``tmp_path/mnt`` in a private
    mount namespace: a real full or read-only file system, without touching the machine's."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code = tmp_path / "script.py"
    code.write_text(textwrap.dedent(script))
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no mount namespaces here (unshare -r -m)")
    return subprocess.run(
        [
            "unshare",
            "-r",
            "-m",
            "sh",
            "-c",
            f"mount -t tmpfs -o {mount_opts} tmpfs {mnt} && exec {sys.executable} {code} {mnt}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )


FIT = """
import sys
from sklearn.datasets import load_iris
from automl_bilevel import BilevelClassifier
calls = []
class Counting:
    pass
import automl_bilevel_plugins.optimizers.random_search as rs
tell = rs.RandomSearch.tell
def counted(self, p, t):
    calls.append(t.number)
    return tell(self, p, t)
rs.RandomSearch.tell = counted
X, y = load_iris(return_X_y=True)
try:
    BilevelClassifier("sklearn", "val_error", "random", search_space={"C": (0.01, 100.0, "log")},
                      n_iter=200, checkpoint=sys.argv[1] + "/search.jsonl", tracking=False,
                      random_state=0).fit(X, y)
except Exception as exc:
    print("ERROR", type(exc).__name__, exc)
print("TRIALS", len(calls))
"""


def test_a_read_only_checkpoint_folder_fails_when_the_checkpoint_is_opened(tmp_path):
    out = _in_own_mount(tmp_path, "ro,size=64k", FIT)
    assert "ERROR CheckpointWriteError cannot write checkpoint file" in out.stdout, out.stdout + out.stderr
    assert f"{tmp_path}/mnt/search.jsonl" in out.stdout and "Read-only file system" in out.stdout
    assert "TRIALS 0" in out.stdout  # refused before the first trial


def test_a_full_disk_gives_an_error_naming_the_checkpoint(tmp_path):
    out = _in_own_mount(tmp_path, "size=8k", FIT)  # a few dozen records fill it
    assert "ERROR CheckpointWriteError cannot write checkpoint file" in out.stdout, out.stdout + out.stderr
    assert f"{tmp_path}/mnt/search.jsonl" in out.stdout and "the disk is full" in out.stdout


def test_write_errors_are_checkpoint_write_errors():
    assert issubclass(CheckpointWriteError, OSError)
    assert checkpoint_module.STATE_FORMAT == "automl_bilevel.outer_state"
