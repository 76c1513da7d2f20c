"""The networks of the source papers: the 4-block convolutional encoder (64 filters, batch norm,
ReLU, 2x2 max-pooling) and the Relation Network's relation module."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(c_in: int, c_out: int, pool: bool = True) -> nn.Sequential:
    """One block: 3x3 convolution from ``c_in`` to ``c_out`` channels, batch norm, ReLU and (if ``pool``)
    2x2 max-pooling."""
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """``depth`` conv blocks of ``width`` filters; the output is flattened (or kept as a map)."""

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 64,
        depth: int = 4,
        flatten: bool = True,
        pool_blocks: int | None = None,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        pool_blocks = depth if pool_blocks is None else pool_blocks
        if image_size is not None and image_size // 2**pool_blocks < 1:
            raise ValueError(
                f"{pool_blocks} pooling blocks shrink {image_size}x{image_size} images to nothing; "
                f"use depth <= {max(int(image_size).bit_length() - 1, 0)} for images this small"
            )
        self.blocks = nn.Sequential(
            *[conv_block(in_channels if i == 0 else width, width, pool=i < pool_blocks) for i in range(depth)]
        )
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The encoding of images ``x`` (n, C, H, W): flat vectors, or feature maps when ``flatten`` is off."""
        z: torch.Tensor = self.blocks(x)
        return z.flatten(1) if self.flatten else z


class RelationModule(nn.Module):
    """g(concat(query map, class map)) -> relation score in (0, 1) (Sung et al. 2018)."""

    def __init__(self, channels: int = 64, hidden: int = 8, spatial: int = 1) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            conv_block(2 * channels, channels, pool=spatial >= 2), conv_block(channels, channels, pool=spatial >= 4)
        )
        out_spatial = max(spatial // 4, 1) if spatial >= 4 else (max(spatial // 2, 1) if spatial >= 2 else spatial)
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * out_spatial * out_spatial, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """The relation scores in (0, 1) of concatenated (query, class) feature-map ``pairs``, one per pair."""
        return torch.sigmoid(self.fc(self.conv(pairs))).squeeze(-1)
