"""Batched populations: a generation of loss networks evaluated as one vmap'd computation per task
gives the numbers of evaluating its members one by one through the search loop's problem."""
from __future__ import annotations

import math

import numpy as np
import pytest
from ConfigSpace import ConfigurationSpace
from sklearn.datasets import load_digits

from automl_bilevel import BilevelProblem, Task
from automl_bilevel.learned import LossNetwork, sample_tasks
from automl_bilevel_plugins.learners.torch_learners import MLPLearner
from automl_bilevel_plugins.objectives.validation import ValidationError, ValidationLoss

TASK = Task("classification", 64, 10)


@pytest.fixture(scope="module")
def setting():
    X, y = load_digits(return_X_y=True)
    tasks = sample_tasks(X / 16.0, y, 3, n_train=(20, 60), n_val=150, seed=0)  # three sizes
    net = LossNetwork(10, seed=0)
    learner = MLPLearner(hidden_units=32, n_layers=2, optimizer="sgd", lr=0.2, weight_decay=0.0, epochs=8,
                         batch_size=10**6, standardize=False, loss=net)
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
