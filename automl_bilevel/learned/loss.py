"""A meta-loss network (Hai & Liu, arXiv 2103.08249): the classifier's predicted probabilities and
the one-hot labels enter as two channels over the class axis, a small 1-d convolutional block
integrates them per class, and the sum over classes averaged over examples is the scalar loss.

It replaces cross-entropy as the inner objective of any torch learner (``loss=LossNetwork(...)``),
is evolved by the ``es`` optimizer (its weights are the learner's vector hyperparameter
``loss_net``) or trained by hypergradients through the inner steps (ML3, Bechtle et al. 2021).
"""
from __future__ import annotations

import os
from typing import Mapping

import torch
from torch import nn
from torch.func import functional_call


class LossNetworkError(ValueError):
    """The loss network cannot score this input or returned something that is not a finite scalar."""


class LossNetwork(nn.Module):
    def __init__(self, n_classes: int, hidden: int = 16, kernel_size: int = 3, init: str = "informed",
                 gain: float = 10.0, seed: int | None = 0):
        super().__init__()
        if int(n_classes) < 2 or int(hidden) < 1 or int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"need n_classes >= 2, hidden >= 1 and an odd kernel_size, got {n_classes}, {hidden}, "
                             f"{kernel_size}")
        self.n_classes, self.hidden, self.kernel_size = int(n_classes), int(hidden), int(kernel_size)
        if init not in ("informed", "random"):
            raise ValueError(f"init must be 'informed' or 'random', got {init!r}")
        self.init, self.gain = init, float(gain)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Conv1d(2, hidden, 1), nn.ReLU(),
                nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2), nn.ReLU(),
                nn.Conv1d(hidden, 1, 1),
            )
            if init == "informed":
                self._informed_init(float(gain), kernel_size)

    @torch.no_grad()
    def _informed_init(self, gain: float, kernel_size: int) -> None:
        """Start as ``gain · Σ_c relu(y_c − p_c) = gain · (1 − p_true)``: a loss that already trains a
        classifier (a randomly initialised network gives almost no gradient, leaving an evolution
        strategy nothing to select on). Unit 0 carries it; the other units start random but with
        zero output weight, so evolution or ML3 can bring them in."""
        first, middle, last = self.net[0], self.net[2], self.net[4]
        first.weight[0] = torch.tensor([[-1.0], [1.0]])
        first.bias[0] = 0.0
        middle.weight[0] = 0.0
        middle.weight[0, 0, kernel_size // 2] = 1.0
        middle.bias[0] = 0.0
        last.weight.zero_()
        last.weight[0, 0, 0] = gain
        last.bias.zero_()

    def forward(self, probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        if probs.ndim != 2 or probs.shape != onehot.shape:
            raise LossNetworkError(f"probabilities {tuple(probs.shape)} and one-hot labels {tuple(onehot.shape)} "
                                   "must both be (examples, classes)")
        if probs.shape[1] != self.n_classes:
            raise LossNetworkError(f"the task has {probs.shape[1]} classes; this loss network expects {self.n_classes}")
        # summed over classes, averaged over examples: the scale of cross-entropy's gradient
        return self.net(torch.stack([probs, onehot], dim=1)).sum(dim=(1, 2)).mean()

    def functional(self, flat: torch.Tensor, probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """The loss with the weights given as one flat vector (differentiable in ``flat``)."""
        n = sum(p.numel() for p in self.parameters())
        if flat.ndim != 1 or flat.numel() != n:
            raise LossNetworkError(f"expected {n} loss-network weights, got {flat.numel()}")
        params, start = {}, 0
        for name, p in self.named_parameters():
            params[name] = flat[start:start + p.numel()].view(p.shape)
            start += p.numel()
        out = functional_call(self, params, (probs, onehot))
        if out.ndim != 0:
            raise LossNetworkError(f"the loss network returned shape {tuple(out.shape)}, not a scalar")
        return out

    def flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()])

    def settings(self) -> Mapping[str, int]:
        return {"n_classes": self.n_classes, "hidden": self.hidden, "kernel_size": self.kernel_size,
                "init": self.init, "gain": self.gain}


def save_loss_network(net: LossNetwork, path: str | os.PathLike) -> None:
    """Weights and shape in one file (``torch.save``); :func:`load_loss_network` reads it back."""
    torch.save({"settings": dict(net.settings()), "state_dict": net.state_dict()}, path)


def load_loss_network(path: str | os.PathLike) -> LossNetwork:
    blob = torch.load(path, weights_only=True)
    net = LossNetwork(**blob["settings"], seed=None)
    net.load_state_dict(blob["state_dict"])
    return net
