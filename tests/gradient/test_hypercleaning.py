"""Data hyper-cleaning recipe on a small real problem (digits) with flipped labels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from automl_bilevel.methods.recipes.hypercleaning import flag_scores, flip_labels, hyperclean
from automl_bilevel_plugins.learners.torch_learners import LogisticLearner


def test_flip_labels_always_changes_the_class():
    y = np.arange(1000) % 10
    noisy, mask = flip_labels(y, 0.5, 10, np.random.default_rng(0))
    assert mask.sum() == 500 and np.all(noisy[mask] != y[mask]) and np.all(noisy[~mask] == y[~mask])
    with pytest.raises(ValueError, match="fraction"):
        flip_labels(y, 1.5, 10, np.random.default_rng(0))


def test_flag_scores():
    s = flag_scores(np.array([0.0, 0.1, 0.9, 1.0]), np.array([True, False, True, False]))
    assert s == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "n_flagged": 2}


def test_hypercleaning_down_weights_flipped_examples():
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    y_noisy, flipped = flip_labels(y[:600], 0.4, 10, rng)
    lrn = LogisticLearner(optimizer="sgd", momentum=0.9, lr=0.1, weight_decay=1e-5, epochs=60, batch_size=600)
    res = hyperclean(X[:600], y_noisy, X[600:1000], y[600:1000], learner=lrn, outer_steps=15, outer_lr=0.1)
    w = res.weights
    assert w.shape == (600,) and w.min() >= 0 and w.max() <= 1
    assert w[flipped].mean() < w[~flipped].mean() - 0.2  # flipped labels get clearly lower weights
    assert res.history[-1]["val_loss"] < res.history[0]["val_loss"]
    assert flag_scores(w, flipped)["f1"] > 0.6


def test_example_weights_must_match_the_training_set():
    from automl_bilevel import Task

    X, y = load_digits(return_X_y=True)
    with pytest.raises(ValueError, match="one per training example"):
        LogisticLearner(epochs=1).fit(
            X[:50], y[:50], {"example_weights": np.ones(10)}, task=Task("classification", 64, 10), seed=0
        )
