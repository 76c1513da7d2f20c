"""The tables the command line prints: plugins with their descriptions, results with budgets."""

from __future__ import annotations

import io
import json

from automl_bilevel.frontends.cli import main, print_results

MF_EXPERIMENT = """
name = "iris-logreg-mf"
[data]
dataset = "iris"
[estimator]
learner = "sklearn"
objective = "val_error"
optimizer = "smac_mf"
n_iter = 8
random_state = 0
optimizer_params = { min_budget = 0.25, eta = 2 }
[search_space]
C = { low = 0.01, high = 100.0, log = true }
"""


def test_plugins_table_has_a_description_column(capsys):
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "PLUGIN", "PACKAGE", "VERSION", "DESCRIPTION"]
    rows = {tuple(line.split()[:2]): line for line in lines[1:]}
    assert rows[("optimizer", "random")].endswith("random search over the ConfigSpace")
    assert "progress bar" in rows[("listener", "progress")].lower()
    column = lines[0].index("DESCRIPTION")
    assert rows[("objective", "val_loss")][column:].startswith("validation cross-entropy")  # aligned


def _res(**over):
    res = {
        "experiment": "x",
        "source": "x.toml",
        "dataset": "iris",
        "task": "classification",
        "n_train": 112,
        "n_test": 38,
        "learner": "sklearn",
        "objective": "val_error",
        "optimizer": "smac_mf",
        "n_trials": 3,
        "n_failed": 0,
        "stop_reason": "n_iter",
        "interrupted": False,
        "best_value": 0.05,
        "best_budget": 1.0,
        "best_params": {"C": 3.0},
        "test_metric": "accuracy",
        "test_score": 0.97,
        "seconds": 1.0,
        "top_trials": [
            {"number": 2, "value": 0.05, "budget": 1.0, "params": {"C": 3.0}},
            {"number": 0, "value": 0.02, "budget": 0.5, "params": {"C": 3.0}},
        ],
    }
    return {**res, **over}


def test_results_table_shows_the_budget_of_each_trial():
    out = io.StringIO()
    print_results(_res(), out)
    text = out.getvalue()
    assert "best val_error  0.05  (at budget 1)" in text
    header, first, second = [line.split() for line in text.split("\n\n")[1].splitlines()[:3]]
    assert header == ["trial", "val_error", "budget", "params"]
    assert first == ["2", "0.05", "1", "C=3"] and second == ["0", "0.02", "0.5", "C=3"]  # the same config twice
    assert "the fraction of full training" in text


def test_results_table_without_budgets_has_no_budget_column():
    out = io.StringIO()
    print_results(
        _res(best_budget=None, top_trials=[{"number": 0, "value": 0.05, "budget": None, "params": {"C": 3.0}}]), out
    )
    text = out.getvalue()
    assert "budget" not in text and text.split("\n\n")[1].splitlines()[0].split() == ["trial", "val_error", "params"]


def test_json_out_of_a_multi_fidelity_run_has_budgets(tmp_path, capsys):
    path = tmp_path / "mf.toml"
    path.write_text(MF_EXPERIMENT)
    out_json = tmp_path / "res.json"
    assert main(["run", str(path), "--no-tracking", "-q", "--json-out", str(out_json)]) == 0
    res = json.loads(out_json.read_text())
    budgets = [t["budget"] for t in res["top_trials"]]
    assert all(b is not None and 0 < b <= 1 for b in budgets) and budgets == sorted(budgets, reverse=True)
    assert len(set(budgets)) >= 2 and res["best_budget"] == max(budgets)  # trials at several budgets
    assert f"(at budget {res['best_budget']:.4g})" in capsys.readouterr().out
