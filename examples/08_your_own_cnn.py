"""08 - Your own CNN on Fashion-MNIST images, tuned three ways, each tracked in MLflow.

The network is an ordinary ``nn.Module`` class defined here; the images go in as they are,
``(N, 1, 28, 28)`` float32. The same class is tuned

1. by ``smac`` (Bayesian optimization) over learning rate, weight decay and the number of channels
   (a constructor argument of the class, searched by its name);
2. by ``hypergradient`` over the learning rate and one weight decay per parameter tensor
   (``weight_decay_per_layer``), with the channels SMAC found: gradients through the training
   steps (checkpointed reverse mode, so memory stays bounded);
3. by ``hybrid``: the channels by SMAC, learning rate and per-layer weight decay by hypergradient
   steps inside each trial.

    python examples/08_your_own_cnn.py

Needs the Fashion-MNIST IDX files (docs/guide/data.md); without them it says so and uses scikit-learn's
8x8 digits as images instead. AUTOML_BILEVEL_EXAMPLE_QUICK=1 runs in seconds on a few hundred images.
"""

import os
import sys

import numpy as np
import torch
from torch import nn

from automl_bilevel import BilevelClassifier
from automl_bilevel.frontends.data import DatasetNotFoundError, load_idx_dataset


class SmallCNN(nn.Module):
    """Two conv blocks with BatchNorm and max-pooling, and a linear head. ``input_shape`` (one image's
    shape) is filled in by the torch learner from the data, as ``n_classes`` is."""

    def __init__(self, channels: int = 8, n_classes: int = 10, input_shape: tuple[int, ...] = (1, 28, 28)) -> None:
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * channels * (h // 4) * (w // 4), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST as (N, 1, 28, 28) float32 in [0, 1]; 8x8 digits if it is not installed."""
    try:
        X, y = load_idx_dataset("fashion-mnist", "train")
        X_test, y_test = load_idx_dataset("fashion-mnist", "test")
    except DatasetNotFoundError as exc:
        print(f"{exc}\nUsing scikit-learn's 8x8 digits as images instead.", file=sys.stderr)
        from sklearn.datasets import load_digits

        d = load_digits()
        X, y = d.images[:1400, None] * 16, d.target[:1400]  # scaled to 0..255 like the IDX images
        X_test, y_test = d.images[1400:, None] * 16, d.target[1400:]
    as_images = lambda A: (A.reshape(len(A), 1, *A.shape[-2:]) / 255.0).astype(np.float32)  # noqa: E731
    return as_images(X), y, as_images(X_test), y_test


if __name__ == "__main__":
    quick = os.environ.get("AUTOML_BILEVEL_EXAMPLE_QUICK") == "1"
    X, y, X_test, y_test = images()
    n_train, n_test = (300, 300) if quick else (4000, 2000)
    X, y, X_test, y_test = X[:n_train], y[:n_train], X_test[:n_test], y_test[:n_test]
    training = {"epochs": 1 if quick else 3, "batch_size": 64}
    common = dict(experiment_name="08-your-own-cnn", random_state=0, verbose=1)

    # 1. SMAC over lr, weight decay and channels (the class's own constructor argument)
    smac = BilevelClassifier(
        SmallCNN,
        optimizer="smac",
        search_space={"lr": (1e-4, 1e-1, "log"), "weight_decay": (1e-6, 1e-2, "log"), "channels": (4, 16)},
        learner_params=training,
        n_iter=3 if quick else 12,
        **common,
    ).fit(X, y)
    print(f"smac: best {smac.best_params_}, best val_loss {smac.best_value_:.4f}")
    print(f"smac: test accuracy {smac.score(X_test, y_test):.4f}")

    # 2. hypergradients over lr and one weight decay per parameter tensor, channels as SMAC found
    hyper = BilevelClassifier(
        SmallCNN,
        optimizer="hypergradient",
        optimizer_params={
            "mode": "checkpoint",  # reverse mode recomputing segments: memory of ~sqrt(T) steps
            "checkpoint_every": 10,
            "tensor_hyperparameters": ["weight_decay_per_layer"],
            "outer_lr": 0.2,
        },
        search_space={"lr": {"low": 1e-4, "high": 1e-1, "log": True, "default": smac.best_params_["lr"]}},
        learner_params={**training, "channels": smac.best_params_["channels"], "weight_decay": 1e-4},
        n_iter=2 if quick else 8,
        **common,
    ).fit(X, y)
    layers = hyper.learner_.layer_names(hyper.model_.task)  # the module's parameter tensors, in order
    per_layer = dict(zip(layers, hyper.best_params_["weight_decay_per_layer"], strict=True))
    print("hypergradient: weight decay per layer", {k: f"{v:.2e}" for k, v in per_layer.items()})
    print(f"hypergradient: best val_loss {hyper.best_value_:.4f}, test accuracy {hyper.score(X_test, y_test):.4f}")

    # 3. hybrid: channels by SMAC, lr and per-layer weight decay by hypergradient steps in each trial
    hybrid = BilevelClassifier(
        SmallCNN,
        optimizer="hybrid",
        optimizer_params={
            "steps": 2 if quick else 3,
            "mode": "checkpoint",
            "tensor_hyperparameters": ["weight_decay_per_layer"],
            "blackbox_params": {"n_initial": 2},
        },
        search_space={"lr": (1e-4, 1e-1, "log"), "channels": (4, 16)},
        learner_params=training,
        n_iter=2 if quick else 4,
        **common,
    ).fit(X, y)
    print(f"hybrid: best channels {hybrid.best_params_['channels']}, best val_loss {hybrid.best_value_:.4f}")
    print(f"hybrid: test accuracy {hybrid.score(X_test, y_test):.4f}")
