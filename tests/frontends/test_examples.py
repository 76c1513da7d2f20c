"""The numbered examples run, and the example plugin installs with pip (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from automl_bilevel import BilevelClassifier, RunFinished, RunStarted, TrialFinished
from tests.conftest import EXAMPLE_PLUGIN, ROOT

EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name, tmp_path, tracking):
    if "mnist" in name:
        from automl_bilevel.frontends.data import DatasetNotFoundError, find_idx_dir

        try:
            find_idx_dir("mnist")
        except DatasetNotFoundError:
            pytest.skip("MNIST IDX files not available")
    env = {**os.environ, "AUTOML_BILEVEL_EXAMPLE_QUICK": "1", "MLFLOW_TRACKING_URI": tracking[0]}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best" in proc.stdout
    assert not (tmp_path / "mlflow.db").exists()  # the store came from the environment


LISTENER_SRC = """
from automl_bilevel import hookimpl
EVENTS = []
class Listener:
    info = {"seen_by": "recorder"}
    def handle(self, event):
        EVENTS.append(event)
@hookimpl
def bilevel_run_listener(context):
    if context.params.get("experiment_name") == "abort":
        raise RuntimeError("listener refuses this run")
    return Listener()
"""


def test_a_third_party_listener_sees_every_event_in_order(fake_dist):
    fake_dist("rec-pkg", {"recorder": "recorder_mod"}, {"recorder_mod": LISTENER_SRC})
    import recorder_mod
    from sklearn.datasets import load_iris

    est = BilevelClassifier(n_iter=3, tracking=False, random_state=0).fit(*load_iris(return_X_y=True))
    kinds = [type(e) for e in recorder_mod.EVENTS]
    assert kinds == [RunStarted, TrialFinished, TrialFinished, TrialFinished, RunFinished]
    assert recorder_mod.EVENTS[0].context.learner == "logistic"
    assert recorder_mod.EVENTS[-1].status == "FINISHED" and recorder_mod.EVENTS[-1].model is est
    assert est.run_info_["seen_by"] == "recorder"
    with pytest.raises(RuntimeError, match="listener refuses this run"):
        BilevelClassifier(n_iter=3, tracking=False, experiment_name="abort").fit(*load_iris(return_X_y=True))


@pytest.mark.slow
def test_example_plugin_installs_with_pip_and_is_listed(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE_PLUGIN),
        ],
        check=True,
    )
    env = {**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(
        [sys.executable, "-m", "automl_bilevel.frontends.cli", "plugins", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {(r["kind"], r["name"]): r for r in json.loads(out)["plugins"]}
    assert rows[("optimizer", "grid")]["package"] == "automl-bilevel-grid"
    assert rows[("learner", "knn")]["version"] == "0.1.0"
