"""Component contracts the host checks through ABC methods and protocols (issue 16), not hasattr."""

from __future__ import annotations

import numpy as np
import pluggy
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from automl_bilevel import BilevelClassifier, CapabilityError, Run, Task, get_registry
from automl_bilevel.core.components import DeclaresRequirements, LearnedComponent, has_predict_proba
from automl_bilevel.core.events import RunFinished
from automl_bilevel.plugin.registry import BilevelPluginManager, Registry, check_compatible, get_plugin_manager
from automl_bilevel_plugins.learners.torch_learners import LogisticLearner
from automl_bilevel_plugins.optimizers.random_search import RandomSearch

X = np.array([[0.0, 0.1], [1.0, 0.9], [0.1, 0.0], [0.9, 1.0]] * 5)
Y = np.array([0, 1, 0, 1] * 5)


class Recorder:
    info = {"recorded": True}

    def __init__(self) -> None:
        self.events: list[object] = []

    def handle(self, event: object) -> None:
        self.events.append(event)


def test_has_predict_proba_follows_hasattr_for_models_that_hide_it():
    # SVC(probability=False) hides predict_proba behind a descriptor that raises AttributeError; an
    # isinstance check against a runtime-checkable protocol would still see the class attribute
    assert not has_predict_proba(SVC().fit(X, Y))
    assert has_predict_proba(LogisticRegression().fit(X, Y))
    assert not has_predict_proba(object())


class _NeedsGradients(RandomSearch):
    requires = frozenset({"differentiable"})


class _NoExtraNeeds(RandomSearch):
    requires = None


def test_an_optimizer_instance_declares_extra_requirements_through_the_protocol():
    reg = get_registry()
    task = Task("classification", 2, 2)
    learner, objective = reg.make("learner", "sklearn"), reg.make("objective", "val_error")
    assert isinstance(_NeedsGradients(), DeclaresRequirements)
    assert not isinstance(RandomSearch(), DeclaresRequirements)
    with pytest.raises(CapabilityError, match="needs capability \\['differentiable'\\]"):
        check_compatible(task, learner, objective, reg.make("optimizer", _NeedsGradients()))
    check_compatible(task, learner, objective, reg.make("optimizer", _NoExtraNeeds()))  # None: nothing extra
    check_compatible(task, learner, objective, reg.make("optimizer", RandomSearch()))


def test_learned_components_of_the_learner_go_to_the_run(monkeypatch):
    assert get_registry().make("learner", "sklearn").obj.learned_components({}) is None  # the default: nothing
    seen = []

    class Net:  # a LearnedComponent: save(path) and settings()
        def __init__(self, config):
            self.config = dict(config)

        def save(self, path):
            pass

        def settings(self):
            return self.config

        def __eq__(self, other):
            return isinstance(other, Net) and other.config == self.config

    class WithNet(LogisticLearner):
        def learned_components(self, config):
            return {"net": Net(config)}

    real = Run.finish

    def record(self, status="FINISHED", **kw):  # the first call is the one that counts
        if not self.finished:
            seen.append(kw.get("artifacts"))
        return real(self, status, **kw)

    monkeypatch.setattr(Run, "finish", record)
    est = BilevelClassifier(WithNet(epochs=5), n_iter=2, tracking=False, random_state=0).fit(X, Y)
    assert seen == [{"net": Net(est.best_params_)}]
    seen.clear()
    BilevelClassifier("sklearn", n_iter=2, tracking=False, random_state=0).fit(X, Y)  # keeps the default
    assert seen == [None]


def test_learned_components_are_a_protocol_and_anything_else_is_refused_at_finish():
    from automl_bilevel.methods.learned.loss import LossNetwork
    from automl_bilevel.methods.learned.optimizer import LSTMOptimizer

    assert isinstance(LossNetwork(3), LearnedComponent) and isinstance(LSTMOptimizer(), LearnedComponent)
    run = Run.tracked("contract", n_iter=1, tracking=False)
    rec = Recorder()
    run.listeners.append(("rec", rec))
    run.step(1.0)
    with pytest.raises(TypeError, match=r"LearnedComponent.*'weights': 'ndarray'"):
        run.finish(artifacts={"weights": np.zeros(3)})  # no save/settings: refused, nothing sent
    assert not [e for e in rec.events if isinstance(e, RunFinished)]
    run.finish(artifacts={"loss_network": LossNetwork(3)})  # the run is still open and finishes once
    [end] = [e for e in rec.events if isinstance(e, RunFinished)]
    assert end.status == "FINISHED" and list(end.artifacts) == ["loss_network"] and len(end.trials) == 1


def test_tracked_run_finish_takes_the_status_first_like_run_finish():
    run = Run.tracked("contract", n_iter=1, tracking=False)
    rec = Recorder()
    run.listeners.append(("rec", rec))
    run.step(1.0)
    run.finish("KILLED")  # positional status, as Run.finish takes it
    [end] = [e for e in rec.events if isinstance(e, RunFinished)]
    assert end.status == "KILLED" and dict(end.artifacts) == {} and len(end.trials) == 1


def test_session_info_merges_listener_info_and_skips_listeners_without_it():
    class Bare:
        def handle(self, event: object) -> None:
            pass

    assert Run(listeners=[("a", Recorder()), ("b", Bare())]).info == {"recorded": True}


def test_plugin_origins_and_load_errors_live_on_the_hosts_plugin_manager():
    pm = get_plugin_manager()
    assert isinstance(pm, BilevelPluginManager) and pm.load_errors == []
    assert pm.plugin_origins["torch_learners"][0] == "automl-bilevel"
    # a bare pluggy manager works too: nothing is known about where its plugins came from
    bare = pluggy.PluginManager("automl_bilevel")
    reg = Registry.from_plugin_manager(bare)
    assert reg.load_errors == [] and all(not v for v in reg.components.values())
