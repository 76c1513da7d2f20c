"""Torch inner learners: ``torch`` (any ``nn.Module`` of the user's), ``logistic`` (softmax regression)
and ``mlp``, the last two being the first with a fixed module (one training path).

They standardise flat inputs (and regression targets) with training-set statistics (images and
sequences are passed as they are, float32) and train with Adam, SGD or SGD with momentum on a seeded
sequence of mini-batches; learning rate and weight decay
are hyperparameters, and any constructor setting may be searched too (``epochs``, ``batch_size``...).
Training is written functionally (``torch.func.functional_call`` on a flat weight vector, see
:mod:`automl_bilevel.gradient`), so the ``hypergradient`` optimizer differentiates exactly the
training ``fit`` runs. ``l2_per_feature`` (one L2 weight per input feature, on the first layer),
``example_weights`` (one weight in [0, 1] per training example), ``lr_per_layer`` and
``weight_decay_per_layer`` (one value per parameter tensor) are tensor hyperparameters.

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
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
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
from automl_bilevel.gradient.optim import InnerOptimizer
from automl_bilevel.methods.learned.loss import LossNetwork
from automl_bilevel.methods.learned.optimizer import LearnedOptimizer, LSTMOptimizer
from automl_bilevel.run.runtime import resolve_device

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}

M = TypeVar("M", bound=nn.Module)


#: how many examples a prediction pushes through the module at once (bounds memory on large image sets)
PREDICT_BATCH = 2048


@dataclass
class TorchPredictor:
    """A trained torch module plus the input/target scaling it was trained with.

    ``x_mean``/``x_scale`` are ``None`` where the inputs were not standardised; ``input_shape`` is the
    shape of one example the module was trained on (a prediction on another shape is refused)."""

    module: nn.Module
    x_mean: np.ndarray | None
    x_scale: np.ndarray | None
    task: Task
    y_mean: float = 0.0
    y_scale: float = 1.0

    @property
    def device(self) -> torch.device:
        """Where the module's parameters are (and predictions are computed)."""
        return next(self.module.parameters()).device

    def _outputs(self, X: np.ndarray) -> torch.Tensor:
        """The module's outputs on ``X``, computed on its device in batches, returned on the CPU."""
        X = _as_inputs(X)
        shape = self.task.example_shape
        if tuple(X.shape[1:]) != shape:
            raise ValueError(f"X has examples of shape {tuple(X.shape[1:])}; the model was trained on {shape}")
        module = self.module.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, max(len(X), 1), PREDICT_BATCH):
                Xb = _scaled(X[i : i + PREDICT_BATCH], self.x_mean, self.x_scale)
                outs.append(module(Xb.to(self.device)).cpu())
        return torch.cat(outs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.device.type != "cpu":  # pickles load anywhere, also where there is no GPU
            state["module"] = copy.deepcopy(self.module).cpu()
        return state

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Encoded class labels (classification) or targets on the original scale (regression)."""
        out = self._outputs(X)
        if self.task.is_classifier:
            return out.argmax(dim=1).numpy()
        return out[:, 0].double().numpy() * self.y_scale + self.y_mean

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (the softmax of the module's outputs); classification only."""
        if not self.task.is_classifier:
            raise AttributeError("a regression model has no predict_proba")
        return torch.softmax(self._outputs(X).double(), dim=1).numpy()


def _as_inputs(X: Any) -> np.ndarray:
    """``X`` as a NumPy array without a copy where possible (a CPU torch tensor is viewed, not copied)."""
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    return np.asarray(X)


def _scaled(X: np.ndarray, mean: np.ndarray | None, scale: np.ndarray | None) -> torch.Tensor:
    """``X`` standardised (when ``mean`` is given) as a float32 tensor; float32 input is not copied."""
    if mean is None or scale is None:
        return torch.as_tensor(np.asarray(X, dtype=np.float32))
    return torch.as_tensor(((np.asarray(X, dtype=np.float64) - mean) / scale).astype(np.float32))


class _PrecomputedPredictor(TorchPredictor):
    """A population member's outputs on one validation set, computed in a batch: ``predict`` and
    ``predict_proba`` post-process them exactly as :class:`TorchPredictor` does."""

    def __init__(
        self, outputs: torch.Tensor, X: np.ndarray, task: Task, y_mean: float = 0.0, y_scale: float = 1.0
    ) -> None:
        super().__init__(nn.Identity(), None, None, task, y_mean, y_scale)
        self.outputs, self.X = outputs, X

    def _outputs(self, X: np.ndarray) -> torch.Tensor:
        if X is not self.X and not np.array_equal(np.asarray(X), np.asarray(self.X)):
            raise ValueError("a population member's outputs were computed on its validation set only")
        return self.outputs


class _PerLayer:
    """An inner optimizer whose learning rate is one value per parameter tensor (``hp['lr_per_layer']``,
    expanded to every weight of its tensor through ``index``) instead of the scalar ``hp['lr']``."""

    def __init__(self, base: InnerOptimizer, index: torch.Tensor) -> None:
        self.base, self.index = base, index

    @property
    def n_slots(self) -> int:
        """The wrapped optimizer's state vectors."""
        return self.base.n_slots

    def update(
        self, w: torch.Tensor, slots: tuple[torch.Tensor, ...], g: torch.Tensor, hp: Mapping[str, torch.Tensor], t: int
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One step of the wrapped optimizer with the per-weight learning rates."""
        if "lr_per_layer" not in hp:
            return self.base.update(w, slots, g, hp, t)
        return self.base.update(w, slots, g, {**hp, "lr": hp["lr_per_layer"][self.index]}, t)


class DifferentiableTask:
    """One inner problem written functionally: flat weights ``w``, ``inner_loss(w, hp, t)``,
    dynamics, initial state, and a forward pass on new data. The ``hypergradient`` optimizer
    differentiates exactly the training that ``fit`` runs.

    Buffers (BatchNorm running statistics) are state carried through the steps as in a plain loop:
    the training forward of step ``t`` starts from the buffers after step ``t - 1`` and records its
    updated copies (a recomputation of step ``t``, as checkpointed reverse mode does, records the
    same values); ``outputs`` runs the module in eval mode with the buffers after the last step. They
    are not differentiated (a hypergradient treats running statistics as constants, as the module's
    own backward pass does). Dropout and other random layers draw from a generator seeded by
    ``(seed, t)``, so every recomputation of a step sees the same masks and a trial is reproducible.
    """

    def __init__(
        self,
        module: nn.Module,
        Xt: torch.Tensor,
        yt: torch.Tensor,
        task: Task,
        s: Mapping[str, Any],
        steps: int,
        seed: int,
        x_mean: np.ndarray | None,
        x_scale: np.ndarray | None,
        y_mean: float = 0.0,
        y_scale: float = 1.0,
    ) -> None:
        self.device = resolve_device(s.get("device", "cpu"))
        dev = self.device
        module = module.to(dev)
        self.module, self.Xt, self.yt, self.task, self.seed = module, Xt.to(dev), yt.to(dev), task, seed
        self.x_mean, self.x_scale, self.y_mean, self.y_scale = x_mean, x_scale, y_mean, y_scale
        named = list(module.named_parameters())
        if not named:
            raise ValueError(
                f"the module {type(module).__name__} has no parameters: there is nothing to train "
                "(give the torch learner a module with at least one nn.Parameter)"
            )
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.first_weight = next((n for n in self.names if n.endswith("weight")), self.names[0])
        #: for every weight, the index of its parameter tensor (expands per-layer values to all weights)
        self.layer_index = torch.repeat_interleave(torch.arange(len(self.sizes)), torch.tensor(self.sizes)).to(dev)
        w0 = torch.cat([p.detach().reshape(-1) for _, p in named])
        self.buffers0 = {n: b.detach().clone() for n, b in module.named_buffers()}
        self.stochastic = any(isinstance(m, _RANDOM_LAYERS) for m in module.modules())
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
        base: InnerOptimizer = (
            LearnedOptimizer(_on(optimizer, dev))
            if isinstance(optimizer, LSTMOptimizer)
            else make_optimizer(optimizer, lr="lr", momentum="momentum")
        )
        self.optimizer = _PerLayer(base, self.layer_index) if s.get("lr_per_layer") is not None else base
        self.dynamics = InnerDynamics(self.inner_loss, self.optimizer, w0.numel(), steps)
        self.z0 = self.dynamics.init(w0)
        constants = {k: torch.tensor(float(s[k]), device=dev) for k in ("lr", "weight_decay", "momentum")}
        # a Mapping to readers (as the DifferentiableInnerProblem protocol declares it), filled below
        self.constants: Mapping[str, torch.Tensor] = constants
        for name in ("lr_per_layer", "weight_decay_per_layer"):
            if s.get(name) is not None:
                v = torch.as_tensor(np.asarray(s[name], dtype=np.float32), device=dev)
                if v.shape != (len(self.sizes),):
                    raise ValueError(
                        f"{name} has shape {tuple(v.shape)}, expected ({len(self.sizes)},): one value per "
                        f"parameter tensor of the module ({', '.join(self.names)})"
                    )
                constants[name] = v
        if s.get("l2_per_feature") is not None:
            why = _why_no_l2_per_feature(dict(named), self.first_weight, task)
            if why:
                raise ValueError(why)
            constants["l2_per_feature"] = torch.as_tensor(np.asarray(s["l2_per_feature"], dtype=np.float32), device=dev)
        self.loss_network = _on(loss, dev) if isinstance(loss, LossNetwork) else None
        self.loss_fn = loss if callable(loss) and not isinstance(loss, nn.Module) else None
        if isinstance(loss, nn.Module) and not isinstance(loss, LossNetwork):
            self.loss_fn = loss
        self.mse = loss == "mse"
        if (self.loss_network is not None or self.mse) and not task.is_classifier:
            raise ValueError("loss='mse' and learned loss networks are for classifiers (probabilities vs one-hot)")
        if self.loss_network is not None:
            flat = s.get("loss_net")
            flat = self.loss_network.flat() if flat is None else torch.as_tensor(np.asarray(flat, dtype=np.float32))
            constants["loss_net"] = flat.float().to(dev)
        if s.get("example_weights") is not None:
            if self.loss_network is not None or self.mse or self.loss_fn is not None:
                raise ValueError(
                    "example_weights need a per-example loss; not available with loss='mse', a loss network "
                    "or a loss function"
                )
            ex = np.asarray(s["example_weights"], dtype=np.float32)
            if ex.shape != (len(Xt),) and len(Xt):
                raise ValueError(
                    f"example_weights has shape {ex.shape}, expected ({len(Xt)},): one per training example"
                )
            constants["example_weights"] = torch.as_tensor(ex, device=dev)
        self.mutable: tuple[str, ...] = ()
        self._buffers_at: dict[int, dict[str, torch.Tensor]] = {}

    # -- the dry run ----------------------------------------------------------------------------------
    def dry_run(self) -> None:
        """One training forward and loss on the first mini-batch, before any step: a module that fails
        on the input, answers with the wrong number of outputs, or a loss that is not a scalar is
        refused here with the reason. It also finds the buffers the training forward updates."""
        n = min(len(self.Xt), len(self.batches[0]) if self.batches else len(self.Xt))
        X, y = self.Xt[:n], self.yt[:n]
        shape = (n, *self.task.example_shape)
        name = type(self.module).__name__
        buffers = {k: v.clone() for k, v in self.buffers0.items()}
        self.module.train()
        try:
            with torch.no_grad():
                out = functional_call(self.module, {**self.params(self.z0[: self.dynamics.n]), **buffers}, (X,))
        except Exception as exc:
            raise ValueError(
                f"the module {name} failed on a batch of input shape {shape} (one example: "
                f"{self.task.example_shape}): {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"the module {name} returned {type(out).__name__}, not a tensor of outputs")
        want = (n, self.task.n_outputs)
        if tuple(out.shape) != want:
            what = f"{self.task.n_outputs} classes" if self.task.is_classifier else "1 regression target"
            raise ValueError(
                f"the module {name} returned outputs of shape {tuple(out.shape)} on a batch of {n}; expected "
                f"{want} ({what}): make its last layer have {self.task.n_outputs} output(s)"
            )
        if self.loss_fn is not None:
            value = self.loss_fn(out, y)
            if not isinstance(value, torch.Tensor) or value.ndim != 0:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(
                    f"the loss function returned {got}, not a scalar tensor: reduce it over the batch (e.g. .mean())"
                )
        self.mutable = tuple(k for k, v in buffers.items() if not torch.equal(v, self.buffers0[k]))
        self._buffers_at = {0: {k: self.buffers0[k] for k in self.mutable}}

    # -- the functional model -------------------------------------------------------------------------
    def params(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """The flat weights ``w`` as the module's named parameter tensors (views, differentiable)."""
        return {
            n: part.view(shape)
            for n, part, shape in zip(self.names, torch.split(w, self.sizes), self.shapes, strict=True)
        }

    def _buffers(self, at: int | None) -> dict[str, torch.Tensor]:
        """All buffers, the carried ones as they are before step ``at`` (``None``: after the last step)."""
        if not self.mutable:
            return dict(self.buffers0)
        if at is None:
            at = max(self._buffers_at)
        elif at not in self._buffers_at:
            raise RuntimeError(f"step {at} ran before the steps that lead to it (its buffers are unknown)")
        return {**self.buffers0, **self._buffers_at[at]}

    def outputs(self, w: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """The module in eval mode on ``X`` with weights ``w`` and the buffers after the last step."""
        self.module.eval()
        return functional_call(self.module, {**self.params(w), **self._buffers(None)}, (X,))

    def train_outputs(self, w: torch.Tensor, X: torch.Tensor, t: int | None) -> torch.Tensor:
        """The module in train mode on ``X`` at step ``t``: buffers carried, random layers seeded."""
        self.module.train()
        buffers = self._buffers(t)
        carried = {k: buffers[k].clone() for k in self.mutable}
        tensors = {**self.params(w), **buffers, **carried}
        if self.stochastic:  # the generator of this device, seeded for this step, then restored
            gen = (
                torch.cuda.default_generators[self.device.index or 0]
                if self.device.type == "cuda"
                else torch.default_generator
            )
            saved = gen.get_state()
            gen.manual_seed(self.seed * 1_000_003 + (-1 if t is None else t))
            try:
                out = functional_call(self.module, tensors, (X,))
            finally:
                gen.set_state(saved)
        else:
            out = functional_call(self.module, tensors, (X,))
        if t is not None and self.mutable:
            self._buffers_at[t + 1] = {k: v.detach() for k, v in carried.items()}
        return out

    def per_example_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (classification) or squared error (regression) per example."""
        if self.task.is_classifier:
            return nn.functional.cross_entropy(out, y, reduction="none")
        return (out[:, 0] - y) ** 2

    def inner_loss(self, w: torch.Tensor, hp: Mapping[str, torch.Tensor], t: int | None) -> torch.Tensor:
        """The regularised training loss at step ``t`` (its mini-batch; ``None``: all training data)."""
        idx = self.batches[t] if (self.batches is not None and t is not None and t < len(self.batches)) else None
        X, y = (self.Xt, self.yt) if idx is None else (self.Xt[idx], self.yt[idx])
        try:
            out = self.train_outputs(w, X, t)
        except RuntimeError as exc:
            if "running_mean" in str(exc) and "batched" in str(exc):
                raise ValueError(
                    "this evaluation batches training runs with torch.func.vmap (forward-mode hypergradients, "
                    "population evaluation), which cannot update BatchNorm running statistics; use "
                    "mode='reverse', 'checkpoint', 'truncated' or 'implicit', or BatchNorm with "
                    "track_running_stats=False"
                ) from exc
            raise
        if self.loss_network is not None or self.mse:
            probs = torch.softmax(out, dim=1)
            onehot = nn.functional.one_hot(y, self.task.n_outputs).to(probs.dtype)
            loss = (
                self.loss_network.functional(hp["loss_net"], probs, onehot)
                if self.loss_network is not None
                else ((probs - onehot) ** 2).sum(1).mean()
            )
            return self._regularised(loss, w, hp)
        if self.loss_fn is not None:
            return self._regularised(self.loss_fn(out, y), w, hp)
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
        if "weight_decay_per_layer" in hp:  # one weight decay per parameter tensor, instead of the scalar
            loss = loss + (0.5 * hp["weight_decay_per_layer"][self.layer_index] * w * w).sum()
        elif "weight_decay" in hp:  # absent only where it is a constant 0 (evaluate_population): nothing to add
            loss = loss + (0.5 * w * w).sum() * hp["weight_decay"]
        if "l2_per_feature" in hp:
            W = self.params(w)[self.first_weight]
            loss = loss + (0.5 * hp["l2_per_feature"][None, :] * W * W).sum()
        return loss

    def tensor(self, X: np.ndarray) -> torch.Tensor:
        """New inputs, scaled like the training data, on the task's device."""
        return _scaled(_as_inputs(X), self.x_mean, self.x_scale).to(self.device)

    def targets(self, y: np.ndarray) -> torch.Tensor:
        """New targets, encoded like the training targets, on the task's device."""
        if self.task.is_classifier:
            return torch.as_tensor(np.asarray(y), dtype=torch.long, device=self.device)
        return torch.as_tensor(
            (np.asarray(y, dtype=np.float64) - self.y_mean) / self.y_scale, dtype=torch.float32, device=self.device
        )

    def predictor(self, w: torch.Tensor) -> TorchPredictor:
        """The module with weights ``w`` and the final buffers, as a fitted model."""
        with torch.no_grad():
            for p, v in zip(self.module.parameters(), torch.split(w.detach(), self.sizes), strict=True):
                p.copy_(v.view(p.shape))
            named = dict(self.module.named_buffers())
            for k, v in self._buffers(None).items():
                named[k].copy_(v)
        return TorchPredictor(self.module.eval(), self.x_mean, self.x_scale, self.task, self.y_mean, self.y_scale)


_RANDOM_LAYERS = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)

#: constructor arguments the torch learner fills from the task when a module class takes them and
#: neither the settings nor the configuration give them
TASK_ARGUMENTS = ("n_outputs", "n_classes", "n_features", "input_shape", "in_channels")


def _task_value(name: str, task: Task) -> Any:
    shape = task.example_shape
    return {
        "n_outputs": task.n_outputs,
        "n_classes": task.n_outputs,
        "n_features": task.n_features,
        "input_shape": shape,
        "in_channels": shape[0],
    }[name]


def _why_no_l2_per_feature(params: Mapping[str, torch.Tensor], first: str, task: Task) -> str | None:
    """Why ``l2_per_feature`` (one L2 weight per input element, on the first layer's weights) cannot
    apply to this module, or ``None`` where it can."""
    W = params[first]
    if W.ndim == 2 and W.shape[1] == task.n_features:
        return None
    return (
        f"l2_per_feature puts one L2 weight on each of the {task.n_features} input elements' first-layer "
        f"weights, but the module's first weight {first!r} has shape {tuple(W.shape)}, not (units, "
        f"{task.n_features}) (a fully connected first layer on the flattened input); use "
        "weight_decay_per_layer instead"
    )


def constructor_arguments(module: Any) -> tuple[str, ...]:
    """The named constructor arguments of an ``nn.Module`` class (what a search space may set)."""
    if not (isinstance(module, type) and issubclass(module, nn.Module)):
        return ()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(n for n, p in inspect.signature(module.__init__).parameters.items() if n != "self" and p.kind in kinds)


def _on(module: M, device: torch.device) -> M:
    """``module`` itself when it is on ``device`` already, else a copy there (the caller's stays put)."""
    first = next(module.parameters(), None)
    return module if first is None or first.device == device else copy.deepcopy(module).to(device)


ModuleSpec = type[nn.Module] | nn.Module | Callable[[Task, Mapping[str, Any]], nn.Module]

_SETTINGS = ("lr", "weight_decay", "epochs", "batch_size", "optimizer", "momentum", "standardize", "loss", "device")


class TorchLearner(InnerLearner, DifferentiableLearner):
    """Any ``nn.Module``, trained functionally (so it can be differentiated): the ``torch`` learner.

    ``module`` is an ``nn.Module`` class (its named constructor arguments are set from keyword
    arguments here, ``channels=16`` or skorch's spelling ``module__channels=16``, and may be searched
    by name in a search space; ``n_outputs``/``n_classes``/``n_features``/``input_shape``/``in_channels``
    are filled from the task when the class takes them and nothing else sets them), a factory
    ``f(task, config) -> nn.Module`` (``config``: the settings with the trial's values), or an
    instance (deep-copied for every trial, never trained in place; its weights are the start).

    Training: ``epochs`` over seeded mini-batches of ``batch_size`` with ``optimizer`` ``"adam"``,
    ``"sgd"``, ``"momentum"`` or a learned ``LSTMOptimizer``, learning rate ``lr``, L2 weight decay
    ``weight_decay`` on all parameters; ``loss`` ``"default"`` (cross-entropy, or squared error for
    regression), ``"mse"``, a ``LossNetwork``, or a callable ``(outputs, y) -> scalar tensor``.
    ``standardize`` (default: on for flat input, off for images and sequences) scales every input
    element with training-set statistics. The module sees float32 batches of shape ``(B, *shape)``,
    ``shape`` being one example's shape as the data has it, and must return ``(B, n_classes)`` (or
    ``(B, 1)`` for regression); :meth:`DifferentiableTask.dry_run` checks that before any step.

    Tensor hyperparameters a gradient method can move: ``lr_per_layer`` and ``weight_decay_per_layer``
    (one value per parameter tensor, in ``named_parameters`` order, used instead of ``lr`` and
    ``weight_decay``), ``l2_per_feature`` (a fully connected first layer only) and
    ``example_weights``. The built-in ``logistic`` and ``mlp`` learners are this learner with a fixed
    module (subclasses overriding :meth:`build_module`).
    """

    #: hyperparameters a gradient-based outer optimizer can move, with their kinds
    DIFFERENTIABLE: dict[str, str] = {
        "lr": "positive",
        "weight_decay": "positive",
        "momentum": "unit",
        "l2_per_feature": "positive_per_feature",
        "example_weights": "unit_per_example",
        "lr_per_layer": "positive_per_layer",
        "weight_decay_per_layer": "positive_per_layer",
    }
    #: the estimators pass image- and sequence-shaped inputs through to this learner
    accepts_nd = True

    def __init__(
        self,
        module: ModuleSpec | None = None,
        *,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        epochs: int = 100,
        batch_size: int = 256,
        optimizer: str | LSTMOptimizer = "adam",
        momentum: float = 0.9,
        standardize: bool | None = None,
        loss: str | LossNetwork | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "default",
        device: str = "cpu",
        **module_params: Any,
    ) -> None:
        self.module = module
        if module is None and type(self).build_module is TorchLearner.build_module:
            raise ValueError(
                "the torch learner needs module=: an nn.Module class, a factory f(task, config) -> nn.Module, "
                "or an nn.Module instance"
            )
        if module is not None and not (isinstance(module, nn.Module) or callable(module)):
            raise TypeError(
                f"module must be an nn.Module class, a factory f(task, config) or an nn.Module instance, "
                f"got {type(module).__name__}"
            )
        module_params = {k.removeprefix("module__"): v for k, v in module_params.items()}
        is_factory = module is not None and not isinstance(module, (type, nn.Module))
        allowed = constructor_arguments(module)
        unknown = sorted(set(module_params) - set(allowed))
        if unknown and not is_factory:  # a factory reads what it likes from its config
            takes = (
                f"{module.__name__} takes {list(allowed)}" if isinstance(module, type) else "there is no module class"
            )
            raise TypeError(f"unexpected keyword argument(s) {unknown}: not settings of the learner, and {takes}")
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
            **module_params,
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
        if not (isinstance(loss, LossNetwork) or callable(loss) or loss in ("default", "mse")):
            raise ValueError(
                f"loss must be 'default', 'mse', a LossNetwork or a callable (outputs, y) -> scalar, got {loss!r}"
            )
        resolve_device(s.get("device", "cpu"))  # a malformed or absent device fails here, before any work

    def build_module(self, task: Task, s: Mapping[str, Any]) -> nn.Module:
        """The module for one trial from the resolved settings ``s`` (the extension point: override it
        for a fixed architecture, as ``logistic`` and ``mlp`` do)."""
        spec = self.module
        if isinstance(spec, nn.Module):
            return copy.deepcopy(spec)
        if isinstance(spec, type):
            names = constructor_arguments(spec)
            kwargs = {n: s[n] for n in names if n in s}
            kwargs.update({n: _task_value(n, task) for n in names if n in TASK_ARGUMENTS and n not in kwargs})
            return spec(**kwargs)
        if spec is None:
            raise NotImplementedError("no module: give module= or override build_module")
        module = spec(task, dict(s))
        if not isinstance(module, nn.Module):
            raise TypeError(f"the module factory {spec!r} returned {type(module).__name__}, not an nn.Module")
        return module

    def config_space(self, task: Task) -> ConfigurationSpace:
        """Learning rate and weight decay (log scale); pass ``search_space`` to search more (module
        constructor arguments by name, epochs, batch size...)."""
        return ConfigurationSpace(
            space=[
                Float("lr", (1e-4, 1e-1), log=True, default=1e-3),
                Float("weight_decay", (1e-7, 1e-2), log=True, default=1e-4),
            ]
        )

    def param_names(self, task: Task) -> set[str]:
        """Names a search space may use: settings, constructor arguments, tensor hyperparameters."""
        return (
            set(self.settings)
            | set(self.config_space(task).keys())
            | set(constructor_arguments(self.module))
            | {"l2_per_feature", "example_weights", "loss_net", "lr_per_layer", "weight_decay_per_layer"}
        )

    def layer_names(self, task: Task, config: Mapping[str, Any] | None = None) -> list[str]:
        """The module's parameter tensors in ``named_parameters`` order: what ``lr_per_layer`` and
        ``weight_decay_per_layer`` have one value for."""
        return [n for n, _ in self._probe(task, config).named_parameters()]

    def _probe(self, task: Task, config: Mapping[str, Any] | None = None) -> nn.Module:
        s = self.resolve({**dict(self.config_space(task).get_default_configuration()), **dict(config or {})})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return self.build_module(task, s)

    def differentiable_hyperparameters(self, task: Task) -> dict[str, str]:
        """What a gradient method may move (the DifferentiableLearner protocol), with their kinds; with a
        learned loss, its weights ``loss_net`` too (ML3 through the estimator). ``l2_per_feature`` only
        where the module's first layer is fully connected on the flattened input."""
        out = dict(self.DIFFERENTIABLE)
        if isinstance(self.settings["loss"], LossNetwork):
            out["loss_net"] = "vector"
        if callable(self.settings["loss"]) and not isinstance(self.settings["loss"], LossNetwork):
            out.pop("example_weights")
        module = self._probe(task)
        named = dict(module.named_parameters())
        if named:
            first = next((n for n in named if n.endswith("weight")), next(iter(named)))
            if _why_no_l2_per_feature(named, first, task):
                out.pop("l2_per_feature")
        return out

    def why_not_differentiable(self, task: Task, name: str) -> str | None:
        """Why the tensor hyperparameter ``name`` is not available for this module, or ``None``."""
        if name == "l2_per_feature":
            module = self._probe(task)
            named = dict(module.named_parameters())
            first = next((n for n in named if n.endswith("weight")), next(iter(named)))
            return _why_no_l2_per_feature(named, first, task)
        if name == "example_weights" and callable(self.settings["loss"]):
            return "example_weights need a per-example loss; a loss function gives one scalar per batch"
        return None

    def why_not_batched(self, task: Task) -> str | None:
        """Why training cannot run under ``torch.func.vmap`` (forward-mode hypergradients batch their
        tangents so), or ``None``: BatchNorm that tracks running statistics updates them in place."""
        tracking = [n for n, m in self._probe(task).named_modules() if getattr(m, "track_running_stats", False)]
        if not tracking:
            return None
        return (
            f"the module's {tracking} update BatchNorm running statistics in place, which torch.func.vmap "
            "cannot batch; use mode='reverse', 'checkpoint', 'truncated' or 'implicit', or BatchNorm with "
            "track_running_stats=False"
        )

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
        """The settings with ``config``'s values over them (``module__x`` keys read as ``x``), checked."""
        s = {**self.settings, **{k.removeprefix("module__"): v for k, v in config.items()}}
        self._check(s)
        return s

    def steps_per_epoch(self, n: int, s: Mapping[str, Any]) -> int:
        """Inner steps in one epoch over ``n`` examples."""
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
        """The inner problem on (X, y) as a :class:`DifferentiableTask` (``steps`` overrides epochs),
        after a dry run of the module on its first mini-batch."""
        s = self.resolve(config)
        X = _as_inputs(X)
        if steps is None:
            epochs = int(s["epochs"]) if budget is None else max(1, round(int(s["epochs"]) * float(budget)))
            steps = epochs * self.steps_per_epoch(len(X), s)
        standardize = s["standardize"] if s["standardize"] is not None else X.ndim == 2
        x_mean = x_scale = None
        if standardize:
            x_mean = X.mean(axis=0, dtype=np.float64)
            x_scale = X.std(axis=0, dtype=np.float64)
            x_scale = np.where(x_scale > 1e-12, x_scale, 1.0)
        y_mean, y_scale = 0.0, 1.0
        if not task.is_classifier:
            y_mean, y_scale = float(np.mean(y)), float(np.std(y)) or 1.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self.build_module(task, s)
        Xt = _scaled(X, x_mean, x_scale)
        dt = DifferentiableTask(module, Xt, torch.empty(0), task, s, int(steps), seed, x_mean, x_scale, y_mean, y_scale)
        dt.yt = dt.targets(y)
        dt.dry_run()
        return dt

    def check_input(self, X: Any, y: np.ndarray, task: Task, config: Mapping[str, Any] | None = None) -> None:
        """The dry run on a few examples of (X, y) with ``config`` (default: the space's defaults), before
        any trial: raises ValueError with the reason where the module cannot train on this data."""
        n = min(len(y), int(self.settings["batch_size"]), 16)
        cfg = {**dict(self.config_space(task).get_default_configuration()), **dict(config or {})}
        self.differentiable(_as_inputs(X)[:n], np.asarray(y)[:n], cfg, task=task, seed=0, steps=1)

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
        """Train the module on (X, y) with ``config`` (the same unrolled inner dynamics the hypergradients
        differentiate, run without a graph) and return its predictor; ``budget`` scales the epochs."""
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
        """``lr`` and ``weight_decay`` (log scale): the softmax regression's search space."""
        return ConfigurationSpace(
            space=[
                Float("lr", (1e-3, 1.0), log=True, default=1e-2),
                Float("weight_decay", (1e-7, 1e-1), log=True, default=1e-4),
            ]
        )

    def build_module(self, task: Task, s: Mapping[str, Any]) -> nn.Module:
        """One linear layer (on the flattened input where examples are not vectors)."""
        linear = nn.Linear(task.n_features, task.n_outputs)
        return nn.Sequential(nn.Flatten(), linear) if len(task.example_shape) > 1 else linear


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
        """``lr``, ``weight_decay``, ``hidden_units``, ``n_layers`` and ``activation``: the MLP's search space."""
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
        """Linear layers with the activation between them (on the flattened input)."""
        layers: list[nn.Module] = [nn.Flatten()] if len(task.example_shape) > 1 else []
        width = task.n_features
        for _ in range(int(s["n_layers"])):
            layers += [nn.Linear(width, int(s["hidden_units"])), ACTIVATIONS[s["activation"]]()]
            width = int(s["hidden_units"])
        layers.append(nn.Linear(width, task.n_outputs))
        return nn.Sequential(*layers)


_CAPS = frozenset({"differentiable", "multi_fidelity"})


@hookimpl
def bilevel_register_learners() -> list[LearnerSpec]:
    """The ``torch`` learner (any module of yours) and its fixed-module forms ``logistic`` and ``mlp``."""
    return [
        LearnerSpec(
            "torch",
            TorchLearner,
            "any torch nn.Module of yours (module=a class, a factory or an instance); any input shape",
            capabilities=_CAPS,
        ),
        LearnerSpec(
            "logistic",
            LogisticLearner,
            "softmax regression in torch (classification)",
            tasks=frozenset({"classification"}),
            capabilities=_CAPS,
        ),
        LearnerSpec("mlp", MLPLearner, "multilayer perceptron in torch", capabilities=_CAPS),
    ]
