"""Episodic meta-training as a problem of the one search loop.

The outer variables are the meta-learner's parameters (trainable) and buffers (state: batch-norm
statistics); one outer step samples an N-way K-shot episode (with L2G, a second episode of disjoint
classes) from ``(seed, step)`` and returns the meta-loss and its gradient. Every ``val_every`` steps,
and at the last one, the step also measures N-way K-shot accuracy on the meta-validation classes
(the same seeded episodes each time) and reports ``meta_val_accuracy`` and ``val_value`` = 1 − it:
a gradient outer optimizer keeps the best point by it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from automl_bilevel.gradient.outer import DifferentiableProblem, GradientResult
from automl_bilevel.methods.meta.base import MetaLearner
from automl_bilevel.methods.meta.episodes import EpisodeSampler
from automl_bilevel.methods.meta.training import _accuracy, evaluate_episodes, l2g_loss

PARAM, BUFFER = "param:", "buffer:"


class EpisodicProblem(DifferentiableProblem):
    """Episodic meta-training of a :class:`MetaLearner` as a problem of the one search loop.

    Outer variables: the model's trainable parameters (``param:<name>``, moved by gradients) and its buffers
    (``buffer:<name>``, e.g. batch-norm statistics, carried as state). Each outer step samples one episode
    from ``train`` (drawn from ``(seed, step)``) and returns its meta-loss and gradient; with ``l2g`` the
    L2G loss on a second episode of other classes (``l2g_lr``, ``l2g_weight``). Every ``val_every`` steps
    (and at the last of ``n_steps``) it scores ``val_episodes`` episodes of ``val``: ``val_value`` is
    1 − meta-validation accuracy."""

    def __init__(
        self,
        model: MetaLearner,
        train: EpisodeSampler,
        val: EpisodeSampler | None = None,
        *,
        seed: int = 0,
        l2g: bool = False,
        l2g_lr: float = 0.1,
        l2g_weight: float = 1.0,
        val_every: int = 50,
        val_episodes: int = 50,
        n_steps: int | None = None,
    ) -> None:
        self.model, self.train, self.val = model, train, val
        self.seed, self.l2g, self.l2g_lr, self.l2g_weight = int(seed), bool(l2g), float(l2g_lr), float(l2g_weight)
        self.val_every, self.val_episodes, self.n_steps = int(val_every), int(val_episodes), n_steps
        self._trainable = frozenset(PARAM + k for k, p in model.named_parameters() if p.requires_grad)

    def outer_variables(self) -> dict[str, Tensor]:
        """The model's trainable parameters (``param:``) and buffers (``buffer:``), copied."""
        out = {PARAM + k: p.detach().clone() for k, p in self.model.named_parameters() if p.requires_grad}
        out.update({BUFFER + k: b.detach().clone() for k, b in self.model.named_buffers()})
        return out

    @property
    def trainable(self) -> frozenset[str]:
        """The ``param:`` variables of the model's trainable parameters."""
        return self._trainable

    def load(self, outer: Mapping[str, Tensor]) -> MetaLearner:
        """The meta-learner with these outer variables (its own tensors, overwritten in place)."""
        with torch.no_grad():
            for k, p in self.model.named_parameters():
                if PARAM + k in outer:
                    p.copy_(outer[PARAM + k])
            for k, b in self.model.named_buffers():
                b.copy_(outer[BUFFER + k])
        return self.model

    def validates(self, step: int) -> bool:
        """Whether step ``step`` scores the validation episodes (every ``val_every`` steps, and the last)."""
        last = self.n_steps is not None and step == self.n_steps - 1
        return self.val is not None and ((step + 1) % self.val_every == 0 or last)

    def value_and_grad(self, outer: Mapping[str, Tensor], *, step: int) -> GradientResult:
        """The meta-loss of one training episode at ``outer`` and its gradient on the trainable parameters,
        the training (and, when it validates, meta-validation) accuracy, and the updated buffers as new state.
        Raises ``FloatingPointError`` for a non-finite meta-loss."""
        model = self.load(outer)
        metrics: dict[str, float] = {}
        if self.val is not None and self.validates(step):  # the point being evaluated, before this step's update
            acc, _ = evaluate_episodes(model, self.val, self.val_episodes, rng=np.random.default_rng([self.seed, 1]))
            metrics.update(meta_val_accuracy=acc, val_value=1.0 - acc)
        rng = np.random.default_rng([self.seed, 0, step])
        model.train()
        model.zero_grad(set_to_none=True)
        a = self.train.sample(rng=rng)
        with torch.enable_grad():
            if self.l2g:
                b = self.train.sample(exclude=a.classes, rng=rng)
                objective, logits = l2g_loss(model, a, b, self.l2g_lr, self.l2g_weight)
                value = float(objective.detach())
            else:
                ml = model.meta_loss(a.support_x, a.support_y, a.query_x, a.query_y, a.n_way)
                objective, value, logits = ml.objective, ml.value, ml.logits
            if not np.isfinite(value):
                raise FloatingPointError(f"non-finite meta-loss {value}")
            torch.autograd.backward(objective)  # objective.backward(), which torch leaves unannotated
        metrics["train_accuracy"] = _accuracy(logits, a.query_y)
        grads = {
            PARAM + k: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
            for k, p in model.named_parameters()
            if p.requires_grad
        }
        model.zero_grad(set_to_none=True)
        state = {BUFFER + k: b.detach().clone() for k, b in model.named_buffers()}
        return GradientResult(value, grads, metrics, state)
