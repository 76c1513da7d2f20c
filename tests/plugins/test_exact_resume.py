"""Exact resume across processes: a search with the same ``random_state`` proposes the same
configurations in a new process with another ``PYTHONHASHSEED``, and a search resumed from its
checkpoint proposes what the uninterrupted one did (issue 24). Every run is its own subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
from sklearn.datasets import load_iris
from automl_bilevel import BilevelClassifier
optimizer, params, n, checkpoint = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4] or None
crash_after = int(sys.argv[5])
if crash_after:  # the process is killed (SIGKILL) right after its crash_after-th trial is recorded
    import os, signal
    from automl_bilevel.run.checkpoint import Checkpoint
    record = Checkpoint.record
    def record_then_die(self, trial, optimizer):
        record(self, trial, optimizer)
        if trial.number + 1 >= crash_after:
            os.kill(os.getpid(), signal.SIGKILL)
    Checkpoint.record = record_then_die
X, y = load_iris(return_X_y=True)
space = {"C": (0.01, 100.0, "log"), "tol": (1e-5, 1e-2, "log"), "fit_intercept": [True, False]}
est = BilevelClassifier("sklearn", "val_error", optimizer, search_space=space, n_iter=n, tracking=False,
                        random_state=0, checkpoint=checkpoint, optimizer_params=params).fit(X, y)
print("PARAMS " + json.dumps(list(est.history_["params"]), sort_keys=True, default=str))
"""


def _run(tmp_path, hashseed, optimizer, params, n, checkpoint="", crash_after=0):
    script = tmp_path / "search.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), optimizer, json.dumps(params), str(n), str(checkpoint), str(crash_after)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONHASHSEED": str(hashseed), "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    if crash_after:
        assert out.returncode == -9, out.stderr[-3000:]
        return None
    assert out.returncode == 0, out.stderr[-3000:]
    [line] = [line for line in out.stdout.splitlines() if line.startswith("PARAMS ")]
    return json.loads(line[len("PARAMS ") :])


SLOW = pytest.mark.slow  # four processes each; one case of each optimizer runs by default
CASES = [
    pytest.param("smac", {"n_initial": 3}, 12, 7, id="smac"),
    pytest.param("es", {"strategy": "cma", "population_size": 4}, 12, 6, id="es-cma"),
    pytest.param("es", {"strategy": "mu_plus_lambda", "population_size": 4}, 12, 6, id="es-mu_plus_lambda", marks=SLOW),
    pytest.param("es", {"strategy": "openai", "population_size": 4}, 12, 6, id="es-openai", marks=SLOW),
]


@pytest.mark.parametrize("optimizer, params, n, cut", CASES)
def test_a_resumed_search_in_a_new_process_proposes_what_the_uninterrupted_one_did(tmp_path, optimizer, params, n, cut):
    whole = _run(tmp_path, 1, optimizer, params, n)
    again = _run(tmp_path, 2, optimizer, params, n)
    assert again == whole  # same random_state, another hash seed: the same search
    checkpoint = tmp_path / "search.jsonl"
    _run(tmp_path, 3, optimizer, params, n, checkpoint, crash_after=cut)  # killed after `cut` trials
    assert len(checkpoint.read_text().splitlines()) == 1 + cut
    resumed = _run(tmp_path, 4, optimizer, params, n, checkpoint)
    assert resumed == whole, [i for i, (a, b) in enumerate(zip(resumed, whole, strict=True)) if a != b]
