"""The pieces of episodic meta-training: the L2G objective and N-way K-shot evaluation.

Meta-training itself is an outer problem of the one search loop
(:class:`automl_bilevel.methods.meta.problem.EpisodicProblem`), moved by a gradient outer optimizer.

L2G (Lee et al., arXiv 1908.01457): each meta-step samples a task A and a task B of disjoint
classes, takes an inner gradient step θ' = θ − α ∇θ L_A(θ) on A's metric loss, and minimises
L_A(θ) + β · L_B(θ'), differentiating L_B through the inner step (second order, through
``torch.func.functional_call``), so the representation learns to generalise to classes it has not
just been trained on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.func import functional_call

from automl_bilevel.core.deadline import check_deadline
from automl_bilevel.methods.meta.base import MetaLearner
from automl_bilevel.methods.meta.episodes import Episode, EpisodeSampler


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    return float((out.argmax(1) == y).float().mean())


def l2g_loss(
    model: MetaLearner, a: Episode, b: Episode, inner_lr: float, weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_A(θ) + weight · L_B(θ − inner_lr ∇L_A(θ)), differentiable in θ (second order); also the
    query output on A (detached)."""
    params: dict[str, torch.Tensor] = {k: v for k, v in model.named_parameters() if v.requires_grad}
    buffers = dict(model.named_buffers())
    out_a: torch.Tensor = functional_call(model, (params, buffers), (a.support_x, a.support_y, a.query_x, a.n_way))
    loss_a = model.loss_from_output(out_a, a.query_y)
    grads = torch.autograd.grad(loss_a, list(params.values()), create_graph=True, allow_unused=True)
    fast = {k: (p - inner_lr * g if g is not None else p) for (k, p), g in zip(params.items(), grads, strict=True)}
    out_b: torch.Tensor = functional_call(model, (fast, buffers), (b.support_x, b.support_y, b.query_x, b.n_way))
    loss_b = model.loss_from_output(out_b, b.query_y)
    return loss_a + weight * loss_b, out_a.detach()


@torch.no_grad()
def evaluate_episodes(
    model: MetaLearner, sampler: EpisodeSampler, n_episodes: int, rng: np.random.Generator | None = None
) -> tuple[float, float]:
    """Mean query accuracy over ``n_episodes`` (drawn with ``rng``, else the sampler's generator) and
    its 95% confidence half-width (1.96 σ / √n)."""
    was = model.training
    model.eval()
    accs: list[float] = []
    for _ in range(int(n_episodes)):
        check_deadline()
        ep = sampler.sample(rng=rng)
        accs.append(_accuracy(model(ep.support_x, ep.support_y, ep.query_x, ep.n_way), ep.query_y))
    model.train(was)
    arr = np.asarray(accs)
    half = 1.96 * arr.std(ddof=1) / math.sqrt(len(arr)) if len(arr) > 1 else math.nan
    return float(arr.mean()), float(half)
