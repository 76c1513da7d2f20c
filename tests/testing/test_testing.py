"""The contract checks of automl_bilevel.testing catch broken components and explain what broke."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from ConfigSpace import ConfigurationSpace, Float
from sklearn.linear_model import LogisticRegression, RidgeClassifier

from automl_bilevel import FAILED, InnerLearner, OuterOptimizer, Proposal, run_search
from automl_bilevel.testing import check_learner, check_optimizer, quadratic_problem
from automl_bilevel_plugins.learners.sklearn_learner import SklearnLearner
from automl_bilevel_plugins.optimizers.random_search import RandomSearch


class _Labels:
    """A fitted model with predict only."""

    def __init__(self, est):
        self.est = est

    def predict(self, X):
        return self.est.predict(X)


class _WithProba(_Labels):
    def predict_proba(self, X):
        return self.est.predict_proba(X)


class _Logistic(InnerLearner):
    """A well-behaved learner (the base the broken ones below change one thing of)."""

    model = _WithProba

    def config_space(self, task):
        return ConfigurationSpace(space=[Float("C", (1e-4, 1e2), log=True, default=1.0)])

    def fit(self, X, y, config, *, task, seed, budget=None):
        return self.model(LogisticRegression(C=config["C"]).fit(X, y))


class _NoProba(_Logistic):
    model = _Labels  # predict only, and does not say so: val_loss would fail trial after trial


class _NoProbaDeclared(_NoProba):
    def missing_predict_proba(self, task):
        return "labels only; use objective='val_error'"


class _IgnoresConfig(_Logistic):
    def fit(self, X, y, config, *, task, seed, budget=None):
        return self.model(LogisticRegression().fit(X, y))  # config["C"] never used


class _ReturnsNone(_Logistic):
    def fit(self, X, y, config, *, task, seed, budget=None):
        LogisticRegression(C=config["C"]).fit(X, y)  # forgot the return


class _ReturnsWeights(_Logistic):
    def fit(self, X, y, config, *, task, seed, budget=None):
        return LogisticRegression(C=config["C"]).fit(X, y).coef_  # the weights, not a model


def test_a_good_learner_passes():
    check_learner(_Logistic())
    check_learner(_NoProbaDeclared())  # no predict_proba is fine when the learner says why
    check_learner(SklearnLearner(RidgeClassifier()))  # the sklearn learner says so for RidgeClassifier


def test_check_learner_catches_a_model_without_predict_proba():
    with pytest.raises(
        AssertionError,
        match=r"_Labels that _NoProba.fit returned has no predict_proba, which "
        r"the default objective val_loss needs.*missing_predict_proba",
    ):
        check_learner(_NoProba())


def test_check_learner_catches_a_learner_that_ignores_its_config():
    with pytest.raises(
        AssertionError,
        match=r"_IgnoresConfig seems to ignore its config: 5 configurations "
        r"sampled from its space \(C\)",
    ):
        check_learner(_IgnoresConfig())


def test_check_learner_reports_a_none_model_clearly():
    with pytest.raises(
        AssertionError,
        match=r"_ReturnsNone.fit returned None \(default configuration\); it must "
        r"return the fitted model",
    ):
        check_learner(_ReturnsNone())


def test_check_learner_catches_a_model_without_predict():
    with pytest.raises(
        AssertionError,
        match=r"_ReturnsWeights.fit returned ndarray \(default configuration\), "
        r"which has no predict\(X\)",
    ):
        check_learner(_ReturnsWeights())


def test_check_learner_refuses_a_declared_reason_next_to_a_working_predict_proba():
    class Contradicts(_Logistic):
        def missing_predict_proba(self, task):
            return "none"

    with pytest.raises(AssertionError, match="says 'none', but its model _WithProba has predict_proba"):
        check_learner(Contradicts())


class _Silent(OuterOptimizer):
    def ask(self, n=1):
        return []

    def tell(self, proposal, trial):
        pass


class _AlwaysCorner(OuterOptimizer):
    """Proposes only the failing corner of the check's problem (x > 0.95)."""

    def ask(self, n=1):
        return [Proposal({"x": 0.99, "y": 0.5}) for _ in range(n)]

    def tell(self, proposal, trial):
        pass


class _Unseeded(RandomSearch):
    def setup(self, problem, seed):
        super().setup(problem, int(np.random.SeedSequence().entropy % 2**31))  # ignores the seed


def test_check_optimizer_says_when_no_trial_ran():
    with pytest.raises(AssertionError, match="_Silent proposed no configuration"):
        check_optimizer(_Silent)


def test_check_optimizer_says_when_every_trial_failed():
    with pytest.raises(AssertionError, match=r"all 30 trials of _AlwaysCorner failed.*deliberate failure for x > 0.95"):
        check_optimizer(_AlwaysCorner)


def test_check_optimizer_catches_an_optimizer_that_ignores_the_seed():
    with pytest.raises(AssertionError, match="same seed must give the same trials"):
        check_optimizer(_Unseeded)


def test_a_passing_check_optimizer_logs_nothing(caplog):
    caplog.set_level(logging.WARNING, logger="automl_bilevel")
    check_optimizer(RandomSearch, n_iter=60)
    assert caplog.records == []
    # the same search outside the check has failed trials (the check's failing corner), which are logged
    res = run_search(quadratic_problem(3), RandomSearch(), n_iter=60, seed=3)
    failed = [t.number for t in res.trials if t.status == FAILED]
    assert failed and [r.getMessage() for r in caplog.records] == [
        f"trial {n} failed: RuntimeError: deliberate failure for x > 0.95" for n in failed
    ]
