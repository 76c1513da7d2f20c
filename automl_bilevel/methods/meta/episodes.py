"""Tasks for meta-learning: labelled images, class splits, rotation augmentation, episodes.

An episode is an N-way K-shot task: N classes drawn from a pool, K support and Q query examples per
class, support and query disjoint, labels re-indexed 0..N-1 in the episode.

Class splits (meta-train / meta-validation / meta-test) are made on the *base* classes, and
rotation augmentation (each base class at 0/90/180/270° becomes four classes, as for Omniglot) is
applied to each split afterwards, so no rotated copy of a held-out class is ever seen in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch


class EpisodeError(ValueError):
    """The data cannot give the requested episodes (too few classes or examples, bad shapes)."""


def as_images(X: npt.ArrayLike, image_shape: Sequence[int] | None = None) -> npt.NDArray[np.float32]:
    """Images as float32 (n, C, H, W): from (n, H, W), (n, C, H, W), or flat (n, d) with ``image_shape``.

    uint8 input is scaled to [0, 1]."""
    if isinstance(X, (list, tuple)):
        shapes = {np.shape(x) for x in X}
        if len(shapes) > 1:
            raise EpisodeError(f"images of inconsistent shape: {sorted(shapes)[:4]}")
    try:
        arr = np.asarray(X)
    except ValueError as exc:  # ragged nested sequences
        raise EpisodeError(f"images of inconsistent shape: {exc}") from None
    if arr.dtype == object:
        raise EpisodeError("images of inconsistent shape (an object array)")
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    arr = arr.astype(np.float32) / scale
    if image_shape is not None:
        image_shape = tuple(int(s) for s in image_shape)
        if arr.ndim != 2 or arr.shape[1] != int(np.prod(image_shape)):
            raise EpisodeError(
                f"image_shape {image_shape} needs flat rows of {int(np.prod(image_shape))} values, "
                f"got an array of shape {arr.shape}"
            )
        arr = arr.reshape((len(arr),) + image_shape)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise EpisodeError(f"images must be (n, H, W), (n, C, H, W) or flat with image_shape; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise EpisodeError("images contain NaN or infinity")
    return arr


def class_split(
    labels: npt.ArrayLike, parts: tuple[float, ...] | tuple[int, ...], seed: int = 0
) -> list[npt.NDArray[Any]]:
    """Split the distinct classes into disjoint groups: fractions summing to 1, or class counts."""
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    order = rng.permutation(classes)
    if all(isinstance(p, (int, np.integer)) for p in parts):
        counts = [int(p) for p in parts]
        if sum(counts) > len(classes):
            raise EpisodeError(f"asked for {sum(counts)} classes ({counts}) but the data has {len(classes)}")
    else:
        if abs(sum(parts) - 1.0) > 1e-6:
            raise EpisodeError(f"class fractions must sum to 1, got {parts}")
        counts = [int(round(p * len(classes))) for p in parts]
        counts[-1] = len(classes) - sum(counts[:-1])
    out: list[npt.NDArray[Any]] = []
    start = 0
    for c in counts:
        out.append(np.sort(order[start : start + c]))
        start += c
    return out


def rotate_classes(
    images: npt.NDArray[Any], labels: npt.NDArray[Any], rotations: tuple[int, ...] = (0, 90, 180, 270)
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Each class at each rotation becomes a new class: label ``base * len(rotations) + r``."""
    if any(r % 90 for r in rotations):
        raise EpisodeError(f"rotations must be multiples of 90 degrees, got {rotations}")
    xs, ys = [], []
    for i, r in enumerate(rotations):
        xs.append(np.rot90(images, k=r // 90, axes=(-2, -1)))
        ys.append(labels * len(rotations) + i)
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


@dataclass
class Episode:
    """One N-way K-shot episode: support and query images with labels 0..N-1, and ``classes``, the
    original labels of those N classes."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: npt.NDArray[Any]  # the original labels of classes 0..N-1

    @property
    def n_way(self) -> int:
        """N, the number of classes in the episode."""
        return len(self.classes)


class EpisodeSampler:
    """N-way K-shot episodes with Q queries per class from labelled images (n, C, H, W)."""

    def __init__(
        self,
        images: npt.ArrayLike,
        labels: npt.ArrayLike,
        n_way: int,
        k_shot: int,
        q_queries: int,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        self.images = torch.as_tensor(as_images(images), device=device)  # moved once; episodes are views of it
        labels = np.asarray(labels)
        if len(labels) != len(self.images):
            raise EpisodeError(f"{len(self.images)} images but {len(labels)} labels")
        for name, v in (("n_way", n_way), ("k_shot", k_shot), ("q_queries", q_queries)):
            if int(v) < 1:
                raise EpisodeError(f"{name} must be >= 1, got {v}")
        self.n_way, self.k_shot, self.q_queries = int(n_way), int(k_shot), int(q_queries)
        self.classes, counts = np.unique(labels, return_counts=True)
        if self.n_way > len(self.classes):
            raise EpisodeError(
                f"{self.n_way}-way episodes need at least {self.n_way} classes; the data has {len(self.classes)}"
            )
        need = self.k_shot + self.q_queries
        small = self.classes[counts < need]
        if len(small):
            raise EpisodeError(
                f"class(es) {small[:5].tolist()} have fewer than K + Q = {need} examples "
                f"(smallest: {int(counts.min())})"
            )
        self.index = {c: np.flatnonzero(labels == c) for c in self.classes}
        self.rng = np.random.default_rng(seed)

    def sample(self, exclude: npt.ArrayLike | None = None, rng: np.random.Generator | None = None) -> Episode:
        """One episode; ``rng`` (else the sampler's own generator) makes every draw, so an episode can be
        a pure function of a seed (``np.random.default_rng([seed, step])``)."""
        rng = self.rng if rng is None else rng
        pool = self.classes if exclude is None else np.setdiff1d(self.classes, exclude)
        if len(pool) < self.n_way:
            raise EpisodeError(f"only {len(pool)} classes left to draw {self.n_way} from")
        classes = rng.choice(pool, self.n_way, replace=False)
        s_parts, q_parts = [], []
        for c in classes:
            pick = rng.choice(self.index[c], self.k_shot + self.q_queries, replace=False)
            s_parts.append(pick[: self.k_shot])
            q_parts.append(pick[self.k_shot :])
        s_idx, q_idx = torch.as_tensor(np.concatenate(s_parts)), torch.as_tensor(np.concatenate(q_parts))
        dev = self.images.device
        ys = torch.arange(self.n_way, device=dev).repeat_interleave(self.k_shot)
        yq = torch.arange(self.n_way, device=dev).repeat_interleave(self.q_queries)
        return Episode(self.images[s_idx], ys, self.images[q_idx], yq, classes)
