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
learner, objective, space, learner_params = json.loads(sys.argv[6])
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
space = {k: tuple(v) if isinstance(v, list) and isinstance(v[-1], str) and v[-1] == "log" else v
         for k, v in space.items()} if space is not None else None
est = BilevelClassifier(learner, objective, optimizer, search_space=space, n_iter=n, tracking=False,
                        random_state=0, checkpoint=checkpoint, optimizer_params=params,
                        learner_params=learner_params).fit(X.astype("float32"), y)
print("PARAMS " + json.dumps(list(est.history_["params"]), sort_keys=True, default=str))
"""


SKLEARN = [
    "sklearn",
    "val_error",
    {"C": [0.01, 100.0, "log"], "tol": [1e-5, 1e-2, "log"], "fit_intercept": [True, False]},
    {},
]
MLP = [
    "mlp",
    "val_loss",
    {"activation": ["relu", "tanh"], "hidden_units": [4, 8, 16], "lr": [1e-3, 0.3, "log"]},
    {"epochs": 2, "batch_size": 4096},
]
LOGISTIC = ["logistic", "val_loss", None, {"epochs": 3}]


def _run(tmp_path, hashseed, optimizer, params, n, checkpoint="", crash_after=0, problem=SKLEARN):
    script = tmp_path / "search.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            optimizer,
            json.dumps(params),
            str(n),
            str(checkpoint),
            str(crash_after),
            json.dumps(problem),
        ],
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


SLOW = pytest.mark.slow  # four processes each: smac (the hash-seed defect) runs by default
CASES = [
    pytest.param("smac", {"n_initial": 3}, 12, 7, SKLEARN, id="smac"),
    pytest.param("es", {"strategy": "cma", "population_size": 4}, 12, 6, SKLEARN, id="es-cma", marks=SLOW),
    pytest.param(
        "es", {"strategy": "mu_plus_lambda", "population_size": 4}, 12, 6, SKLEARN, id="es-mu_plus_lambda", marks=SLOW
    ),
    pytest.param("es", {"strategy": "openai", "population_size": 4}, 12, 6, SKLEARN, id="es-openai", marks=SLOW),
    pytest.param("smac_mf", {}, 10, 5, ["logistic", "val_error", None, {"epochs": 9}], id="smac_mf", marks=SLOW),
    pytest.param("hypergradient", {}, 6, 3, LOGISTIC, id="hypergradient", marks=SLOW),
    pytest.param("hybrid", {"steps": 2}, 5, 2, MLP, id="hybrid", marks=SLOW),
]


@pytest.mark.parametrize("optimizer, params, n, cut, problem", CASES)
def test_a_resumed_search_in_a_new_process_proposes_what_the_uninterrupted_one_did(
    tmp_path, optimizer, params, n, cut, problem
):
    whole = _run(tmp_path, 1, optimizer, params, n, problem=problem)
    again = _run(tmp_path, 2, optimizer, params, n, problem=problem)
    assert again == whole  # same random_state, another hash seed: the same search
    checkpoint = tmp_path / "search.jsonl"
    _run(tmp_path, 3, optimizer, params, n, checkpoint, crash_after=cut, problem=problem)  # killed after `cut` trials
    assert len(checkpoint.read_text().splitlines()) == 1 + cut
    resumed = _run(tmp_path, 4, optimizer, params, n, checkpoint, problem=problem)
    assert resumed == whole, [i for i, (a, b) in enumerate(zip(resumed, whole, strict=True)) if a != b]
