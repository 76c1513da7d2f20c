"""Torch inner learners: ``logistic`` (softmax regression) and ``mlp``.

Both standardise their inputs (and regression targets) with training-set statistics and train with
Adam, SGD or SGD with momentum on a seeded sequence of mini-batches; learning rate and weight decay
are hyperparameters, and any constructor setting may be searched too (``epochs``, ``batch_size``...).
Training is written functionally (``torch.func.functional_call`` on a flat weight vector, see
:mod:`automl_bilevel.gradient`), so the ``hypergradient`` optimizer differentiates exactly the
training ``fit`` runs. ``l2_per_feature`` (one L2 weight per input feature, on the first layer) and
``example_weights`` (one weight in [0, 1] per training example) are tensor hyperparameters.

``device`` (``"cpu"``, the default, ``"auto"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``; see
:func:`automl_bilevel.run.runtime.resolve_device`) is where training runs: the module, the training data
and the hyperparameter tensors move there once per fit, never per step. A fitted predictor predicts
on its device and returns NumPy arrays; pickled, it holds its module on the CPU, so a model fitted on
a GPU loads and predicts on a CPU-only machine. The default is the CPU because the small tabular
models these learners fit are faster there than on a GPU (per-step launch overhead); pass
``device="auto"`` for larger ones.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from ConfigSpace import Categorical, ConfigurationSpace, Float, Integer
from torch import nn
from torch.func import functional_call, vmap

from automl_bilevel import InnerLearner, LearnerSpec, OuterObjective, Split, Task, hookimpl
from automl_bilevel.core.components import DifferentiableLearner, LearnedComponent
from automl_bilevel.core.deadline import check_deadline
from automl_bilevel.evolution import vector_to_module
from automl_bilevel.gradient import InnerDynamics, make_optimizer
from automl_bilevel.methods.learned.loss import LossNetwork
from automl_bilevel.methods.learned.optimizer import LearnedOptimizer, LSTMOptimizer
from automl_bilevel.run.runtime import resolve_device

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}

M = TypeVar("M", bound=nn.Module)


@dataclass
class TorchPredictor:
    """A trained torch module plus the input/target scaling it was trained with."""

    module: nn.Module
    x_mean: np.ndarray
    x_scale: np.ndarray
    task: Task
    y_mean: float = 0.0
    y_scale: float = 1.0

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def _outputs(self, X: np.ndarray) -> torch.Tensor:
        """The module's outputs on ``X``, computed on its device, returned on the CPU."""
        Xs = torch.as_tensor((np.asarray(X, dtype=np.float64) - self.x_mean) / self.x_scale, dtype=torch.float32)
        with torch.no_grad():
            return self.module.eval()(Xs.to(self.device)).cpu()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.device.type != "cpu":  # pickles load anywhere, also where there is no GPU
            state["module"] = copy.deepcopy(self.module).cpu()
        return state

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self._outputs(X)
        if self.task.is_classifier:
            return out.argmax(dim=1).numpy()
        return out[:, 0].double().numpy() * self.y_scale + self.y_mean

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if not self.task.is_classifier:
            raise AttributeError("a regression model has no predict_proba")
        return torch.softmax(self._outputs(X).double(), dim=1).numpy()


class _PrecomputedPredictor(TorchPredictor):
    """A population member's outputs on one validation set, computed in a batch: ``predict`` and
    ``predict_proba`` post-process them exactly as :class:`TorchPredictor` does."""

    def __init__(
        self, outputs: torch.Tensor, X: np.ndarray, task: Task, y_mean: float = 0.0, y_scale: float = 1.0
    ) -> None:
        super().__init__(nn.Identity(), np.zeros(1), np.ones(1), task, y_mean, y_scale)
        self.outputs, self.X = outputs, X

    def _outputs(self, X: np.ndarray) -> torch.Tensor:
        if X is not self.X and not np.array_equal(np.asarray(X), np.asarray(self.X)):
            raise ValueError("a population member's outputs were computed on its validation set only")
        return self.outputs


class DifferentiableTask:
    """One inner problem written functionally: flat weights ``w``, ``inner_loss(w, hp, t)``,
    dynamics, initial state, and a forward pass on new data. The ``hypergradient`` optimizer
    differentiates exactly the training that ``fit`` runs."""

    def __init__(
        self,
        module: nn.Module,
        Xt: torch.Tensor,
        yt: torch.Tensor,
        task: Task,
        s: Mapping[str, Any],
        steps: int,
        seed: int,
        x_mean: np.ndarray,
        x_scale: np.ndarray,
        y_mean: float = 0.0,
        y_scale: float = 1.0,
    ) -> None:
        self.device = resolve_device(s.get("device", "cpu"))
        dev = self.device
        module = module.to(dev)
        self.module, self.Xt, self.yt, self.task = module, Xt.to(dev), yt.to(dev), task
        self.x_mean, self.x_scale, self.y_mean, self.y_scale = x_mean, x_scale, y_mean, y_scale
        named = list(module.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.first_weight = next(n for n in self.names if n.endswith("weight"))
        w0 = torch.cat([p.detach().reshape(-1) for _, p in named])
        n, bs = len(Xt), min(int(s["batch_size"]), len(Xt))
        gen = torch.Generator().manual_seed(seed)
        self.batches: list[torch.Tensor] | None = None
        if bs < n:  # a fixed, seeded sequence of mini-batches: the same in every recomputation
            per_epoch = math.ceil(n / bs)
            self.batches = []
            while len(self.batches) < steps:
                check_deadline()  # epochs=1e9: the batch sequence alone outlasts any timeout
                order = torch.randperm(n, generator=gen)
                self.batches += [order[i * bs : (i + 1) * bs] for i in range(per_epoch)]
            self.batches = [b.to(dev) for b in self.batches[:steps]]  # moved once, not per step
        optimizer, loss = s["optimizer"], s.get("loss")
        self.optimizer = (
            LearnedOptimizer(_on(optimizer, dev))
            if isinstance(optimizer, LSTMOptimizer)
            else make_optimizer(optimizer, lr="lr", momentum="momentum")
        )
        self.dynamics = InnerDynamics(self.inner_loss, self.optimizer, w0.numel(), steps)
        self.z0 = self.dynamics.init(w0)
        constants = {k: torch.tensor(float(s[k]), device=dev) for k in ("lr", "weight_decay", "momentum")}
        # a Mapping to readers (as the DifferentiableInnerProblem protocol declares it), filled below
        self.constants: Mapping[str, torch.Tensor] = constants
        if s.get("l2_per_feature") is not None:
            constants["l2_per_feature"] = torch.as_tensor(np.asarray(s["l2_per_feature"], dtype=np.float32), device=dev)
        self.loss_network = _on(loss, dev) if isinstance(loss, LossNetwork) else None
        self.mse = loss == "mse"
        if (self.loss_network is not None or self.mse) and not task.is_classifier:
            raise ValueError("loss='mse' and learned loss networks are for classifiers (probabilities vs one-hot)")
        if self.loss_network is not None:
            flat = s.get("loss_net")
            flat = self.loss_network.flat() if flat is None else torch.as_tensor(np.asarray(flat, dtype=np.float32))
            constants["loss_net"] = flat.float().to(dev)
        if s.get("example_weights") is not None:
            if self.loss_network is not None or self.mse:
                raise ValueError(
                    "example_weights need a per-example loss; not available with loss='mse' or a loss network"
                )
            ex = np.asarray(s["example_weights"], dtype=np.float32)
            if ex.shape != (len(Xt),) and len(Xt):
                raise ValueError(
                    f"example_weights has shape {ex.shape}, expected ({len(Xt)},): one per training example"
                )
            constants["example_weights"] = torch.as_tensor(ex, device=dev)

    def params(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            n: part.view(shape)
            for n, part, shape in zip(self.names, torch.split(w, self.sizes), self.shapes, strict=True)
        }

    def outputs(self, w: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.params(w), (X,))

    def per_example_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task.is_classifier:
            return nn.functional.cross_entropy(out, y, reduction="none")
        return (out[:, 0] - y) ** 2

    def inner_loss(self, w: torch.Tensor, hp: Mapping[str, torch.Tensor], t: int | None) -> torch.Tensor:
        idx = self.batches[t] if (self.batches is not None and t is not None and t < len(self.batches)) else None
        X, y = (self.Xt, self.yt) if idx is None else (self.Xt[idx], self.yt[idx])
        out = self.outputs(w, X)
        if self.loss_network is not None or self.mse:
            probs = torch.softmax(out, dim=1)
            onehot = nn.functional.one_hot(y, self.task.n_outputs).to(probs.dtype)
            loss = (
                self.loss_network.functional(hp["loss_net"], probs, onehot)
                if self.loss_network is not None
                else ((probs - onehot) ** 2).sum(1).mean()
            )
            return self._regularised(loss, w, hp)
        losses = self.per_example_loss(out, y)
        if "example_weights" in hp:
            ex = hp["example_weights"] if idx is None else hp["example_weights"][idx]
            loss = (ex * losses).mean()
        else:
            loss = losses.mean()
        return self._regularised(loss, w, hp)

    def _regularised(self, loss: torch.Tensor, w: torch.Tensor, hp: Mapping[str, torch.Tensor]) -> torch.Tensor:
        # Python scalars only multiply tensors of rank >= 1: under vmap(jvp(...)) a Python float times a
        # batched 0-dim tensor is promoted to float64 (seen with torch 2.13), which breaks forward mode.
        if "weight_decay" in hp:  # absent only where it is a constant 0 (evaluate_population): nothing to add
            loss = loss + (0.5 * w * w).sum() * hp["weight_decay"]
        if "l2_per_feature" in hp:
            W = self.params(w)[self.first_weight]
            loss = loss + (0.5 * hp["l2_per_feature"][None, :] * W * W).sum()
        return loss

    def tensor(self, X: np.ndarray) -> torch.Tensor:
        """New inputs, scaled like the training data, on the task's device."""
        return torch.as_tensor(
            (np.asarray(X, dtype=np.float64) - self.x_mean) / self.x_scale, dtype=torch.float32, device=self.device
        )

    def targets(self, y: np.ndarray) -> torch.Tensor:
        """New targets, encoded like the training targets, on the task's device."""
        if self.task.is_classifier:
            return torch.as_tensor(np.asarray(y), dtype=torch.long, device=self.device)
        return torch.as_tensor(
            (np.asarray(y, dtype=np.float64) - self.y_mean) / self.y_scale, dtype=torch.float32, device=self.device
        )

    def predictor(self, w: torch.Tensor) -> TorchPredictor:
        with torch.no_grad():
            for p, v in zip(self.module.parameters(), torch.split(w.detach(), self.sizes), strict=True):
                p.copy_(v.view(p.shape))
        return TorchPredictor(self.module.eval(), self.x_mean, self.x_scale, self.task, self.y_mean, self.y_scale)


def _on(module: M, device: torch.device) -> M:
    """``module`` itself when it is on ``device`` already, else a copy there (the caller's stays put)."""
    first = next(module.parameters(), None)
    return module if first is None or first.device == device else copy.deepcopy(module).to(device)


class TorchLearner(InnerLearner, DifferentiableLearner):
    """Shared training of the torch learners (functional, so it can be differentiated); subclasses
    build the module. (Subclassing the ``DifferentiableLearner`` protocol has mypy check that
    ``differentiable`` and what it returns keep to the protocols.)"""

    #: hyperparameters a gradient-based outer optimizer can move, with their kinds
    DIFFERENTIABLE: dict[str, str] = {
        "lr": "positive",
        "weight_decay": "positive",
        "momentum": "unit",
        "l2_per_feature": "positive_per_feature",
        "example_weights": "unit_per_example",
    }

    def __init__(
        self,
        *,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        epochs: int = 100,
        batch_size: int = 256,
        optimizer: str | LSTMOptimizer = "adam",
        momentum: float = 0.9,
        standardize: bool = True,
        loss: str | LossNetwork = "default",
        device: str = "cpu",
    ) -> None:
        self.settings: dict[str, Any] = dict(
            lr=lr,
            weight_decay=weight_decay,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer,
            momentum=momentum,
            standardize=standardize,
            loss=loss,
            device=device,
        )
        self._check(self.settings)

    @staticmethod
    def _check(s: Mapping[str, Any]) -> None:
        if not (isinstance(s["lr"], (int, float)) and s["lr"] > 0):
            raise ValueError(f"lr must be positive, got {s['lr']!r}")
        if not s["weight_decay"] >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {s['weight_decay']!r}")
        if int(s["epochs"]) < 1 or int(s["batch_size"]) < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {s['epochs']!r}, {s['batch_size']!r}")
        if not isinstance(s["optimizer"], LSTMOptimizer) and s["optimizer"] not in ("adam", "sgd", "momentum"):
            raise ValueError(
                f"optimizer must be 'adam', 'sgd', 'momentum' or a learned LSTMOptimizer, got {s['optimizer']!r}"
            )
        loss = s.get("loss", "default")
        if not (isinstance(loss, LossNetwork) or loss in ("default", "mse")):
            raise ValueError(f"loss must be 'default', 'mse' or a LossNetwork, got {loss!r}")
        resolve_device(s.get("device", "cpu"))  # a malformed or absent device fails here, before any work

    def build_module(self, task: Task, s: Mapping[str, Any]) -> nn.Module:
        raise NotImplementedError

    def param_names(self, task: Task) -> set[str]:
        return (
            set(self.settings) | set(self.config_space(task).keys()) | {"l2_per_feature", "example_weights", "loss_net"}
        )

    def differentiable_hyperparameters(self, task: Task) -> dict[str, str]:
        """What a gradient method may move (the DifferentiableLearner protocol), with their kinds; with a
        learned loss, its weights ``loss_net`` too (ML3 through the estimator)."""
        out = dict(self.DIFFERENTIABLE)
        if isinstance(self.settings["loss"], LossNetwork):
            out["loss_net"] = "vector"
        return out

    def vector_hyperparameters(self, task: Task) -> dict[str, np.ndarray]:
        """With a learned loss: its weights, ``loss_net`` (what the ``es`` optimizer evolves)."""
        loss = self.settings["loss"]
        return {"loss_net": loss.flat().double().cpu().numpy()} if isinstance(loss, LossNetwork) else {}

    def learned_components(self, config: Mapping[str, Any]) -> dict[str, LearnedComponent]:
        """The learned loss (with ``config``'s ``loss_net`` weights, if any) and learned optimizer this
        learner trains with, by name; trackers store each with the run."""
        s = self.resolve(config)
        out: dict[str, LearnedComponent] = {}
        if isinstance(s.get("loss"), LossNetwork):
            net = copy.deepcopy(s["loss"])
            if s.get("loss_net") is not None:
                vector_to_module(np.asarray(s["loss_net"], dtype=np.float64), net)
            out["loss_network"] = net
        if isinstance(s["optimizer"], LSTMOptimizer):
            out["learned_optimizer"] = s["optimizer"]
        return out

    def resolve(self, config: Mapping[str, Any]) -> dict[str, Any]:
        s = {**self.settings, **config}
        self._check(s)
        return s

    def steps_per_epoch(self, n: int, s: Mapping[str, Any]) -> int:
        return math.ceil(n / min(int(s["batch_size"]), n))

    def differentiable(
        self,
        X: np.ndarray,
        y: np.ndarray,
        config: Mapping[str, Any],
        *,
        task: Task,
        seed: int,
        budget: float | None = None,
        steps: int | None = None,
    ) -> DifferentiableTask:
        """The inner problem on (X, y) as a :class:`DifferentiableTask` (``steps`` overrides epochs)."""
        s = self.resolve(config)
        X = np.asarray(X, dtype=np.float64)
        if steps is None:
            epochs = int(s["epochs"]) if budget is None else max(1, round(int(s["epochs"]) * float(budget)))
            steps = epochs * self.steps_per_epoch(len(X), s)
        x_mean = X.mean(axis=0) if s["standardize"] else np.zeros(X.shape[1])
        x_scale = X.std(axis=0) if s["standardize"] else np.ones(X.shape[1])
        x_scale = np.where(x_scale > 1e-12, x_scale, 1.0)
        y_mean, y_scale = 0.0, 1.0
        if not task.is_classifier:
            y_mean, y_scale = float(np.mean(y)), float(np.std(y)) or 1.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self.build_module(task, s)
        Xt = torch.as_tensor((X - x_mean) / x_scale, dtype=torch.float32)
        dt = DifferentiableTask(module, Xt, torch.empty(0), task, s, int(steps), seed, x_mean, x_scale, y_mean, y_scale)
        dt.yt = dt.targets(y)
        return dt

    def evaluate_population(
        self,
        splits: Sequence[Split],
        vectors: np.ndarray,
        objective: OuterObjective,
        *,
        task: Task,
        seed: int,
        name: str = "loss_net",
        config: Mapping[str, Any] | None = None,
        budget: float | None = None,
    ) -> np.ndarray:
        """The objective of each row of ``vectors`` (values of the vector hyperparameter ``name``,
        e.g. a population of loss networks), averaged over ``splits``: what evaluating each member
        with ``fit`` and ``objective`` one by one gives, computed as one batched run per split
        (``torch.func.vmap`` over the members, as in functorch's model ensembling). A member whose
        training diverges gets NaN (a failed trial). Splits of different sizes run one after the
        other; members always run together."""
        V = np.asarray(vectors, dtype=np.float32)
        if V.ndim != 2 or len(V) == 0:
            raise ValueError(f"vectors must be (members, size) with at least one member, got shape {V.shape}")
        if not splits:
            raise ValueError("evaluate_population needs at least one split")
        values = np.zeros((len(V), len(splits)))
        for j, split in enumerate(splits):
            dt = self.differentiable(
                split.X_train, split.y_train, dict(config or {}), task=task, seed=seed, budget=budget
            )
            if name not in dt.constants:
                raise ValueError(
                    f"{name!r} is not a vector hyperparameter of this learner "
                    f"(it has {sorted(k for k, v in dt.constants.items() if v.ndim == 1)})"
                )
            if dt.constants[name].shape != V.shape[1:]:
                raise ValueError(f"{name!r} has {dt.constants[name].numel()} entries, the vectors {V.shape[1]}")
            base = {k: v for k, v in dt.constants.items() if k != name}
            if float(base["weight_decay"]) == 0.0:
                # a zero weight decay adds exactly 0 to the loss and its gradient; skipping it saves two
                # passes over the (members x weights) state per step
                del base["weight_decay"]
            Xv = dt.tensor(split.X_val)

            def member(
                vec: torch.Tensor,
                dt: DifferentiableTask = dt,
                base: dict[str, torch.Tensor] = base,
                Xv: torch.Tensor = Xv,
            ) -> tuple[torch.Tensor, torch.Tensor]:
                hp = {**base, name: vec}
                z = dt.z0
                for t in range(dt.dynamics.T):
                    z = dt.dynamics.step_func(t, z, hp)
                return dt.outputs(dt.dynamics.weights(z), Xv), torch.isfinite(z).all()

            with torch.no_grad():
                outputs, finite = vmap(member)(torch.as_tensor(V, device=dt.device))
            outputs, finite = outputs.cpu(), finite.cpu()
            for p in range(len(V)):
                if not bool(finite[p]):
                    values[p, j] = math.nan
                    continue
                model = _PrecomputedPredictor(outputs[p], split.X_val, task, dt.y_mean, dt.y_scale)
                values[p, j] = float(objective(model, split.X_val, split.y_val, task=task))
        with np.errstate(invalid="ignore"):
            out = values.mean(axis=1)
        out[~np.isfinite(out)] = math.nan
        return out

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        config: Mapping[str, Any],
        *,
        task: Task,
        seed: int,
        budget: float | None = None,
    ) -> TorchPredictor:
        dt = self.differentiable(X, y, config, task=task, seed=seed, budget=budget)
        try:
            z = dt.dynamics.run(dt.z0, dt.constants)
        except FloatingPointError as exc:
            raise FloatingPointError(
                f"inner training diverged with lr={dt.constants['lr'].item():.3g}: {exc}"
            ) from None
        return dt.predictor(dt.dynamics.weights(z))


class LogisticLearner(TorchLearner):
    """Softmax regression (a single linear layer) trained on cross-entropy."""

    def config_space(self, task: Task) -> ConfigurationSpace:
        return ConfigurationSpace(
            space=[
                Float("lr", (1e-3, 1.0), log=True, default=1e-2),
                Float("weight_decay", (1e-7, 1e-1), log=True, default=1e-4),
            ]
        )

    def build_module(self, task: Task, s: Mapping[str, Any]) -> nn.Module:
        return nn.Linear(task.n_features, task.n_outputs)


class MLPLearner(TorchLearner):
    """A fully connected network: ``n_layers`` hidden layers of ``hidden_units``."""

    def __init__(
        self,
        *,
        hidden_units: int = 64,
        n_layers: int = 1,
        activation: str = "relu",
        epochs: int = 50,
        batch_size: int = 128,
        lr: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, **kwargs)
        self.settings.update(hidden_units=hidden_units, n_layers=n_layers, activation=activation)
        self._check(self.settings)

    @staticmethod
    def _check(s: Mapping[str, Any]) -> None:
        TorchLearner._check(s)
        if "hidden_units" in s:
            if int(s["hidden_units"]) < 1 or int(s["n_layers"]) < 0:
                raise ValueError(
                    f"hidden_units must be >= 1 and n_layers >= 0, got {s['hidden_units']}, {s['n_layers']}"
                )
            if s["activation"] not in ACTIVATIONS:
                raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {s['activation']!r}")

    def config_space(self, task: Task) -> ConfigurationSpace:
        return ConfigurationSpace(
            space=[
                Float("lr", (1e-4, 1e-1), log=True, default=1e-3),
                Float("weight_decay", (1e-7, 1e-2), log=True, default=1e-4),
                Integer("hidden_units", (16, 256), log=True, default=64),
                Integer("n_layers", (1, 3), default=1),
                Categorical("activation", ["relu", "tanh"], default="relu"),
            ]
        )

    def build_module(self, task: Task, s: Mapping[str, Any]) -> nn.Module:
        layers: list[nn.Module] = []
        width = task.n_features
        for _ in range(int(s["n_layers"])):
            layers += [nn.Linear(width, int(s["hidden_units"])), ACTIVATIONS[s["activation"]]()]
            width = int(s["hidden_units"])
        layers.append(nn.Linear(width, task.n_outputs))
        return nn.Sequential(*layers)


_CAPS = frozenset({"differentiable", "multi_fidelity"})


@hookimpl
def bilevel_register_learners() -> list[LearnerSpec]:
    return [
        LearnerSpec(
            "logistic",
            LogisticLearner,
            "softmax regression in torch (classification)",
            tasks=frozenset({"classification"}),
            capabilities=_CAPS,
        ),
        LearnerSpec("mlp", MLPLearner, "multilayer perceptron in torch", capabilities=_CAPS),
    ]
