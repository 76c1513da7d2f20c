"""Batched populations: a generation of loss networks evaluated as one vmap'd computation per task
gives the numbers of evaluating its members one by one through the search loop's problem."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ConfigSpace import ConfigurationSpace
from sklearn.datasets import load_digits

from automl_bilevel import BilevelProblem, Task
from automl_bilevel.methods.learned import LossNetwork, sample_tasks
from automl_bilevel_plugins.learners.torch_learners import MLPLearner
from automl_bilevel_plugins.objectives.validation import ValidationError, ValidationLoss

TASK = Task("classification", 64, 10)


@pytest.fixture(scope="module")
def setting():
    X, y = load_digits(return_X_y=True)
    tasks = sample_tasks(X / 16.0, y, 3, n_train=(20, 60), n_val=150, seed=0)  # three sizes
    net = LossNetwork(10, seed=0)
    learner = MLPLearner(
        hidden_units=32,
        n_layers=2,
        optimizer="sgd",
        lr=0.2,
        weight_decay=0.0,
        epochs=8,
        batch_size=10**6,
        standardize=False,
        loss=net,
    )
    rng = np.random.default_rng(0)
    flat = learner.vector_hyperparameters(TASK)["loss_net"]
    population = flat + 0.05 * rng.standard_normal((5, flat.size))
    return tasks, learner, population


@pytest.mark.parametrize("objective", [ValidationError(), ValidationLoss()], ids=["val_error", "val_loss"])
def test_batched_equals_one_by_one(setting, objective):
    tasks, learner, population = setting
    problem = BilevelProblem(learner, objective, ConfigurationSpace(), TASK, tasks, seed=3)
    one_by_one = np.array([problem.evaluate({"loss_net": v}).value for v in population])
    batched = learner.evaluate_population(tasks, population, objective, task=TASK, seed=3)
    assert batched.shape == (5,) and len(set(np.round(one_by_one, 6))) > 1  # the members differ
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-6)  # float32, summed in another order


def test_batched_equals_one_by_one_with_weight_decay(setting):
    """A zero weight decay is skipped in the batched path; a non-zero one is applied as one by one."""
    tasks, learner, population = setting
    decayed = MLPLearner(**{**learner.settings, "weight_decay": 0.05})
    problem = BilevelProblem(decayed, ValidationLoss(), ConfigurationSpace(), TASK, tasks, seed=3)
    one_by_one = np.array([problem.evaluate({"loss_net": v}).value for v in population])
    batched = decayed.evaluate_population(tasks, population, ValidationLoss(), task=TASK, seed=3)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-6)
    plain = learner.evaluate_population(tasks, population, ValidationLoss(), task=TASK, seed=3)
    assert np.abs(batched - plain).max() > 1e-3  # the decay changed the training


def test_a_diverging_member_is_nan_and_the_others_are_kept(setting):
    tasks, learner, population = setting
    bad = population.copy()
    bad[1] *= 1e6  # a loss whose gradients explode
    values = learner.evaluate_population(tasks, bad, ValidationError(), task=TASK, seed=3)
    assert math.isnan(values[1]) and np.isfinite(np.delete(values, 1)).all()


def test_bad_populations_are_refused(setting):
    tasks, learner, population = setting
    with pytest.raises(ValueError, match=r"vectors must be \(members, size\)"):
        learner.evaluate_population(tasks, population[0], ValidationError(), task=TASK, seed=0)
    with pytest.raises(ValueError, match="the vectors 3"):
        learner.evaluate_population(tasks, population[:, :3], ValidationError(), task=TASK, seed=0)
    with pytest.raises(ValueError, match="at least one split"):
        learner.evaluate_population([], population, ValidationError(), task=TASK, seed=0)
    plain = MLPLearner(epochs=1)
    with pytest.raises(ValueError, match="'loss_net' is not a vector hyperparameter"):
        plain.evaluate_population(tasks, population, ValidationError(), task=TASK, seed=0)


def test_es_evaluates_each_generation_in_one_batch_with_the_one_by_one_values(setting, monkeypatch):
    from automl_bilevel import run_search
    from automl_bilevel_plugins.optimizers.evolution import EvolutionStrategy

    tasks, learner, _ = setting
    problem = BilevelProblem(learner, ValidationError(), ConfigurationSpace(), TASK, tasks, seed=3)
    calls = []
    original = MLPLearner.evaluate_population
    monkeypatch.setattr(
        MLPLearner, "evaluate_population", lambda self, *a, **k: calls.append(len(a[1])) or original(self, *a, **k)
    )
    batched = run_search(problem, EvolutionStrategy("mu_plus_lambda", population_size=4, sigma0=0.05), n_iter=8, seed=0)
    assert calls == [4, 4]  # two generations, one batched run each
    plain = run_search(
        problem, EvolutionStrategy("mu_plus_lambda", population_size=4, sigma0=0.05, batched=False), n_iter=8, seed=0
    )
    assert calls == [4, 4]  # batched=False evaluates one member at a time
    assert all(t.ok and t.metrics["batched"] == 1.0 for t in batched.trials)
    np.testing.assert_allclose([t.value for t in batched.trials], [t.value for t in plain.trials], atol=1e-9)
    with pytest.raises(ValueError, match="batched must be True or False"):
        EvolutionStrategy(batched="yes")
    from automl_bilevel.run.parallel import evaluate_problem

    assert EvolutionStrategy().remote_evaluator() is evaluate_problem  # Dask workers: one member at a time
