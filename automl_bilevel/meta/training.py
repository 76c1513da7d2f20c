"""Episodic meta-training, with or without L2G, and N-way K-shot evaluation.

L2G (Lee et al., arXiv 1908.01457): each meta-step samples a task A and a task B of disjoint
classes, takes an inner gradient step θ' = θ − α ∇θ L_A(θ) on A's metric loss, and minimises
L_A(θ) + β · L_B(θ'), differentiating L_B through the inner step (second order, through
``torch.func.functional_call``), so the representation learns to generalise to classes it has not
just been trained on.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.func import functional_call

from .base import MetaLearner
from .episodes import Episode, EpisodeSampler


@dataclass
class MetaStep:
    iteration: int
    loss: float
    accuracy: float
    seconds: float
    val_accuracy: float | None = None
    error: str | None = None


@dataclass
class MetaTrainResult:
    steps: list[MetaStep] = field(default_factory=list)
    best_val_accuracy: float = -math.inf
    best_iteration: int = -1
    best_state: dict | None = None
    stop_reason: str = "meta_iters"
    skipped: int = 0


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    return float((out.argmax(1) == y).float().mean())


def l2g_loss(model: MetaLearner, a: Episode, b: Episode, inner_lr: float, weight: float = 1.0):
    """L_A(θ) + weight · L_B(θ − inner_lr ∇L_A(θ)), differentiable in θ (second order)."""
    params = {k: v for k, v in model.named_parameters() if v.requires_grad}
    buffers = dict(model.named_buffers())
    out_a = functional_call(model, (params, buffers), (a.support_x, a.support_y, a.query_x, a.n_way))
    loss_a = model.loss_from_output(out_a, a.query_y)
    grads = torch.autograd.grad(loss_a, list(params.values()), create_graph=True, allow_unused=True)
    fast = {k: (p - inner_lr * g if g is not None else p) for (k, p), g in zip(params.items(), grads)}
    out_b = functional_call(model, (fast, buffers), (b.support_x, b.support_y, b.query_x, b.n_way))
    loss_b = model.loss_from_output(out_b, b.query_y)
    return loss_a + weight * loss_b, out_a.detach()


@torch.no_grad()
def evaluate_episodes(model: MetaLearner, sampler: EpisodeSampler, n_episodes: int) -> tuple[float, float]:
    """Mean query accuracy over ``n_episodes`` and its 95% confidence half-width (1.96 σ / √n)."""
    was = model.training
    model.eval()
    accs = []
    for _ in range(int(n_episodes)):
        ep = sampler.sample()
        accs.append(_accuracy(model(ep.support_x, ep.support_y, ep.query_x, ep.n_way), ep.query_y))
    model.train(was)
    accs = np.asarray(accs)
    half = 1.96 * accs.std(ddof=1) / math.sqrt(len(accs)) if len(accs) > 1 else math.nan
    return float(accs.mean()), float(half)


def meta_train(model: MetaLearner, train: EpisodeSampler, val: EpisodeSampler | None, *, meta_iters: int,
               meta_lr: float = 1e-3, l2g: bool = False, l2g_lr: float = 0.1, l2g_weight: float = 1.0,
               val_every: int = 50, val_episodes: int = 50, timeout: float | None = None,
               on_step: Callable[[MetaStep], None] | None = None) -> MetaTrainResult:
    """Adam on the model's parameters over sampled episodes; keeps the state with the best
    meta-validation accuracy. A step with a non-finite loss is skipped (recorded with its error);
    Ctrl-C stops training and keeps the best state so far (``stop_reason == "interrupted"``)."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=meta_lr)
    res, t0 = MetaTrainResult(), time.perf_counter()
    model.train()

    def validate(it: int) -> float | None:
        if val is None:
            return None
        acc, _ = evaluate_episodes(model, val, val_episodes)
        if acc > res.best_val_accuracy:
            res.best_val_accuracy, res.best_iteration = acc, it
            res.best_state = copy.deepcopy(model.state_dict())
        return acc

    try:
        for it in range(int(meta_iters)):
            if timeout is not None and time.perf_counter() - t0 >= timeout:
                res.stop_reason = "timeout"
                break
            ts = time.perf_counter()
            a = train.sample()
            if l2g:
                b = train.sample(exclude=a.classes)
                loss, out = l2g_loss(model, a, b, l2g_lr, l2g_weight)
                objective, value = loss, float(loss.detach())
            else:
                ml = model.meta_loss(a.support_x, a.support_y, a.query_x, a.query_y, a.n_way)
                objective, value, out = ml.objective, ml.value, ml.logits
            error = None
            if not math.isfinite(value):
                error = f"non-finite meta-loss {value}: step skipped"
                res.skipped += 1
            else:
                opt.zero_grad(set_to_none=True)
                objective.backward()
                opt.step()
            step = MetaStep(it, value, _accuracy(out, a.query_y), time.perf_counter() - ts, error=error)
            if val is not None and ((it + 1) % val_every == 0):
                step.val_accuracy = validate(it)
            res.steps.append(step)
            if on_step is not None:
                on_step(step)
    except KeyboardInterrupt:
        res.stop_reason = "interrupted"
    if val is not None and res.steps and res.steps[-1].val_accuracy is None and res.stop_reason != "interrupted":
        res.steps[-1].val_accuracy = validate(res.steps[-1].iteration)
    if res.best_state is None:
        res.best_state = copy.deepcopy(model.state_dict())
        res.best_iteration = res.steps[-1].iteration if res.steps else -1
    return res
