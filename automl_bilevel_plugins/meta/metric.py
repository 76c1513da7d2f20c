"""Metric-based meta-learners: Prototypical Networks (Snell et al. 2017) and Relation Networks
(Sung et al. 2018), on the 4-block convolutional encoder, trained episodically."""

from __future__ import annotations

import torch

from automl_bilevel import hookimpl
from automl_bilevel.methods.meta.base import MetaLearner
from automl_bilevel.methods.meta.networks import ConvEncoder, EncoderSpec, RelationModule, build_encoder, map_shape
from automl_bilevel.plugin.specs import MetaLearnerSpec


class ProtoNet(MetaLearner):
    """Logits are negative squared Euclidean distances from a query's embedding to each class's
    mean support embedding (its prototype)."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        width: int = 64,
        depth: int = 4,
        encoder: EncoderSpec | None = None,
    ) -> None:
        """``encoder``: your own embedding network instead of the 4-block conv encoder (a module,
        a module class or a factory ``f(in_channels, image_size)``; it must return ``(B, dim)``)."""
        super().__init__(in_channels, image_size)
        self.encoder = (
            ConvEncoder(in_channels, width, depth, image_size=image_size)
            if encoder is None
            else build_encoder(encoder, in_channels, image_size)
        )

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """Logits of the queries: negative squared distances to the class prototypes (support means)."""
        z = self.encoder(torch.cat([support_x, query_x]))
        zs, zq = z[: len(support_x)], z[len(support_x) :]
        protos = torch.zeros(n_way, z.shape[1], dtype=z.dtype, device=z.device).index_add(0, support_y, zs)
        protos = protos / torch.bincount(support_y, minlength=n_way).clamp_min(1).unsqueeze(1).to(z.dtype)
        # squared distances written out: twice differentiable (L2G), unlike cdist's backward
        return -((zq * zq).sum(1, keepdim=True) - 2 * zq @ protos.T + (protos * protos).sum(1))


class RelationNet(MetaLearner):
    """A relation module scores (query, class) feature-map pairs in (0, 1); trained with MSE to the
    one-hot labels. Class maps are the sums of the support maps (K-shot)."""

    output = "scores"

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        width: int = 64,
        depth: int = 4,
        hidden: int = 8,
        encoder: EncoderSpec | None = None,
    ) -> None:
        """``encoder``: your own network instead of the conv encoder (a module, a module class or a
        factory ``f(in_channels, image_size)``); it must return square feature maps ``(B, C, h, h)``,
        which the relation module compares."""
        super().__init__(in_channels, image_size)
        if encoder is not None:
            self.encoder = build_encoder(encoder, in_channels, image_size, maps=True)
            channels, spatial = map_shape(self.encoder, in_channels, image_size)
            self.relation = RelationModule(channels, hidden, spatial=spatial)
            return
        pool_blocks = min(2, depth)
        self.encoder = ConvEncoder(
            in_channels, width, depth, flatten=False, pool_blocks=pool_blocks, image_size=image_size
        )
        spatial = image_size
        for _ in range(pool_blocks):
            spatial //= 2
        self.relation = RelationModule(width, hidden, spatial=max(spatial, 1))

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """Logits of the queries: the relation module's scores against each class's summed support embedding."""
        z = self.encoder(torch.cat([support_x, query_x]))
        zs, zq = z[: len(support_x)], z[len(support_x) :]
        cls = torch.zeros((n_way,) + zs.shape[1:], dtype=z.dtype, device=z.device).index_add(0, support_y, zs)
        nq = len(zq)
        pairs = torch.cat(
            [zq.unsqueeze(1).expand(nq, n_way, *zq.shape[1:]), cls.unsqueeze(0).expand(nq, n_way, *cls.shape[1:])],
            dim=2,
        )
        return self.relation(pairs.reshape(nq * n_way, -1, *zq.shape[2:])).reshape(nq, n_way)


@hookimpl
def bilevel_register_meta_learners() -> list[MetaLearnerSpec]:
    """The ``protonet`` and ``relationnet`` meta-learners."""
    return [
        MetaLearnerSpec("protonet", ProtoNet, "Prototypical Networks on a 4-block conv encoder"),
        MetaLearnerSpec("relationnet", RelationNet, "Relation Networks on a 4-block conv encoder"),
    ]
