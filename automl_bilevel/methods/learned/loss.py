"""A meta-loss network (Hai & Liu, arXiv 2103.08249): the classifier's predicted probabilities and
the one-hot labels enter as two channels over the class axis, a small 1-d convolutional block
integrates them per class, and the sum over classes averaged over examples is the scalar loss.

It replaces cross-entropy as the inner objective of any torch learner (``loss=LossNetwork(...)``),
is evolved by the ``es`` optimizer (its weights are the learner's vector hyperparameter
``loss_net``) or trained by hypergradients through the inner steps (ML3, Bechtle et al. 2021).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from automl_bilevel.methods.learned.storage import read_component, save_component


class LossNetworkError(ValueError):
    """The loss network cannot score this input or returned something that is not a finite scalar."""


#: knots of the cross-entropy start (hinges at these probabilities) and the steepest slope it copies
CE_KNOTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)
CE_MIN_P = 0.02
INITS = ("cross_entropy", "one_minus_p", "random")
#: sharpness of the softplus units: a hinge smoothed over about 1/β in probability
SOFTPLUS_BETA = 20.0
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"softplus": lambda: nn.Softplus(beta=SOFTPLUS_BETA), "relu": nn.ReLU}


class LossNetwork(nn.Module):
    """``init`` picks the start: ``"cross_entropy"`` (default) is a piecewise-linear −log p_true, so
    the network begins as the loss it is meant to beat and search starts from a classifier that
    trains; ``"one_minus_p"`` is gain·(1 − p_true); ``"random"`` is PyTorch's default init (as in the
    paper, but it gives almost no training signal, leaving an evolution strategy nothing to select
    on). ``gain`` scales the output, i.e. the inner step size."""

    def __init__(
        self,
        n_classes: int,
        hidden: int = 16,
        kernel_size: int = 3,
        init: str = "cross_entropy",
        gain: float = 1.0,
        activation: str = "softplus",
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if int(n_classes) < 2 or int(hidden) < 1 or int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(
                f"need n_classes >= 2, hidden >= 1 and an odd kernel_size, got {n_classes}, {hidden}, {kernel_size}"
            )
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if init == "cross_entropy" and int(hidden) < len(CE_KNOTS):
            raise ValueError(f"the cross-entropy start needs hidden >= {len(CE_KNOTS)}, got {hidden}")
        self.n_classes, self.hidden, self.kernel_size = int(n_classes), int(hidden), int(kernel_size)
        self.init, self.gain, self.activation = init, float(gain), activation
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Conv1d(2, hidden, 1),
                ACTIVATIONS[activation](),
                nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2),
                ACTIVATIONS[activation](),
                nn.Conv1d(hidden, 1, 1),
            )
            if init == "cross_entropy":
                self._hinge_init(CE_KNOTS, _cross_entropy_weights(CE_KNOTS, activation))
            elif init == "one_minus_p":
                self._hinge_init((1.0,), (1.0,))

    @torch.no_grad()
    def _hinge_init(self, knots: Sequence[float], weights: Sequence[float]) -> None:
        """Make the network ``gain · Σ_k w_k · act(t_k − p_true)`` (up to a constant). Unit k of the
        first layer is act(t_k − 2 + 2y − p): act(t_k − p) on the true class, about 0 on the others
        (the argument is at most −1); the middle layer passes it through (centre tap, bias 1 keeps a
        softplus in its linear part); the remaining units start random with zero output weight, so
        evolution or ML3 can bring them in."""
        first, middle, last = (cast(nn.Conv1d, self.net[i]) for i in (0, 2, 4))
        assert first.bias is not None and middle.bias is not None and last.bias is not None  # built with biases
        last.weight.zero_()
        last.bias.zero_()
        for k, (t, w) in enumerate(zip(knots, weights, strict=True)):
            first.weight[k] = torch.tensor([[-1.0], [2.0]])
            first.bias[k] = float(t) - 2.0
            middle.weight[k] = 0.0
            middle.weight[k, k, self.kernel_size // 2] = 1.0
            middle.bias[k] = 1.0
            last.weight[0, k, 0] = self.gain * float(w)
        perfect = torch.eye(self.n_classes)
        last.bias.fill_(-float(self(perfect, perfect)) / self.n_classes)  # a perfect prediction costs 0

    def forward(self, probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """The learned loss of predicted class probabilities ``probs`` against one-hot labels ``onehot`` (both
        (examples, classes)): summed over classes, averaged over examples. Raises ``LossNetworkError`` for
        mismatched shapes or another number of classes."""
        if probs.ndim != 2 or probs.shape != onehot.shape:
            raise LossNetworkError(
                f"probabilities {tuple(probs.shape)} and one-hot labels {tuple(onehot.shape)} "
                "must both be (examples, classes)"
            )
        if probs.shape[1] != self.n_classes:
            raise LossNetworkError(f"the task has {probs.shape[1]} classes; this loss network expects {self.n_classes}")
        # summed over classes, averaged over examples: the scale of cross-entropy's gradient
        scores: torch.Tensor = self.net(torch.stack([probs, onehot], dim=1))
        return scores.sum(dim=(1, 2)).mean()

    def functional(self, flat: torch.Tensor, probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """The loss with the weights given as one flat vector (differentiable in ``flat``)."""
        n = sum(p.numel() for p in self.parameters())
        if flat.ndim != 1 or flat.numel() != n:
            raise LossNetworkError(f"expected {n} loss-network weights, got {flat.numel()}")
        params: dict[str, torch.Tensor] = {}
        start = 0
        for name, p in self.named_parameters():
            params[name] = flat[start : start + p.numel()].view(p.shape)
            start += p.numel()
        out: torch.Tensor = functional_call(self, params, (probs, onehot))
        if out.ndim != 0:
            raise LossNetworkError(f"the loss network returned shape {tuple(out.shape)}, not a scalar")
        return out

    def flat(self) -> torch.Tensor:
        """The network's weights as one flat (detached) vector, in the order :meth:`functional` takes them."""
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()])

    def settings(self) -> Mapping[str, int | float | str]:
        """The constructor settings (classes, width, kernel, init, gain, activation), to rebuild the network."""
        return {
            "n_classes": self.n_classes,
            "hidden": self.hidden,
            "kernel_size": self.kernel_size,
            "init": self.init,
            "gain": self.gain,
            "activation": self.activation,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Weights and settings in one file (``torch.save``); :meth:`load` reads it back."""
        save_component("loss_network", self.settings(), self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LossNetwork:
        """A loss network read from a file written by :meth:`save` (built with the saved settings, then its weights)."""
        blob = read_component(path, "loss_network")
        settings = dict(blob["settings"])
        if settings.get("init") == "cross_entropy":  # the weights are restored; skip the start's fit
            settings["init"] = "random"
        net = cls(**settings, seed=None)
        net.init = blob["settings"]["init"]
        net.load_state_dict(blob["state_dict"])
        return net


def _cross_entropy_weights(knots: Sequence[float], activation: str) -> list[float]:
    """Non-negative hinge weights w_k whose Σ_k w_k·act(t_k − p) has the slope of −log p (capped
    at 1/CE_MIN_P) over p in [0, 1]: least squares on the slopes (``scipy.optimize.nnls``)."""
    from scipy.optimize import nnls

    p = np.linspace(0.0, 1.0, 401)
    t = np.asarray(knots, dtype=float)
    if activation == "softplus":
        slope = 1.0 / (1.0 + np.exp(-SOFTPLUS_BETA * (t[None, :] - p[:, None])))
    else:
        slope = (t[None, :] > p[:, None]).astype(float)
    weights, _ = nnls(slope, 1.0 / np.maximum(p, CE_MIN_P))
    return [float(v) for v in weights]


def save_loss_network(net: LossNetwork, path: str | os.PathLike[str]) -> None:
    """Weights and shape in one file (``torch.save``); :func:`load_loss_network` reads it back."""
    net.save(path)


def load_loss_network(path: str | os.PathLike[str]) -> LossNetwork:
    """A loss network read from a file written by :func:`save_loss_network` (see :meth:`LossNetwork.load`)."""
    return LossNetwork.load(path)
