"""The plugin host: loading through entry points, validation, blocking, broken plugins."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from automl_bilevel import (
    BilevelClassifier,
    CapabilityError,
    PluginError,
    UnknownComponentError,
    get_plugin_manager,
    get_registry,
)
from automl_bilevel.plugin.registry import Registry
from automl_bilevel.testing import check_learner, check_optimizer
from tests.conftest import EXAMPLE_PLUGIN

BUILTIN = {
    ("learner", "logistic"),
    ("learner", "mlp"),
    ("learner", "sklearn"),
    ("objective", "val_loss"),
    ("objective", "val_error"),
    ("optimizer", "random"),
}


def test_builtins_come_through_the_entry_point_group():
    reg = get_registry()
    found = {(r["kind"], r["name"]) for r in reg.records()}
    assert BUILTIN <= found
    for r in reg.records():
        if (r["kind"], r["name"]) in BUILTIN:
            assert r["package"] == "automl-bilevel" and r["version"]
    assert not reg.load_errors


def test_no_entry_points_means_no_components():
    reg = Registry.from_plugin_manager(get_plugin_manager(load_entry_points=False))
    assert reg.records() == []
    with pytest.raises(UnknownComponentError, match=r"available learners: \(none\)"):
        reg.get("learner", "mlp")


def test_environment_variable_blocks_named_plugins(monkeypatch):
    monkeypatch.setenv("AUTOML_BILEVEL_DISABLE_PLUGINS", "random_search, sklearn_learner")
    names = {r["name"] for r in get_registry().records()}
    assert "random" not in names and "sklearn" not in names and "logistic" in names


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(UnknownComponentError) as err:
        get_registry().get("optimizer", "nope")
    assert "random" in str(err.value) and "'nope'" in str(err.value)


def test_plugin_that_fails_to_import_is_reported_by_name_and_skipped(fake_dist):
    fake_dist("broken-pkg", {"broken": "broken_mod"}, {"broken_mod": "raise ImportError('missing dependency xyz')\n"})
    with pytest.warns(RuntimeWarning, match="'broken'.*missing dependency xyz"):
        reg = get_registry()
    assert [(e.plugin, e.package) for e in reg.load_errors] == [("broken", "broken-pkg")]
    assert "logistic" in reg.names("learner")  # the rest still works


PLUGIN_SRC = """
from automl_bilevel import hookimpl, LearnerSpec, OptimizerSpec
from automl_bilevel_plugins.learners.torch_learners import LogisticLearner
@hookimpl
def bilevel_register_learners():
    return {ret}
"""


@pytest.mark.parametrize(
    "ret, message",
    [
        ("[LearnerSpec('logistic', LogisticLearner)]", "registered by both plugin 'dup' and plugin 'torch_learners'"),
        ("[OptimizerSpec('x', LogisticLearner)]", "plugin 'dup' returned OptimizerSpec"),
        ("[LearnerSpec('bad name!', LogisticLearner)]", "plugin 'dup'.*identifier-like"),
        ("[LearnerSpec('x', 42)]", "plugin 'dup'.*not callable"),
        ("[LearnerSpec('x', LogisticLearner, tasks=frozenset({'ranking'}))]", "plugin 'dup'.*declares tasks"),
        ("[LearnerSpec('x', LogisticLearner, capabilities={'differentiable'})]", "plugin 'dup'.*frozenset"),
        ("42", "plugin 'dup'.*iterable"),
    ],
)
def test_invalid_records_are_rejected_naming_the_plugin(fake_dist, ret, message):
    fake_dist("dup-pkg", {"dup": "dup_mod"}, {"dup_mod": PLUGIN_SRC.format(ret=ret)})
    with pytest.warns(RuntimeWarning, match=message):  # reported and skipped: the rest still works
        reg = get_registry()
    assert [e.plugin for e in reg.load_errors] == ["dup"] and "logistic" in reg.names("learner")


def test_factory_returning_the_wrong_type_is_rejected(fake_dist):
    src = PLUGIN_SRC.format(ret="[LearnerSpec('weird', lambda: object())]")
    fake_dist("w-pkg", {"weird": "weird_mod"}, {"weird_mod": src})
    with pytest.raises(PluginError, match="plugin 'weird'.*returned object, not an InnerLearner"):
        get_registry().make("learner", "weird")


def test_missing_capability_and_task_are_reported_naming_the_plugin(fake_dist):
    src = """
from automl_bilevel import hookimpl, OptimizerSpec
from automl_bilevel_plugins.optimizers.random_search import RandomSearch
@hookimpl
def bilevel_register_optimizers():
    return [OptimizerSpec('needs_grad', RandomSearch, requires=frozenset({'differentiable'}))]
"""
    fake_dist("g-pkg", {"gradplug": "grad_mod"}, {"grad_mod": src})
    X, y = [[0.0], [1.0], [0.1], [0.9]] * 5, [0, 1, 0, 1] * 5
    with pytest.raises(CapabilityError, match="needs capability.*learner 'sklearn' \\(plugin 'sklearn_learner'\\)"):
        BilevelClassifier("sklearn", optimizer="needs_grad", tracking=False).fit(X, y)
    with pytest.raises(
        CapabilityError, match="learner 'logistic' \\(plugin 'torch_learners'\\) does not support regression"
    ):
        from automl_bilevel import BilevelRegressor

        BilevelRegressor("logistic", tracking=False).fit(X, [0.5, 1.0, 2.0, 3.0] * 5)


def test_example_third_party_plugin_is_found_through_its_entry_point(fake_dist):
    fake_dist("automl-bilevel-grid", {"grid": "automl_bilevel_grid"}, extra_path=EXAMPLE_PLUGIN)
    reg = get_registry()
    rows = {(r["kind"], r["name"]): r for r in reg.records()}
    assert rows[("optimizer", "grid")]["package"] == "automl-bilevel-grid"
    assert rows[("learner", "knn")]["plugin"] == "grid"
    from sklearn.datasets import load_iris

    est = BilevelClassifier("knn", "val_error", "grid", n_iter=8, tracking=False, random_state=0)
    est.fit(*load_iris(return_X_y=True))
    assert est.n_trials_ == 8 and est.best_value_ < 0.15


def test_contract_checks_pass_for_builtins_and_the_example(fake_dist):
    from automl_bilevel_plugins.learners.sklearn_learner import SklearnLearner
    from automl_bilevel_plugins.learners.torch_learners import LogisticLearner, MLPLearner
    from automl_bilevel_plugins.optimizers.random_search import RandomSearch

    check_learner(LogisticLearner(epochs=20), multi_fidelity=True)
    check_learner(MLPLearner(epochs=100), multi_fidelity=True)
    check_learner(MLPLearner(epochs=100), task="regression")
    check_learner(SklearnLearner())
    check_learner(SklearnLearner(), task="regression")
    check_optimizer(RandomSearch)
    fake_dist("automl-bilevel-grid", {"grid": "automl_bilevel_grid"}, extra_path=EXAMPLE_PLUGIN)
    from automl_bilevel_grid import GridSearch, KNNLearner

    check_learner(KNNLearner())
    check_optimizer(lambda: GridSearch(steps=8))


def test_contract_check_catches_a_broken_optimizer():
    from automl_bilevel import OuterOptimizer, Proposal

    class Broken(OuterOptimizer):
        def ask(self, n=1):
            return [Proposal({"x": 2.0, "y": 0.5})]  # outside the space

        def tell(self, proposal, trial):
            pass

    with pytest.raises(ValueError, match="2.0.*is not allowed for hyperparameter with name 'x'"):
        check_optimizer(Broken)


OBJECTIVE_SRC = """
import numpy as np
from automl_bilevel import hookimpl, ObjectiveSpec, OuterObjective
class Brier(OuterObjective):
    def __call__(self, model, X, y, *, task):
        p = model.predict_proba(X)
        return float(np.mean(np.sum((p - np.eye(task.n_outputs)[y]) ** 2, axis=1)))
@hookimpl
def bilevel_register_objectives():
    return [ObjectiveSpec('brier', Brier, 'Brier score', tasks=frozenset({'classification'}))]
"""


def test_a_third_party_objective_is_used_by_name(fake_dist):
    fake_dist("brier-pkg", {"brier": "brier_mod"}, {"brier_mod": OBJECTIVE_SRC})
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    est = BilevelClassifier(objective="brier", n_iter=3, tracking=False, random_state=0).fit(X, y)
    assert 0 <= est.best_value_ < 0.3
    import brier_mod

    p = est.predict_proba(X)
    assert brier_mod.Brier()(est.model_, X, y, task=est.model_.task) == pytest.approx(
        np.mean(np.sum((p - np.eye(3)[y]) ** 2, axis=1))
    )


SPY_SRC = """
from automl_bilevel import hookimpl
CONTEXTS = []
@hookimpl
def bilevel_run_listener(context):
    CONTEXTS.append(context)  # a run has started: its trials come next
"""


@pytest.mark.parametrize(
    "estimator, hint",
    [
        (
            RidgeClassifier(),
            r"learner 'sklearn' \(plugin 'sklearn_learner'\) lack: RidgeClassifier has no "
            r"predict_proba; use objective='val_error' or an estimator with predict_proba "
            r"\(LogisticRegression, SVC\(probability=True\), ...\)",
        ),
        (
            SVC(),
            r"SVC has no predict_proba unless probability=True; use objective='val_error' or SVC\(probability=True\)",
        ),
        (make_pipeline(StandardScaler(), LinearSVC()), r"the pipeline's last step LinearSVC has no predict_proba"),
    ],
)
def test_val_loss_without_predict_proba_is_refused_before_any_trial(fake_dist, estimator, hint):
    fake_dist("spy-pkg", {"spy": "spy_mod"}, {"spy_mod": SPY_SRC})
    import spy_mod

    X, y = [[0.0], [1.0], [0.1], [0.9]] * 5, [0, 1, 0, 1] * 5
    est = BilevelClassifier("sklearn", "val_loss", learner_params={"estimator": estimator}, tracking=False)
    with pytest.raises(
        CapabilityError,
        match=r"objective 'val_loss' \(plugin 'validation_objectives'\) "
        r"scores predict_proba, which the models of .*" + hint,
    ):
        est.fit(X, y)
    assert spy_mod.CONTEXTS == [] and not hasattr(est, "trials_")  # no run started
    est.set_params(objective="val_error").fit(X, y)  # what the hint says works
    assert len(spy_mod.CONTEXTS) == 1 and est.n_trials_ >= 1


def test_a_learner_instance_that_declares_no_predict_proba_is_refused_for_val_loss():
    from automl_bilevel_plugins.learners.sklearn_learner import SklearnLearner

    class Labels(SklearnLearner):
        def missing_predict_proba(self, task):
            return "Labels predicts labels only"

    X, y = [[0.0], [1.0], [0.1], [0.9]] * 5, [0, 1, 0, 1] * 5
    with pytest.raises(CapabilityError, match="the models of learner Labels lack: Labels predicts labels only"):
        BilevelClassifier(Labels(), "val_loss", tracking=False).fit(X, y)
    from automl_bilevel import BilevelRegressor

    BilevelRegressor(Labels(), "val_loss", n_iter=2, tracking=False).fit(X, [0.5, 1.0, 2.0, 3.0] * 5)  # MSE
