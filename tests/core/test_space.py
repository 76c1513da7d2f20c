"""Search spaces: dict shorthand to ConfigSpace, and clear errors for malformed entries."""

from __future__ import annotations

import pytest
from ConfigSpace import ConfigurationSpace, Float

from automl_bilevel import InvalidSearchSpaceError, as_configspace
from automl_bilevel.core.space import check_names, config_dict


def test_dict_shorthand_compiles_to_configspace():
    cs = as_configspace(
        {
            "lr": (1e-4, 1.0, "log"),
            "units": (8, 64),
            "act": ["relu", "tanh"],
            "epochs": 10,
            "wd": {"low": 1e-6, "high": 1e-2, "log": True, "default": 1e-4},
            "x": Float("x", (0.0, 1.0)),
        },
        seed=0,
    )
    hp = dict(cs.items())
    assert hp["lr"].log and hp["lr"].lower == 1e-4
    assert type(hp["units"]).__name__ == "UniformIntegerHyperparameter"
    assert list(hp["act"].choices) == ["relu", "tanh"]
    assert hp["wd"].default_value == pytest.approx(1e-4)
    cfg = config_dict(cs.sample_configuration())
    assert isinstance(cfg["units"], int) and cfg["epochs"] == 10


def test_configspace_is_copied_with_seed():
    cs = ConfigurationSpace(space={"a": (0.0, 1.0)})
    a = config_dict(as_configspace(cs, seed=3).sample_configuration())
    b = config_dict(as_configspace(cs, seed=3).sample_configuration())
    assert a == b


@pytest.mark.parametrize(
    "entry, message",
    [
        ((1.0, 0.5), "lower bound 1.0 must be below upper bound 0.5"),
        ((0.0, 1.0, "log"), "positive lower bound"),
        ((1, float("inf")), "finite"),
        (("a", "b"), "must be numbers"),
        ((1, 2, 3), r"\(low, high\)"),
        ([], "at least one choice"),
        ({"low": 1}, "needs 'low' and 'high'"),
        ({"low": 0, "high": 1, "lgo": True}, "unknown keys"),
        ({"low": 0.0, "high": 1.0, "default": 2.0}, "outside"),
        (object(), "cannot turn"),
    ],
)
def test_invalid_entries_raise_clear_errors(entry, message):
    with pytest.raises(InvalidSearchSpaceError, match=message):
        as_configspace({"p": entry})


def test_unknown_names_are_reported_with_the_accepted_ones():
    cs = as_configspace({"lr": (0.1, 1.0), "lrr": (0.1, 1.0)})
    with pytest.raises(InvalidSearchSpaceError, match=r"no hyperparameter\(s\) \['lrr'\]; it accepts: \['lr', 'wd'\]"):
        check_names(cs, {"lr", "wd"}, "learner 'x'")


def test_not_a_space():
    with pytest.raises(InvalidSearchSpaceError, match="ConfigurationSpace or a dict"):
        as_configspace([("a", 1)])
