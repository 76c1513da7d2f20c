"""Hyper-representation (Franceschi et al. 2018): the outer variable is a convolutional representation
shared by all tasks; the inner variable is a linear softmax head, zero-initialised per episode and
trained ``inner_steps`` steps of gradient descent on the support set (with a learned inner learning
rate). Features are L2-normalised, so the inner problem's curvature (and a safe inner learning rate)
does not drift as the representation changes. The outer loss is the query cross-entropy; its
gradient with respect to the representation and the learning rate comes from
:mod:`automl_bilevel.gradient` (the library behind the ``hypergradient`` optimizer; ``mode`` =
reverse, checkpoint, forward or implicit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from automl_bilevel import hookimpl
from automl_bilevel.core.validation import POSITIVE, Integral, Interval, StrOptions, validate_params
from automl_bilevel.gradient import MODES, SGD, InnerDynamics, hypergradient
from automl_bilevel.methods.meta.base import MetaLearner, MetaLoss
from automl_bilevel.methods.meta.networks import ConvEncoder, EncoderSpec, build_encoder
from automl_bilevel.plugin.specs import MetaLearnerSpec


class HyperRepresentation(MetaLearner):
    """Hyper-representation (Franceschi et al. 2018): a representation shared by all tasks (the outer
    variables) under a linear head trained per task by a few gradient steps on the support set (the inner
    variables), differentiated through those steps by any hypergradient ``mode`` (reverse, checkpoint, truncated,
    forward, implicit)."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        width: int = 64,
        depth: int = 4,
        inner_steps: int = 10,
        inner_lr: float = 1.0,
        learn_inner_lr: bool = True,
        mode: str = "reverse",
        encoder: EncoderSpec | None = None,
    ) -> None:
        """``encoder``: your own representation network instead of the conv encoder (a module, a module
        class or a factory ``f(in_channels, image_size)``; it must return ``(B, dim)`` features)."""
        super().__init__(in_channels, image_size)
        validate_params(
            type(self).__name__,
            {
                "inner_steps": [Interval(Integral, 1, None, closed="left")],
                "inner_lr": [POSITIVE],
                "learn_inner_lr": ["boolean"],
                "mode": [StrOptions(set(MODES))],
            },
            {"inner_steps": inner_steps, "inner_lr": inner_lr, "learn_inner_lr": learn_inner_lr, "mode": mode},
        )
        self.encoder = (
            ConvEncoder(in_channels, width, depth, image_size=image_size)
            if encoder is None
            else build_encoder(encoder, in_channels, image_size)
        )
        self.inner_steps, self.mode = int(inner_steps), mode
        self.log_lr = nn.Parameter(torch.tensor(math.log(inner_lr)), requires_grad=bool(learn_inner_lr))

    @staticmethod
    def head(w: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """The linear head with flat weights ``w = (W, b)`` on features ``f``."""
        n_way = w.numel() // (f.shape[1] + 1)
        W, b = w[: n_way * f.shape[1]].reshape(n_way, f.shape[1]), w[n_way * f.shape[1] :]
        return f @ W.T + b

    # the inner problem, in the hypergradient library's terms: w = flat (W, b) of the linear head
    def _dynamics(self, n_way: int, dim: int, support_y: torch.Tensor) -> InnerDynamics:
        def inner_loss(w: torch.Tensor, hp: Mapping[str, torch.Tensor], t: int | None) -> torch.Tensor:
            return F.cross_entropy(self.head(w, hp["support"]), support_y)

        return InnerDynamics(inner_loss, SGD(lr="lr"), n_way * (dim + 1), self.inner_steps)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised embedding of a batch of images."""
        return F.normalize(self.encoder(x), dim=1)

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """Plain autograd through the unrolled inner steps (used at test time and by L2G)."""
        z = self.features(torch.cat([support_x, query_x]))
        fs, fq = z[: len(support_x)], z[len(support_x) :]
        dyn = self._dynamics(n_way, z.shape[1], support_y)
        create = torch.is_grad_enabled()  # keep the graph only when someone differentiates this
        lr = self.log_lr.exp() if create else self.log_lr.exp().detach()
        hp = {"support": fs if create else fs.detach(), "lr": lr}
        w = torch.zeros(dyn.n, dtype=z.dtype, device=z.device, requires_grad=True)
        with torch.enable_grad():
            for _ in range(self.inner_steps):
                (g,) = torch.autograd.grad(dyn.inner_loss(w, hp, None), w, create_graph=create)
                w = w - lr * g
                if not create:
                    w = w.detach().requires_grad_(True)
        return self.head(w, fq)

    def meta_loss(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        n_way: int,
    ) -> MetaLoss:
        """The query loss after the head's inner steps on the support set (what meta-training minimises)."""
        z = self.features(torch.cat([support_x, query_x]))
        fs, fq = z[: len(support_x)], z[len(support_x) :]
        lr = self.log_lr.exp()
        dyn = self._dynamics(n_way, z.shape[1], support_y)

        def outer_loss(w: torch.Tensor, hp: Mapping[str, torch.Tensor]) -> torch.Tensor:
            return F.cross_entropy(self.head(w, hp["query"]), query_y)

        hp = {"support": fs, "query": fq, "lr": lr}
        res = hypergradient(
            dyn,
            outer_loss,
            dyn.init(torch.zeros(dyn.n, dtype=z.dtype, device=z.device)),
            hp,
            mode=self.mode,
            alpha=float(lr.detach()),
        )
        # a surrogate whose gradient in the encoder and log_lr is the hypergradient (chain rule)
        # (a tensor, not sum()'s start value 0: hp is never empty)
        surrogate = cast(torch.Tensor, sum((hp[k] * res.grads[k].to(hp[k].dtype)).sum() for k in hp))
        with torch.no_grad():
            logits = self.head(dyn.weights(res.z), fq)
        return MetaLoss(surrogate, float(res.value), logits)


@hookimpl
def bilevel_register_meta_learners() -> list[MetaLearnerSpec]:
    """The ``hyperrep`` meta-learner."""
    return [
        MetaLearnerSpec(
            "hyperrep",
            HyperRepresentation,
            "hyper-representation: a conv representation under a per-task linear head trained by GD",
        )
    ]
