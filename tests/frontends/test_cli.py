"""The automl-bilevel command line: plugins listing and experiment runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from automl_bilevel.frontends.cli import main
from automl_bilevel.frontends.experiment import Experiment, ExperimentError
from mlflow import MlflowClient


def test_plugins_json_lists_the_builtins(capsys):
    assert main(["plugins", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    got = {(r["kind"], r["name"]) for r in out["plugins"]}
    assert {
        ("learner", "logistic"),
        ("learner", "mlp"),
        ("learner", "sklearn"),
        ("objective", "val_loss"),
        ("objective", "val_error"),
        ("optimizer", "random"),
        ("listener", "mlflow_tracking"),
    } <= got
    assert out["failed"] == []
    builtin = {"logistic", "mlp", "sklearn", "val_loss", "val_error", "random", "mlflow_tracking"}
    assert all(r["package"] == "automl-bilevel" for r in out["plugins"] if r["name"] in builtin)


def test_plugins_table_shows_a_plugin_that_failed_to_load(capsys, fake_dist):
    fake_dist("broken-pkg", {"broken": "broken_mod"}, {"broken_mod": "import not_a_module_xyz\n"})
    with pytest.warns(RuntimeWarning):
        assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "logistic" in out and "FAILED TO LOAD  broken (broken-pkg): ModuleNotFoundError" in out


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "automl_bilevel.frontends.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out)["plugins"]


EXPERIMENT = """
name = "iris-sklearn"
[data]
dataset = "iris"
test_size = 0.3
[estimator]
learner = "sklearn"
objective = "val_error"
optimizer = "random"
n_iter = 3
random_state = 0
[search_space]
C = {{low = 0.01, high = 100.0, log = true}}
[tracking]
enabled = true
uri = "{uri}"
experiment = "{experiment}"
"""


def test_run_an_experiment_file(tmp_path, capsys, tracking):
    uri, experiment = tracking
    path = tmp_path / "exp.toml"
    path.write_text(EXPERIMENT.format(uri=uri, experiment=experiment))
    out_json = tmp_path / "res.json"
    assert main(["run", str(path), "--json-out", str(out_json)]) == 0
    captured = capsys.readouterr()
    assert "best val_error" in captured.out and "test accuracy" in captured.out and "mlflow ui" in captured.out
    assert "3/3 best val_error=" in captured.err  # the progress bar
    res = json.loads(out_json.read_text())
    assert res["n_trials"] == 3 and set(res["best_params"]) == {"C"} and res["test_score"] > 0.8
    run = MlflowClient(uri).get_run(res["mlflow_run_id"])
    assert run.info.status == "FINISHED"


def test_run_default_experiment_without_tracking(capsys):
    assert main(["run", "--n-iter", "2", "--no-tracking", "-q"]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "2 (0 failed)" in out and "mlflow run" not in out


@pytest.mark.parametrize(
    "text, message",
    [
        ("[data]\ndataset='iris'\n[estimater]\nn_iter=2\n", r"unknown section\(s\) \['estimater'\]"),
        ("[data]\ndataset='iris'\n[estimator]\nn_itr=2\n", r"unknown key\(s\) \['n_itr'\] in \[estimator\]"),
        ("[estimator]\nn_iter=2\n", "needs a 'dataset'"),
        ("[data\n", "not valid TOML"),
    ],
)
def test_bad_experiment_files(tmp_path, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ExperimentError, match=message):
        Experiment.load(p)


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text("[data]\ndataset='nosuchset'\n")
    assert main(["run", str(p), "--no-tracking"]) == 2
    assert "unknown dataset 'nosuchset'" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2


def test_run_the_hypergradient_experiment_file(capsys, tracking):
    from tests.conftest import ROOT

    uri, _ = tracking
    path = ROOT / "examples" / "experiments" / "digits_hypergradient.toml"
    assert main(["run", str(path), "--n-iter", "3", "--tracking-uri", uri, "-q"]) == 0
    out = capsys.readouterr().out
    assert "optimizer=hypergradient" in out and "3 (0 failed)" in out and "l2_per_feature" in out


def test_run_the_smac_experiment_file_on_two_workers_and_resume_it(capsys, tracking, tmp_path, monkeypatch):
    from tests.conftest import ROOT

    monkeypatch.chdir(tmp_path)  # the file's checkpoint path is relative
    uri, _ = tracking
    path = ROOT / "examples" / "experiments" / "digits_mlp_smac_mf.toml"
    assert main(["run", str(path), "--n-iter", "4", "--tracking-uri", uri, "-q"]) == 0
    assert "optimizer=smac_mf" in capsys.readouterr().out
    lines = (tmp_path / "digits_mlp_smac_mf.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 4
    assert main(["run", str(path), "--n-iter", "6", "--tracking-uri", uri, "-q"]) == 0  # continues: 2 more
    assert len((tmp_path / "digits_mlp_smac_mf.jsonl").read_text().splitlines()) == 1 + 6


def test_every_example_experiment_file_is_valid():
    from tests.conftest import ROOT

    files = sorted((ROOT / "examples" / "experiments").glob("*.toml"))
    assert len(files) >= 2
    for f in files:
        exp = Experiment.load(f)
        exp.build_estimator("classification")._validate_params()


SYNC_PLUGIN = """
from automl_bilevel import hookimpl
CALLS = []
@hookimpl
def bilevel_sync_spool(path, uri, force):
    CALLS.append((path, uri, force))
    return [{"run_id": "r-1", "uri": uri or "sqlite:///x.db", "trials": 3, "written": 2, "status": "KILLED"},
            {"spool": str(path), "error": "OSError: disk on fire"}]
"""


def test_sync_asks_every_plugin_and_reports_each_run(fake_dist, tmp_path, capsys):
    fake_dist("sync-pkg", {"syncer": "sync_mod"}, {"sync_mod": SYNC_PLUGIN})
    assert main(["sync", str(tmp_path), "--tracking-uri", "sqlite:///y.db", "--force"]) == 1  # one run failed
    captured = capsys.readouterr()
    assert "synced  run r-1 (KILLED): 2 of 3 trials written now, to sqlite:///y.db" in captured.out
    assert "disk on fire" in captured.err
    import sync_mod

    assert sync_mod.CALLS == [(str(tmp_path), "sqlite:///y.db", True)]


def test_sync_with_nothing_spooled(tmp_path, capsys):
    assert main(["sync", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 0
    assert "nothing to sync" in capsys.readouterr().out
