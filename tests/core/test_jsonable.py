"""The one converter to plain data (automl_bilevel.core.jsonable)."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from automl_bilevel.core.events import plain
from automl_bilevel.core.jsonable import jsonable, python_scalar
from automl_bilevel.core.space import config_dict


def test_numpy_and_torch_values_become_plain_data_that_json_round_trips():
    value = {
        "a": np.float32(0.5),
        "b": np.int64(3),
        "c": np.arange(4).reshape(2, 2),
        "d": torch.tensor([1.5, 2.5]),
        "e": (1, "x", None, True),
        "f": {1: np.bool_(True)},
        "g": {"nested": [np.float64(1.25)]},
    }
    out = jsonable(value)
    assert out == {
        "a": 0.5,
        "b": 3,
        "c": [[0, 1], [2, 3]],
        "d": [1.5, 2.5],
        "e": [1, "x", None, True],
        "f": {"1": True},
        "g": {"nested": [1.25]},
    }
    assert type(out["b"]) is int and type(out["f"]["1"]) is bool
    assert json.loads(json.dumps(out)) == out


def test_objects_become_their_repr_and_non_finite_floats_are_kept():
    class Thing:
        def __repr__(self) -> str:
            return "Thing()"

    assert jsonable(Thing()) == "Thing()"
    assert math.isnan(jsonable(float("nan"))) and jsonable(np.float64("inf")) == math.inf


def test_scalars_only_for_configurations_arrays_kept():
    vec = np.zeros(3)
    config = config_dict({"lr": np.float64(0.1), "layers": np.int64(2), "vec": vec})
    assert config["lr"] == 0.1 and type(config["lr"]) is float and type(config["layers"]) is int
    assert config["vec"] is vec  # a vector outer variable stays an array for the learner
    assert python_scalar("x") == "x"


def test_tracked_parameters_use_the_same_rule():
    assert plain({"w": np.arange(2), "k": np.int32(1)}) == {"w": [0, 1], "k": 1}
