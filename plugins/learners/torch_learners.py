"""Torch inner learners: ``logistic`` (softmax regression) and ``mlp``.

Both standardise their inputs (and regression targets) with training-set statistics and train with
Adam or SGD (optionally with momentum) on mini-batches; learning rate and weight decay are
hyperparameters, and any constructor setting may be searched too (``epochs``, ``batch_size``...).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from ConfigSpace import Categorical, ConfigurationSpace, Float, Integer
from torch import nn

from automl_bilevel import InnerLearner, LearnerSpec, Task, hookimpl

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


@dataclass
class TorchPredictor:
    """A trained torch module plus the input/target scaling it was trained with."""

    module: nn.Module
    x_mean: np.ndarray
    x_scale: np.ndarray
    task: Task
    y_mean: float = 0.0
    y_scale: float = 1.0

    def _outputs(self, X: np.ndarray) -> torch.Tensor:
        Xs = torch.as_tensor((np.asarray(X, dtype=np.float64) - self.x_mean) / self.x_scale, dtype=torch.float32)
        with torch.no_grad():
            return self.module.eval()(Xs)

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self._outputs(X)
        if self.task.is_classifier:
            return out.argmax(dim=1).numpy()
        return out[:, 0].double().numpy() * self.y_scale + self.y_mean

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if not self.task.is_classifier:
            raise AttributeError("a regression model has no predict_proba")
        return torch.softmax(self._outputs(X).double(), dim=1).numpy()


class TorchLearner(InnerLearner):
    """Shared training loop of the torch learners; subclasses build the module."""

    def __init__(self, *, lr: float = 1e-2, weight_decay: float = 1e-4, epochs: int = 100, batch_size: int = 256,
                 optimizer: str = "adam", momentum: float = 0.9, standardize: bool = True):
        self.settings = dict(lr=lr, weight_decay=weight_decay, epochs=epochs, batch_size=batch_size,
                             optimizer=optimizer, momentum=momentum, standardize=standardize)
        self._check(self.settings)

    @staticmethod
    def _check(s: Mapping[str, Any]) -> None:
        if not (isinstance(s["lr"], (int, float)) and s["lr"] > 0):
            raise ValueError(f"lr must be positive, got {s['lr']!r}")
        if not s["weight_decay"] >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {s['weight_decay']!r}")
        if int(s["epochs"]) < 1 or int(s["batch_size"]) < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {s['epochs']!r}, {s['batch_size']!r}")
        if s["optimizer"] not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {s['optimizer']!r}")

    def build_module(self, task: Task, s: Mapping[str, Any]) -> nn.Module:
        raise NotImplementedError

    def param_names(self, task: Task) -> set[str]:
        return set(self.settings) | set(self.config_space(task).keys())

    def resolve(self, config: Mapping[str, Any]) -> dict[str, Any]:
        s = {**self.settings, **config}
        self._check(s)
        return s

    def fit(self, X, y, config, *, task, seed, budget=None):
        s = self.resolve(config)
        epochs = int(s["epochs"]) if budget is None else max(1, round(int(s["epochs"]) * float(budget)))
        X = np.asarray(X, dtype=np.float64)
        x_mean = X.mean(axis=0) if s["standardize"] else np.zeros(X.shape[1])
        x_scale = X.std(axis=0) if s["standardize"] else np.ones(X.shape[1])
        x_scale = np.where(x_scale > 1e-12, x_scale, 1.0)
        y_mean, y_scale = 0.0, 1.0
        if not task.is_classifier:
            y_mean, y_scale = float(np.mean(y)), float(np.std(y)) or 1.0
        Xt = torch.as_tensor((X - x_mean) / x_scale, dtype=torch.float32)
        if task.is_classifier:
            yt = torch.as_tensor(y, dtype=torch.long)
            loss_fn = nn.functional.cross_entropy
        else:
            yt = torch.as_tensor((np.asarray(y, dtype=np.float64) - y_mean) / y_scale, dtype=torch.float32)[:, None]
            loss_fn = nn.functional.mse_loss
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self.build_module(task, s)
        gen = torch.Generator().manual_seed(seed)
        if s["optimizer"] == "adam":
            opt = torch.optim.Adam(module.parameters(), lr=float(s["lr"]), weight_decay=float(s["weight_decay"]))
        else:
            opt = torch.optim.SGD(module.parameters(), lr=float(s["lr"]), momentum=float(s["momentum"]),
                                  weight_decay=float(s["weight_decay"]))
        n, bs = len(Xt), min(int(s["batch_size"]), len(Xt))
        module.train()
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen) if bs < n else None
            for start in range(0, n, bs):
                idx = order[start:start + bs] if order is not None else slice(None)
                loss = loss_fn(module(Xt[idx]), yt[idx])
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"inner training diverged at epoch {epoch} (loss {loss.item()}) with lr={s['lr']}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return TorchPredictor(module.eval(), x_mean, x_scale, task, y_mean, y_scale)


class LogisticLearner(TorchLearner):
    """Softmax regression (a single linear layer) trained on cross-entropy."""

    def config_space(self, task: Task) -> ConfigurationSpace:
        return ConfigurationSpace(space=[
            Float("lr", (1e-3, 1.0), log=True, default=1e-2),
            Float("weight_decay", (1e-7, 1e-1), log=True, default=1e-4),
        ])

    def build_module(self, task, s):
        return nn.Linear(task.n_features, task.n_outputs)


class MLPLearner(TorchLearner):
    """A fully connected network: ``n_layers`` hidden layers of ``hidden_units``."""

    def __init__(self, *, hidden_units: int = 64, n_layers: int = 1, activation: str = "relu", epochs: int = 50,
                 batch_size: int = 128, lr: float = 1e-3, **kwargs):
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, **kwargs)
        self.settings.update(hidden_units=hidden_units, n_layers=n_layers, activation=activation)
        self._check(self.settings)

    @staticmethod
    def _check(s):
        TorchLearner._check(s)
        if "hidden_units" in s:
            if int(s["hidden_units"]) < 1 or int(s["n_layers"]) < 0:
                raise ValueError(f"hidden_units must be >= 1 and n_layers >= 0, got {s['hidden_units']}, {s['n_layers']}")
            if s["activation"] not in ACTIVATIONS:
                raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {s['activation']!r}")

    def config_space(self, task: Task) -> ConfigurationSpace:
        return ConfigurationSpace(space=[
            Float("lr", (1e-4, 1e-1), log=True, default=1e-3),
            Float("weight_decay", (1e-7, 1e-2), log=True, default=1e-4),
            Integer("hidden_units", (16, 256), log=True, default=64),
            Integer("n_layers", (1, 3), default=1),
            Categorical("activation", ["relu", "tanh"], default="relu"),
        ])

    def build_module(self, task, s):
        layers, width = [], task.n_features
        for _ in range(int(s["n_layers"])):
            layers += [nn.Linear(width, int(s["hidden_units"])), ACTIVATIONS[s["activation"]]()]
            width = int(s["hidden_units"])
        layers.append(nn.Linear(width, task.n_outputs))
        return nn.Sequential(*layers)


_CAPS = frozenset({"differentiable", "multi_fidelity"})


@hookimpl
def bilevel_register_learners():
    return [
        LearnerSpec("logistic", LogisticLearner, "softmax regression in torch (classification)",
                    tasks=frozenset({"classification"}), capabilities=_CAPS),
        LearnerSpec("mlp", MLPLearner, "multilayer perceptron in torch", capabilities=_CAPS),
    ]
