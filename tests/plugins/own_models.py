"""Small modules of a user's own, shared by the own-model tests (8x8 digits as (N, 1, 8, 8) images)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn


class TinyCNN(nn.Module):
    """A conv layer, BatchNorm, dropout and a linear head: every kind of state a plain loop carries."""

    def __init__(self, channels: int = 4, n_classes: int = 10, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(channels * 16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.head(self.drop(h.flatten(1)))


class PlainCNN(nn.Module):
    """A conv net without buffers or random layers (smooth in its hyperparameters)."""

    def __init__(self, channels: int = 3, n_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.head = nn.Linear(channels * 64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).flatten(1))


def digits_images(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """8x8 digits as float32 images (N, 1, 8, 8) in [0, 1], and their labels."""
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return X[:n], d.target[:n]
