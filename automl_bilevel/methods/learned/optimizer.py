"""A learned optimizer (L2O-DM, Andrychowicz et al. 2016) with flatness-aware regularizers
(Yang et al., AISTATS 2023, arXiv 2302.11085).

- :class:`LSTMOptimizer`: a coordinatewise two-layer LSTM (20 units) over log-and-sign
  preprocessed gradients; one small network shared by every coordinate of the optimizee.
- :class:`LearnedOptimizer`: the same network as a functional inner optimizer of
  :mod:`automl_bilevel.gradient` (the LSTM states are the optimizer's slots), so any torch inner
  learner can train with it (``optimizer=LSTMOptimizer(...)``) next to SGD and Adam.
- Regularizers of the optimizee's loss at the weights an unroll ends on: Hutchinson's estimate of
  the Hessian trace, the top Hessian eigenvalue by power iteration on Hessian-vector products, and
  the local-entropy term of Entropy-SGD estimated with SGLD steps. Each is differentiable in the
  weights, hence in the optimizer's parameters through the unroll.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy.typing as npt
import torch
from torch import Tensor, nn

from automl_bilevel.gradient.outer import DifferentiableProblem, GradientResult
from automl_bilevel.methods.learned.storage import read_component, save_component
from automl_bilevel.run.engine import run_search
from automl_bilevel.run.lifecycle import Run
from automl_bilevel.run.runtime import resolve_device

if TYPE_CHECKING:
    from automl_bilevel.gradient import InnerOptimizer
    from automl_bilevel.run.checkpoint import Checkpoint

Loss = Callable[[Tensor], Tensor]


def preprocess(g: Tensor, p: float = 10.0) -> Tensor:
    """Andrychowicz et al.'s gradient preprocessing: (log|g|/p, sign g) if |g| >= e^-p, else (-1, e^p g)."""
    a = g.abs()
    big = a >= math.exp(-p)
    first = torch.where(big, torch.log(a.clamp_min(1e-30)) / p, torch.full_like(g, -1.0))
    second = torch.where(big, torch.sign(g), math.exp(p) * g)
    return torch.stack([first, second], dim=-1)


class LSTMOptimizer(nn.Module):
    """Coordinatewise LSTM optimizer: ``step(g, state) -> (update, state)`` with w ← w + update."""

    def __init__(
        self, hidden: int = 20, layers: int = 2, p: float = 10.0, output_scale: float = 0.1, seed: int = 0
    ) -> None:
        super().__init__()
        if int(hidden) < 1 or int(layers) < 1:
            raise ValueError(f"hidden and layers must be >= 1, got {hidden}, {layers}")
        self.hidden, self.layers, self.p, self.output_scale = int(hidden), int(layers), float(p), float(output_scale)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.cells = nn.ModuleList([nn.LSTMCell(2 if i == 0 else hidden, hidden) for i in range(layers)])
            self.out = nn.Linear(hidden, 1)
            with torch.no_grad():
                self.out.weight.mul_(0.1)
                self.out.bias.zero_()

    @property
    def n_slots(self) -> int:
        """The size of one coordinate's LSTM state: hidden and cell vectors of every layer, ``2 * layers * hidden``."""
        return 2 * self.layers * self.hidden

    def settings(self) -> dict[str, int | float]:
        """The constructor settings (``hidden``, ``layers``, ``p``, ``output_scale``), to rebuild the network."""
        return {"hidden": self.hidden, "layers": self.layers, "p": self.p, "output_scale": self.output_scale}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Weights and settings in one file (``torch.save``); :meth:`load` reads it back."""
        save_component("learned_optimizer", self.settings(), self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LSTMOptimizer:
        """A network read from a file written by :meth:`save` (built with the saved settings, then its weights)."""
        blob = read_component(path, "learned_optimizer")
        net = cls(**blob["settings"])
        net.load_state_dict(blob["state_dict"])
        return net

    def zero_state(
        self, n: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> Tensor:
        """The LSTM's zero state for ``n`` coordinates (on the network's device unless ``device``)."""
        device = next(self.parameters()).device if device is None else device
        return torch.zeros(n, self.n_slots, dtype=dtype, device=device)

    def step(self, g: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """``g``: (n,) gradient; ``state``: (n, n_slots). Returns the update (n,) and the new state."""
        x = preprocess(g, self.p).to(state.dtype)
        hs = state.view(len(g), self.layers, 2, self.hidden)
        new: list[Tensor] = []
        for i, cell in enumerate(self.cells):
            h, c = cell(x, (hs[:, i, 0], hs[:, i, 1]))
            new += [h, c]
            x = h
        out: Tensor = self.out(x)
        return self.output_scale * out.squeeze(-1), torch.cat(new, dim=1)


class LearnedOptimizer:
    """An :class:`LSTMOptimizer` in the functional-optimizer protocol of ``automl_bilevel.gradient``
    (``n_slots`` vectors of the weights' size, ``update(w, slots, g, hp, t)``)."""

    def __init__(self, net: LSTMOptimizer) -> None:
        self.net = net
        self.n_slots = net.n_slots

    def update(
        self, w: Tensor, slots: tuple[Tensor, ...], g: Tensor, hp: Mapping[str, Tensor], t: int
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One step of the LSTM on the inner gradient ``g``: w + update, and the new LSTM state as slots
        (zero state when ``slots`` is empty). ``hp`` and ``t`` are not used. Raises ``ValueError`` when the
        network is on another device than ``w``."""
        where = next(self.net.parameters()).device  # the network must be where the weights are
        if where != w.device:
            raise ValueError(
                f"the learned optimizer is on {where} but the weights are on {w.device}; "
                f"move it with .to({str(w.device)!r})"
            )
        state = torch.stack(slots, dim=1) if slots else self.net.zero_state(len(w), w.dtype, w.device)
        delta, new = self.net.step(g, state)
        return w + delta.to(w.dtype), tuple(new.to(w.dtype).unbind(1))


# -- flatness-aware regularizers -------------------------------------------------------------------
def _hvp(loss: Loss, w: Tensor, v: Tensor, create_graph: bool = True) -> Tensor:
    with torch.enable_grad():
        (g,) = torch.autograd.grad(loss(w), w, create_graph=True)
        (hv,) = torch.autograd.grad(g, w, grad_outputs=v, create_graph=create_graph)
    return hv


def _leaf(w: Tensor) -> Tensor:
    return w if w.requires_grad else w.detach().requires_grad_(True)


def hessian_trace(loss: Loss, w: Tensor, samples: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """Hutchinson's estimate E[vᵀHv], v Rademacher; differentiable in ``w``."""
    w = _leaf(w)
    total = w.new_zeros(())
    for _ in range(int(samples)):
        v = (torch.randint(0, 2, w.shape, generator=generator) * 2 - 1).to(w.dtype)
        total = total + (v * _hvp(loss, w, v)).sum()
    return total / int(samples)


def top_eigenvalue(loss: Loss, w: Tensor, iters: int = 20, generator: torch.Generator | None = None) -> Tensor:
    """The largest-magnitude Hessian eigenvalue by power iteration on Hessian-vector products; the
    last Rayleigh quotient vᵀHv keeps its graph (differentiable in ``w``)."""
    w = _leaf(w)
    v: Tensor = torch.randn(w.shape, generator=generator).to(w.dtype)  # declared: Tensor.norm is unannotated
    v = v / v.norm()
    for _ in range(int(iters)):
        hv = _hvp(loss, w, v, create_graph=False).detach()
        norm = hv.norm()
        if not torch.isfinite(norm) or norm == 0:
            break
        v = hv / norm
    return (v * _hvp(loss, w, v)).sum()


def local_entropy(
    loss: Loss,
    w: Tensor,
    gamma: float = 0.03,
    steps: int = 10,
    lr: float = 0.01,
    noise: float = 1e-4,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Entropy-SGD's local-entropy term: SGLD steps w' ← w' − lr(∇f(w') + γ(w' − w)) + √(2 lr)·noise·ε
    from w estimate μ = E[w']; the returned (γ/2)‖w − μ‖² has gradient γ(w − μ), Entropy-SGD's
    gradient of the negative local entropy."""
    w0 = w.detach()
    wp, mean = w0.clone(), torch.zeros_like(w0)
    for k in range(int(steps)):
        wp = wp.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(loss(wp), wp)
        eps = torch.randn(w0.shape, generator=generator).to(w0.dtype)
        wp = wp.detach() - lr * (g + gamma * (wp.detach() - w0)) + math.sqrt(2 * lr) * noise * eps
        mean = mean + (wp - mean) / (k + 1)
    return 0.5 * gamma * ((w - mean) ** 2).sum()


#: each is called as ``regularizer(loss, w, generator=..., **options)``
REGULARIZERS: dict[str, Callable[..., Tensor]] = {
    "trace": hessian_trace,
    "eigenvalue": top_eigenvalue,
    "entropy": local_entropy,
}


# -- optimizees and meta-training ------------------------------------------------------------------
class MLPOptimizee:
    """A classifier MLP on a flat weight vector: ``loss(w, t)`` is the cross-entropy of mini-batch ``t``.
    The default is the L2O-DM optimizee: 784-20-10 with sigmoid units. ``device`` (see
    :func:`automl_bilevel.run.runtime.resolve_device`): where the data and the weights live (moved once);
    the mini-batch sequence is drawn on the CPU, so it is the same on every device."""

    def __init__(
        self,
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        hidden: tuple[int, ...] = (20,),
        n_classes: int = 10,
        activation: str = "sigmoid",
        batch_size: int = 128,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        activations = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}
        if activation not in activations:
            raise ValueError(f"activation must be one of {sorted(activations)}, got {activation!r}")
        self.X, self.y = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
        if self.X.ndim != 2 or len(self.X) != len(self.y):
            raise ValueError(
                f"X must be (n, d) with one label per row; got {tuple(self.X.shape)} and {len(self.y)} labels"
            )
        self.widths = [self.X.shape[1], *hidden, n_classes]
        self.act = activations[activation]
        self.batch_size, self.gen = int(batch_size), torch.Generator().manual_seed(seed)
        shapes = [(o, i) for i, o in zip(self.widths[:-1], self.widths[1:], strict=True)]
        parts = []
        for o, i in shapes:  # torch.nn.Linear's default initialisation
            bound = 1 / math.sqrt(i)
            parts += [
                (torch.rand(o * i, generator=self.gen) * 2 - 1) * bound,
                (torch.rand(o, generator=self.gen) * 2 - 1) * bound,
            ]
        self.device = resolve_device(device)
        self.X, self.y = self.X.to(self.device), self.y.to(self.device)
        self.w0 = torch.cat(parts).to(self.device)
        self.shapes = shapes

    def forward(self, w: Tensor, X: Tensor) -> Tensor:
        """The logits of ``X`` under the flat weight vector ``w``."""
        start, h = 0, X
        for k, (o, i) in enumerate(self.shapes):
            W = w[start : start + o * i].view(o, i)
            b = w[start + o * i : start + o * i + o]
            start += o * i + o
            h = h @ W.T + b
            if k < len(self.shapes) - 1:
                h = self.act(h)
        return h

    def batch(self, t: int | None) -> tuple[Tensor, Tensor]:
        """Mini-batch ``t``: ``batch_size`` rows drawn with the optimizee's generator; all the data for ``t=None``."""
        if t is None:
            return self.X, self.y
        idx = torch.randint(0, len(self.y), (self.batch_size,), generator=self.gen).to(self.device)
        return self.X[idx], self.y[idx]

    def loss(self, w: Tensor, t: int | None = None) -> Tensor:
        """The cross-entropy at flat weights ``w`` on mini-batch ``t`` (all the data for ``t=None``)."""
        X, y = self.batch(t)
        return nn.functional.cross_entropy(self.forward(w, X), y)

    def accuracy(self, w: Tensor, X: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """The accuracy of the MLP with flat weights ``w`` on (``X``, ``y``)."""
        with torch.no_grad():
            pred = self.forward(w, torch.as_tensor(X, dtype=torch.float32, device=self.device)).argmax(1)
        return float((pred.cpu() == torch.as_tensor(y)).float().mean())


def train_optimizee(
    optimizer: InnerOptimizer, optimizee: MLPOptimizee, steps: int, diverge: float = 1e3
) -> tuple[Tensor, list[float]]:
    """Train with a functional optimizer (``LearnedOptimizer``, ``hypergrad.SGD``/``Adam``); returns
    the final weights and the mini-batch losses. Raises FloatingPointError if training diverges (a
    non-finite state, or a loss above ``diverge`` times the first one)."""
    from automl_bilevel.gradient import InnerDynamics

    losses: list[float] = []

    def inner_loss(w: Tensor, hp: Mapping[str, Tensor], t: int | None) -> Tensor:
        value = optimizee.loss(w, t)
        losses.append(float(value.detach()))
        return value

    dyn = InnerDynamics(inner_loss, optimizer, optimizee.w0.numel(), steps)
    z = dyn.init(optimizee.w0.clone())
    hp = {"lr": torch.tensor(0.0, device=optimizee.w0.device)}  # SGD/Adam read their own lr if given as floats
    for t in range(steps):
        z = dyn.step(t, z, hp)
        if not torch.isfinite(z).all() or not losses[-1] <= diverge * max(losses[0], 1e-3):
            raise FloatingPointError(f"the optimizee diverged at step {t} (loss {losses[-1]:.3g})")
    return dyn.weights(z), losses


class OptimizerMetaTraining(DifferentiableProblem):
    """Meta-training a learned optimizer as a problem of the one search loop (truncated BPTT, L2O-DM).

    Trainable outer variables: the optimizer network's parameters. State carried from step to step:
    the current optimizee's weights ``w``, the LSTM state ``h``, its step ``t``, its index ``task`` and
    initial loss. Each outer step advances the optimizee by one unroll of ``unroll`` steps and returns
    the mean optimizee loss along it plus ``alpha`` times the regularizer at the weights it ends on; an
    optimizee is replaced after ``horizon`` steps (optimizee ``k`` is ``optimizees(seed + k)``, its
    mini-batches and the regularizer's probes are drawn from ``(seed, step)``). A diverging optimizer
    (a non-finite meta-loss, or one above ``diverge`` times the optimizee's initial loss) fails the
    step; after a rejected step the next one starts a fresh optimizee.
    """

    def __init__(
        self,
        net: LSTMOptimizer,
        optimizees: Callable[[int], MLPOptimizee],
        *,
        unroll: int = 20,
        horizon: int = 100,
        regularizer: str | None = None,
        alpha: float = 0.0,
        reg_options: Mapping[str, Any] | None = None,
        diverge: float = 1e3,
        seed: int = 0,
    ) -> None:
        if regularizer is not None and regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {sorted(REGULARIZERS)} or None, got {regularizer!r}")
        if int(unroll) < 1 or int(horizon) < 1:
            raise ValueError(f"unroll and horizon must be >= 1, got {unroll}, {horizon}")
        self.net, self.optimizees, self.unroll, self.horizon = net, optimizees, int(unroll), int(horizon)
        self.regularizer, self.alpha, self.reg_options = regularizer, float(alpha), dict(reg_options or {})
        self.diverge, self.seed = float(diverge), int(seed)
        self._names = [k for k, _ in net.named_parameters()]
        self._cache: dict[int, MLPOptimizee] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the cached optimizee (its data); it is rebuilt where the problem is evaluated."""
        return {**self.__dict__, "_cache": {}}

    @property
    def trainable(self) -> frozenset[str]:
        """The network's parameters (``param:<name>``); the optimizee state variables are not trained."""
        return frozenset("param:" + k for k in self._names)

    def outer_variables(self) -> dict[str, Tensor]:
        """The network's parameters (``param:<name>``) and the initial optimizee state: no weights or LSTM
        state yet, ``t = horizon`` so the first step starts a fresh optimizee."""
        out = {"param:" + k: p.detach().clone() for k, p in self.net.named_parameters()}
        out.update(
            w=torch.zeros(0),
            h=torch.zeros(0),
            t=torch.tensor(self.horizon),
            task=torch.tensor(-1),
            initial=torch.tensor(math.nan),
        )
        return out

    def load(self, outer: Mapping[str, Tensor]) -> LSTMOptimizer:
        """Copy the ``param:`` variables of ``outer`` into the network, in place, and return it."""
        with torch.no_grad():
            for k, p in self.net.named_parameters():
                p.copy_(outer["param:" + k])
        return self.net

    def optimizee(self, index: int) -> MLPOptimizee:
        """Optimizee ``index`` (``optimizees(seed + index)``); only the latest one is cached."""
        if index not in self._cache:
            self._cache = {index: self.optimizees(self.seed + index)}  # one at a time: they hold data
        return self._cache[index]

    def after_rejection(self, outer: Mapping[str, Tensor], step: int) -> dict[str, Tensor]:
        """Set ``t`` to ``horizon``, so the step after a rejected one starts a fresh optimizee."""
        return {"t": torch.tensor(self.horizon)}  # the next step starts a fresh optimizee

    def value_and_grad(self, outer: Mapping[str, Tensor], *, step: int) -> GradientResult:
        """One unroll of ``unroll`` optimizee steps from the carried state (or a fresh optimizee): the mean
        optimizee loss along it (the value), the gradient of it plus ``alpha`` times the regularizer on the
        network's parameters, the regularizer as a metric, and the optimizee state it ends on. Raises
        ``FloatingPointError`` when the optimizee diverges."""
        net = self.load(outer)
        if int(outer["t"]) >= self.horizon:
            index = step
            task = self.optimizee(index)
            w, state, t = task.w0.clone(), net.zero_state(task.w0.numel()), 0
            with torch.no_grad():
                initial = float(task.loss(w, None))
        else:
            index, t, initial = int(outer["task"]), int(outer["t"]), float(outer["initial"])
            task = self.optimizee(index)
            w, state = outer["w"].clone(), outer["h"].clone()
        task.gen.manual_seed(hash((self.seed, step)) & 0x7FFFFFFF)
        gen = torch.Generator().manual_seed(hash((self.seed, step, 1)) & 0x7FFFFFFF)
        net.zero_grad(set_to_none=True)
        w = w.detach().requires_grad_(True)
        total = w.new_zeros(())
        with torch.enable_grad():
            for _ in range(self.unroll):
                f = task.loss(w, t)
                (g,) = torch.autograd.grad(f, w, create_graph=False)
                delta, state = net.step(g.detach(), state)  # second-order terms dropped, as in L2O-DM
                w = w + delta
                total = total + task.loss(w, t)
                t += 1
            meta_loss = total / self.unroll
            reg = w.new_zeros(())
            if self.regularizer is not None and self.alpha > 0:
                reg = REGULARIZERS[self.regularizer](lambda v: task.loss(v, None), w, generator=gen, **self.reg_options)
            objective = meta_loss + self.alpha * reg
            if not torch.isfinite(objective) or not float(meta_loss.detach()) <= self.diverge * max(initial, 1e-3):
                raise FloatingPointError(
                    f"meta-loss {float(meta_loss):.3g} (initial loss {initial:.3g}): the optimizee diverged"
                )
            torch.autograd.backward(objective)  # objective.backward(), which torch leaves unannotated
        grads = {
            "param:" + k: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
            for k, p in net.named_parameters()
        }
        net.zero_grad(set_to_none=True)
        new_state = {
            "w": w.detach(),
            "h": state.detach(),
            "t": torch.tensor(t),
            "task": torch.tensor(index),
            "initial": torch.tensor(initial),
        }
        return GradientResult(float(meta_loss.detach()), grads, {"regularizer": float(reg.detach())}, new_state)


def meta_train_optimizer(
    net: LSTMOptimizer,
    optimizees: Callable[[int], MLPOptimizee],
    *,
    meta_iters: int = 100,
    unroll: int = 20,
    horizon: int = 100,
    meta_lr: float = 1e-3,
    regularizer: str | None = None,
    alpha: float = 0.0,
    reg_options: Mapping[str, Any] | None = None,
    clip: float = 1.0,
    diverge: float = 1e3,
    seed: int = 0,
    run: Run | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """Meta-train ``net`` in place through the one search loop (see :class:`OptimizerMetaTraining`):
    Adam at ``meta_lr`` with gradient clipping; a diverging step is rejected with its reason and the
    next one starts a fresh optimizee. With ``run`` (an :class:`automl_bilevel.run.lifecycle.Run`) the steps
    are tracked; with ``checkpoint`` (a :class:`automl_bilevel.run.checkpoint.Checkpoint`) a later call
    continues exactly. Returns ``{"meta_loss", "regularizer", "rejected", "trials"}``."""
    from automl_bilevel.plugin.registry import get_registry

    problem = OptimizerMetaTraining(
        net,
        optimizees,
        unroll=unroll,
        horizon=horizon,
        regularizer=regularizer,
        alpha=alpha,
        reg_options=reg_options,
        diverge=diverge,
        seed=seed,
    )
    opt, _ = get_registry().make(
        "optimizer", "hypergradient", {"outer_lr": meta_lr, "clip": clip, "backoff": 1.0, "max_backoffs": 10**9}
    )
    result = run_search(problem, opt, n_iter=int(meta_iters), seed=seed, run=run, checkpoint=checkpoint)
    problem.load(opt.vars)
    ok = [t for t in result.trials if t.ok]
    return {
        "meta_loss": [t.value for t in ok],
        "regularizer": [t.metrics["regularizer"] for t in ok],
        "rejected": [(t.number, t.error) for t in result.trials if not t.ok],
        "trials": result.trials,
    }
