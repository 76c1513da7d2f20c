"""The meta-learner component: a network whose parameters are the outer variables shared across
tasks, and the way it adapts to one task's support set.

A ``MetaLearner`` is an ``nn.Module``. ``forward(support_x, support_y, query_x, n_way)`` adapts to
the support set and returns query logits; it must be differentiable in the module's parameters
(L2G differentiates it at updated parameters through ``torch.func.functional_call``).
``meta_loss`` is what episodic meta-training minimises (default: query cross-entropy); a learner
may compute its gradient another way (hyper-representation uses the hypergradient library).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MetaLoss:
    """``objective`` is what ``backward()`` is called on; ``value`` the query loss it stands for."""

    objective: torch.Tensor
    value: float
    logits: torch.Tensor


class MetaLearner(nn.Module):
    """A meta-learner: a network whose parameters are the outer variables λ shared across tasks, and how it
    adapts to one task's support set (see the module docstring). ``in_channels`` and ``image_size`` describe
    the episodes' images."""

    #: what ``forward`` returns: ``"logits"`` (cross-entropy) or ``"scores"`` in (0, 1) (MSE to one-hot)
    output = "logits"

    def __init__(self, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.in_channels, self.image_size = int(in_channels), int(image_size)

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, n_way: int
    ) -> torch.Tensor:  # pragma: no cover
        """Adapt to the support set (``support_x``, ``support_y`` with labels 0..``n_way``-1) and return one
        row of outputs (logits, or scores for ``output = "scores"``) per query image. Subclasses implement it."""
        raise NotImplementedError

    def loss_from_output(self, out: torch.Tensor, query_y: torch.Tensor) -> torch.Tensor:
        """The query loss of ``out``: cross-entropy for logits, MSE to the one-hot labels for scores."""
        if self.output == "scores":
            return F.mse_loss(out, F.one_hot(query_y, out.shape[1]).to(out.dtype))
        return F.cross_entropy(out, query_y)

    def meta_loss(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        n_way: int,
    ) -> MetaLoss:
        """The episode's :class:`MetaLoss`: by default the query loss of :meth:`forward`'s output (a learner
        may override it to compute its gradient another way)."""
        out: torch.Tensor = self(support_x, support_y, query_x, n_way)
        loss = self.loss_from_output(out, query_y)
        return MetaLoss(loss, float(loss.detach()), out.detach())
