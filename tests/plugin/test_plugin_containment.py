"""Plugins that fail stay contained: reported by name with the disable hint, skipped, the rest works."""

from __future__ import annotations

import json

import pytest
from sklearn.datasets import load_iris

from automl_bilevel import BilevelClassifier, get_registry
from automl_bilevel.frontends.cli import main
from mlflow import MlflowClient

RAISING = """
from automl_bilevel import hookimpl
@hookimpl
def bilevel_register_learners():
    raise RuntimeError("database of learners is locked")
"""

SHADOWING = """
from automl_bilevel import hookimpl, LearnerSpec
from automl_bilevel_plugins.learners.torch_learners import LogisticLearner
@hookimpl
def bilevel_register_learners():
    return [LearnerSpec("logistic", LogisticLearner), LearnerSpec("mine", LogisticLearner)]
"""


@pytest.mark.parametrize("ep", ["aaa", "zzz"])  # before and after the built-ins in load order
def test_a_registration_hook_that_raises_is_reported_and_skipped(fake_dist, capsys, ep):
    fake_dist("raising-pkg", {ep: "raising_mod"}, {"raising_mod": RAISING})
    with pytest.warns(
        RuntimeWarning, match=rf"plugin '{ep}' is skipped: .*locked.*AUTOML_BILEVEL_DISABLE_PLUGINS={ep}"
    ):
        reg = get_registry()
    assert [e.plugin for e in reg.load_errors] == [ep] and "logistic" in reg.names("learner")
    with pytest.warns(RuntimeWarning):
        assert main(["plugins", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [f["plugin"] for f in out["failed"]] == [ep] and "locked" in out["failed"][0]["error"]
    with pytest.warns(RuntimeWarning):
        est = BilevelClassifier("sklearn", "val_error", n_iter=2, tracking=False).fit(*load_iris(return_X_y=True))
    assert est.n_trials_ == 2


@pytest.mark.parametrize("ep", ["aaa", "zzz"])
def test_a_plugin_taking_a_builtin_name_is_skipped_whole_and_the_builtin_kept(fake_dist, ep):
    fake_dist("shadow-pkg", {ep: "shadow_mod"}, {"shadow_mod": SHADOWING})
    with pytest.warns(
        RuntimeWarning, match=rf"'logistic' is registered by both plugin .*{ep}.*skipped|skipped.*'logistic'"
    ):
        reg = get_registry()
    assert reg.get("learner", "logistic").origin.plugin == "torch_learners"
    assert "mine" not in reg.names("learner")  # skipped whole, not half
    assert [e.plugin for e in reg.load_errors] == [ep]


FAILING_LISTENER = """
from automl_bilevel import hookimpl
@hookimpl
def bilevel_run_listener(context):
    raise ConnectionError("dashboard is down")
"""


@pytest.mark.parametrize("ep", ["aaa", "zzz"])
def test_a_listener_failing_at_creation_leaves_no_run_running(fake_dist, tracking, ep):
    uri, experiment = tracking
    fake_dist("listener-pkg", {ep: "listener_mod"}, {"listener_mod": FAILING_LISTENER})
    with pytest.raises(ConnectionError, match="dashboard is down") as info:
        BilevelClassifier("sklearn", "val_error", n_iter=2, tracking_uri=uri, experiment_name=experiment).fit(
            *load_iris(return_X_y=True)
        )
    assert any(ep in note for note in getattr(info.value, "__notes__", []))
    exp = MlflowClient(uri).get_experiment_by_name(experiment)
    runs = MlflowClient(uri).search_runs([exp.experiment_id]) if exp else []
    assert all(r.info.status == "FAILED" for r in runs)
