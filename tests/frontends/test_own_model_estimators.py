"""A user's own module and data through BilevelClassifier / BilevelRegressor: images, sequences and
torch tensors in; 2-D learners refuse N-d input; bad modules refused before any trial; a fit function
as a learner; example_weights refitted on train + validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from torch import nn

from automl_bilevel import AllTrialsFailedError, BilevelClassifier, BilevelRegressor, CapabilityError
from automl_bilevel_plugins.learners import torch_learners

from ..plugins.own_models import PlainCNN, TinyCNN, digits_images

FAST = dict(n_iter=2, tracking=False, random_state=0)
TRAIN = dict(epochs=2, batch_size=64)


@pytest.fixture(scope="module")
def images():
    return digits_images(400)


def test_a_module_class_on_images_stays_float32(images, monkeypatch):
    X, y = images
    seen = []
    real = torch_learners.TorchLearner.differentiable

    def spy(self, X, *a, **k):
        seen.append(np.asarray(X).dtype)
        return real(self, X, *a, **k)

    monkeypatch.setattr(torch_learners.TorchLearner, "differentiable", spy)
    clf = BilevelClassifier("torch", learner_params={"module": TinyCNN, "channels": 3, **TRAIN}, **FAST)
    clf.fit(X, y)
    assert set(seen) == {np.dtype(np.float32)}
    assert clf.input_shape_ == (1, 8, 8) and clf.predict(X[:5]).shape == (5,)
    assert clf.predict_proba(X[:5]).shape == (5, 10)
    assert clf.score(X, y) > 0.5
    uint8 = BilevelClassifier("torch", learner_params={"module": PlainCNN, **TRAIN}, **FAST)
    uint8.fit((X * 16).astype(np.uint8), y)  # integer images: converted to float32, not float64
    assert seen[-1] == np.float32


def test_torch_tensors_and_the_module_itself_as_learner(images):
    X, y = images
    clf = BilevelClassifier(TinyCNN, learner_params=TRAIN, **FAST).fit(torch.as_tensor(X), torch.as_tensor(y))
    assert clf.learner_.module is TinyCNN
    assert clf.predict(torch.as_tensor(X[:3])).shape == (3,)
    net = PlainCNN()
    clf = BilevelClassifier(net, learner_params=TRAIN, **FAST).fit(X, y)
    assert clf.model_.module is not net


def test_images_without_channels_and_sequences():
    X, y = digits_images(300)
    hw = BilevelClassifier(
        "torch",
        learner_params={"module": lambda t, c: nn.Sequential(nn.Flatten(), nn.Linear(64, t.n_outputs)), **TRAIN},
        **FAST,
    ).fit(X[:, 0], y)
    assert hw.input_shape_ == (8, 8)

    class GRURegressor(nn.Module):
        def __init__(self, input_shape, hidden=8):
            super().__init__()
            self.gru = nn.GRU(input_shape[1], hidden, batch_first=True)
            self.out = nn.Linear(hidden, 1)

        def forward(self, x):
            return self.out(self.gru(x)[0][:, -1])

    rng = np.random.default_rng(0)
    seq = rng.normal(size=(200, 6, 3)).astype(np.float32)  # (N, T, F)
    target = seq[:, :, 0].sum(1)
    reg = BilevelRegressor("torch", learner_params={"module": GRURegressor, "epochs": 20, "batch_size": 50}, **FAST)
    reg.fit(seq, target)
    assert reg.input_shape_ == (6, 3) and reg.score(seq, target) > 0.3


def test_a_2d_learner_refuses_nd_input_naming_it(images):
    X, y = images
    with pytest.raises(ValueError, match=r"learner 'sklearn' takes 2-D input .* shape \(400, 1, 8, 8\)"):
        BilevelClassifier("sklearn", **FAST).fit(X, y)


def test_predict_time_shape_must_equal_fits(images):
    X, y = images
    clf = BilevelClassifier(TinyCNN, learner_params=TRAIN, **FAST).fit(X, y)
    with pytest.raises(ValueError, match=r"shape \(1, 4, 16\), but BilevelClassifier was fitted on .*\(1, 8, 8\)"):
        clf.predict(X.reshape(-1, 1, 4, 16))
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(np.where(X == X.max(), np.nan, X))


def test_a_bad_module_is_refused_before_any_trial(images):
    X, y = images
    wide = BilevelClassifier(
        "torch", learner_params={"module": lambda t, c: nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), **TRAIN}, **FAST
    )
    with pytest.raises(ValueError, match=r"expected \(16, 10\) \(10 classes\)"):  # not AllTrialsFailedError
        wide.fit(X, y)
    assert not hasattr(wide, "trials_")


def test_example_weights_refit_on_train_and_validation(monkeypatch):
    """The issue's reproducer (logistic on digits): the search ran, then the refit failed on shapes."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:300], y[:300]
    fits = []
    real = torch_learners.TorchLearner.fit

    def spy(self, X, y, config, **k):
        fits.append((len(X), config.get("example_weights")))
        return real(self, X, y, config, **k)

    monkeypatch.setattr(torch_learners.TorchLearner, "fit", spy)
    clf = BilevelClassifier(
        "logistic",
        optimizer="hypergradient",
        optimizer_params={"tensor_hyperparameters": ["example_weights"], "inner_steps": 10},
        learner_params={"epochs": 2},
        **FAST,
    ).fit(X, y)
    n_train = int(round(300 * 0.8))
    assert clf.best_params_["example_weights"].shape == (n_train,)
    n, weights = fits[-1]  # the refit
    assert n == 300 and weights.shape == (300,)
    assert np.array_equal(weights[:n_train], clf.best_params_["example_weights"]) and np.all(weights[n_train:] == 1)


def test_l2_per_feature_on_a_conv_module_is_refused_before_any_step(images):
    X, y = images
    clf = BilevelClassifier(
        PlainCNN,
        optimizer="hypergradient",
        optimizer_params={"tensor_hyperparameters": ["l2_per_feature"]},
        learner_params=TRAIN,
        **FAST,
    )
    with pytest.raises(ValueError, match="'l2_per_feature' is not available: .*use weight_decay_per_layer"):
        clf.fit(X, y)


def _fit_svc(X, y, config, seed):
    return LogisticRegression(C=config["C"], max_iter=200).fit(X, y)


def test_a_fit_function_as_learner():
    X, y = load_digits(return_X_y=True)
    clf = BilevelClassifier(_fit_svc, search_space={"C": (0.01, 100.0, "log")}, n_iter=3, tracking=False)
    clf.fit(X[:300], y[:300])
    assert clf.score(X[300:600], y[300:600]) > 0.8 and set(clf.best_params_) == {"C"}
    with pytest.raises(ValueError, match="no default search space; give search_space"):
        BilevelClassifier(_fit_svc, **FAST).fit(X[:100], y[:100])
    with pytest.raises(CapabilityError, match="gradient optimizers need the training written in torch.*'torch'"):
        BilevelClassifier(_fit_svc, optimizer="hypergradient", search_space={"C": (0.01, 100.0, "log")}, **FAST).fit(
            X[:100], y[:100]
        )
    with pytest.raises(AllTrialsFailedError, match="has no predict"):
        BilevelClassifier(lambda X, y, c, s: None, search_space={"C": (0.1, 1.0)}, **FAST).fit(X[:100], y[:100])
