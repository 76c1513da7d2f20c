"""Every built-in optimizer's ``state_dict`` is plain data (the contract that lets a checkpoint be read
with ``torch.load(weights_only=True)``): checked after each trial of a real checkpointed fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_iris

from automl_bilevel import BilevelClassifier
from automl_bilevel.run.checkpoint import Checkpoint
from automl_bilevel.run.safe_io import check_plain

SMALL = {"epochs": 2, "batch_size": 4096}

CASES = {
    "random": ("sklearn", "val_error", "random", {}, {"C": (0.01, 100.0, "log")}, {}),
    "smac": ("sklearn", "val_error", "smac", {"n_initial": 2}, {"C": (0.01, 100.0, "log")}, {}),
    "smac_mf": ("logistic", "val_error", "smac_mf", {}, None, {"epochs": 9}),
    "es_cma": (
        "sklearn",
        "val_error",
        "es",
        {"strategy": "cma", "population_size": 2},
        {"C": (0.01, 100.0, "log")},
        {},
    ),
    "es_mu_plus_lambda": (
        "sklearn",
        "val_error",
        "es",
        {"strategy": "mu_plus_lambda", "population_size": 2},
        {"C": (0.01, 100.0, "log")},
        {},
    ),
    "es_openai": (
        "sklearn",
        "val_error",
        "es",
        {"strategy": "openai", "population_size": 2},
        {"C": (0.01, 100.0, "log")},
        {},
    ),
    "hypergradient": ("logistic", "val_loss", "hypergradient", {}, None, {"epochs": 3}),
    "online": (
        "logistic",
        "val_loss",
        "online",
        {"tensor_hyperparameters": ["l2_per_feature"]},
        None,
        {"epochs": 8, "batch_size": 32},
    ),
    "hybrid": (
        "mlp",
        "val_loss",
        "hybrid",
        {"blackbox": "random", "steps": 2},
        {"activation": ["relu", "tanh"], "hidden_units": [4, 8, 16], "lr": (1e-3, 0.3, "log")},
        SMALL,
    ),
}


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X.astype("float32"), y


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_is_plain_data_after_every_trial(name, iris, tmp_path, monkeypatch):
    learner, objective, optimizer, params, space, learner_params = CASES[name]
    states = []
    record = Checkpoint.record

    def spy(self, trial, opt):
        states.append(opt.state_dict())
        return record(self, trial, opt)

    monkeypatch.setattr(Checkpoint, "record", spy)
    path = tmp_path / "search.jsonl"
    BilevelClassifier(
        learner,
        objective,
        optimizer,
        search_space=space,
        n_iter=4,
        checkpoint=path,
        tracking=False,
        random_state=0,
        optimizer_params=params,
        learner_params=learner_params,
    ).fit(*iris)
    assert len(states) == 4
    for state in states:
        check_plain(state)
    if states[-1] is not None:  # what was saved reads back with the restricted unpickler
        saved = torch.load(Path(f"{path}.state"), weights_only=True)
        assert saved["n_trials"] == 4
        check_plain(saved)
