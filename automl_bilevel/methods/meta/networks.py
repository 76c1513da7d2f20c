"""The networks of the source papers: the 4-block convolutional encoder (64 filters, batch norm,
ReLU, 2x2 max-pooling) and the Relation Network's relation module."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from automl_bilevel.core.validation import Integral, Interval, validate_params


def conv_block(c_in: int, c_out: int, pool: bool = True) -> nn.Sequential:
    """One block: 3x3 convolution from ``c_in`` to ``c_out`` channels, batch norm, ReLU and (if ``pool``)
    2x2 max-pooling."""
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


#: the encoder's settings (every meta-learner's ``width`` and ``depth``), checked before any work
ENCODER_CONSTRAINTS: dict[str, list[Any]] = {
    "in_channels": [Interval(Integral, 1, None, closed="left")],
    "width": [Interval(Integral, 1, None, closed="left")],
    "depth": [Interval(Integral, 1, None, closed="left")],
    "pool_blocks": [Interval(Integral, 0, None, closed="left"), None],
}


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
        validate_params(
            "ConvEncoder",
            ENCODER_CONSTRAINTS,
            {"in_channels": in_channels, "width": width, "depth": depth, "pool_blocks": pool_blocks},
        )
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


#: what ``encoder=`` may be: a module (deep-copied), a module class (called with the arguments among
#: ``in_channels`` and ``image_size`` it takes), or a factory ``f(in_channels, image_size) -> nn.Module``
EncoderSpec = nn.Module | type[nn.Module] | Callable[[int, int], nn.Module]


def build_encoder(encoder: EncoderSpec, in_channels: int, image_size: int, *, maps: bool = False) -> nn.Module:
    """A user's encoder for a meta-learner, checked on a batch of two zero images of the task's shape
    before any meta-training: it must return ``(2, dim)`` embeddings (``maps=True``, the Relation
    Network: ``(2, channels, h, w)`` feature maps). Raises ValueError with the reason otherwise."""
    if isinstance(encoder, nn.Module):
        module = copy.deepcopy(encoder)
    elif isinstance(encoder, type) and issubclass(encoder, nn.Module):
        takes = inspect.signature(encoder.__init__).parameters
        given = {"in_channels": in_channels, "image_size": image_size}
        module = encoder(**{k: v for k, v in given.items() if k in takes})
    elif callable(encoder):
        built: object = cast(Callable[[int, int], object], encoder)(in_channels, image_size)
        if not isinstance(built, nn.Module):
            raise TypeError(
                f"the encoder factory {encoder!r} returned {type(built).__name__}, not an nn.Module "
                "(a factory is called as f(in_channels, image_size))"
            )
        module = built
    else:
        raise TypeError(
            f"encoder must be an nn.Module, an nn.Module class or a factory f(in_channels, image_size), "
            f"got {type(encoder).__name__}"
        )
    if next(module.parameters(), None) is None:
        raise ValueError(f"the encoder {type(module).__name__} has no parameters: there is nothing to meta-train")
    shape = (2, in_channels, image_size, image_size)
    was_training = module.training
    try:
        with torch.no_grad():
            out = module.eval()(torch.zeros(shape))
    except Exception as exc:
        raise ValueError(
            f"the encoder {type(module).__name__} failed on images of shape {shape}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        module.train(was_training)
    want = "(2, channels, height, width) feature maps" if maps else "(2, dim) embeddings"
    if not isinstance(out, torch.Tensor) or out.shape[0] != 2 or (out.ndim != 4 if maps else out.ndim != 2):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the encoder {type(module).__name__} returned {got} on {shape}; expected {want}")
    return module


def map_shape(encoder: nn.Module, in_channels: int, image_size: int) -> tuple[int, int]:
    """(channels, spatial size) of an encoder's feature maps on square images of ``image_size``."""
    with torch.no_grad():
        was_training = encoder.training
        out = encoder.eval()(torch.zeros(2, in_channels, image_size, image_size))
        encoder.train(was_training)
    return int(out.shape[1]), int(out.shape[2])
