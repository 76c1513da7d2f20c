"""Kinds of outer variables and their unconstrained parametrisations.

Every kind keeps a *raw* leaf tensor that the outer optimizer moves; ``value(raw)`` maps it to the
hyperparameter the inner problem sees, and ``project(raw)`` puts it back into its constraint set
after an outer step.

================  ===============================  =====================================
kind              value                            raw
================  ===============================  =====================================
Positive          exp(raw) (log space)             log(value)
Bounded           low + (high - low)·sigmoid(raw)  logit
PositiveTensor    exp(raw) elementwise             e.g. one L2 weight per feature
BoxTensor         raw, projected onto [low, high]  e.g. one weight per example in [0, 1]
ModuleParams      the module's parameters          a representation, a loss or optimizer net
================  ===============================  =====================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn


class HyperKind(Protocol):
    """The contract of a kind of outer variable (the table above): its initial raw tensor, the value
    the inner problem sees, the projection after an outer step (in place), and the exported value."""

    def raw0(self) -> Tensor:
        """The initial raw (unconstrained) tensor, computed from the kind's initial value.

        Raises ``ValueError`` when the initial value is outside the kind's constraint set."""

    def value(self, raw: Tensor) -> Tensor:
        """The hyperparameter value the inner problem sees for the raw tensor ``raw`` (differentiable in ``raw``)."""

    def project(self, raw: Tensor) -> None:
        """Put ``raw`` back into the kind's constraint set after an outer step, in place."""

    def export(self, raw: Tensor) -> Any:
        """The value of ``raw`` as plain Python/NumPy data, for trials and the refit configuration."""


@dataclass
class Positive:
    """A positive scalar searched in log space: raw = log(value), value = exp(raw).

    ``init`` is the initial value (must be > 0). Use it for learning rates, weight decays and other
    log-scale floats."""

    init: float

    def raw0(self) -> Tensor:
        """log(init) as a float64 scalar; raises ``ValueError`` unless ``init > 0``."""
        if not self.init > 0:
            raise ValueError(f"a positive hyperparameter needs a positive initial value, got {self.init}")
        return torch.tensor(math.log(self.init), dtype=torch.float64)

    def value(self, raw: Tensor) -> Tensor:
        """exp(raw)."""
        return torch.exp(raw)

    def project(self, raw: Tensor) -> None:
        """Clamp raw to [-60, 30] in place, so exp(raw) stays finite and nonzero."""
        raw.clamp_(-60.0, 30.0)

    def export(self, raw: Tensor) -> float:
        """exp(raw) as a float."""
        return float(torch.exp(raw))


@dataclass
class Bounded:
    """A scalar in the open interval (``low``, ``high``) through a sigmoid: value = low + (high - low)·sigmoid(raw).

    ``init`` is the initial value and must lie strictly inside the interval (e.g. a momentum in (0, 1))."""

    init: float
    low: float
    high: float

    def raw0(self) -> Tensor:
        """The logit of ``init`` rescaled to (0, 1); raises ``ValueError`` unless ``low < init < high``."""
        if not self.low < self.init < self.high:
            raise ValueError(f"initial value {self.init} must lie strictly inside ({self.low}, {self.high})")
        u = (self.init - self.low) / (self.high - self.low)
        return torch.tensor(math.log(u / (1 - u)), dtype=torch.float64)

    def value(self, raw: Tensor) -> Tensor:
        """low + (high - low)·sigmoid(raw)."""
        return self.low + (self.high - self.low) * torch.sigmoid(raw)

    def project(self, raw: Tensor) -> None:
        """Clamp raw to [-30, 30] in place, so the sigmoid does not saturate to the bounds."""
        raw.clamp_(-30.0, 30.0)

    def export(self, raw: Tensor) -> float:
        """The value as a float."""
        return float(self.value(raw))


@dataclass
class PositiveTensor:
    """A tensor of positive values searched elementwise in log space (e.g. one L2 weight per feature).

    ``init`` is a float or an array broadcast to ``shape``; every initial value must be > 0."""

    init: npt.ArrayLike  # float or array

    shape: tuple[int, ...] = ()
    labels: tuple[str, ...] = ()  # a name per entry where entries have names (layers), for logging

    def raw0(self) -> Tensor:
        """log of ``init`` broadcast to ``shape`` (float64); raises ``ValueError`` unless all values are > 0."""
        v = torch.as_tensor(np.broadcast_to(np.asarray(self.init, dtype=np.float64), self.shape).copy())
        if not torch.all(v > 0):
            raise ValueError("a positive tensor hyperparameter needs positive initial values")
        return torch.log(v)

    def value(self, raw: Tensor) -> Tensor:
        """exp(raw), elementwise."""
        return torch.exp(raw)

    def project(self, raw: Tensor) -> None:
        """Clamp raw to [-60, 30] in place, elementwise."""
        raw.clamp_(-60.0, 30.0)

    def export(self, raw: Tensor) -> npt.NDArray[Any]:
        """exp(raw) as a NumPy array."""
        return torch.exp(raw).detach().cpu().numpy()


@dataclass
class BoxTensor:
    """Projected (not reparametrised): the gradient step may leave the box, projection returns."""

    init: npt.ArrayLike  # float or array
    shape: tuple[int, ...] = ()
    low: float = 0.0
    high: float = 1.0

    def raw0(self) -> Tensor:
        """``init`` broadcast to ``shape`` (float64), used as is; raises ``ValueError`` unless every value
        lies in [``low``, ``high``]."""
        v = torch.as_tensor(np.broadcast_to(np.asarray(self.init, dtype=np.float64), self.shape).copy())
        if not torch.all((v >= self.low) & (v <= self.high)):
            raise ValueError(f"initial values must lie in [{self.low}, {self.high}]")
        return v

    def value(self, raw: Tensor) -> Tensor:
        """``raw`` itself (no reparametrisation)."""
        return raw

    def project(self, raw: Tensor) -> None:
        """Clamp raw to [``low``, ``high``] in place."""
        raw.clamp_(self.low, self.high)

    def export(self, raw: Tensor) -> npt.NDArray[Any]:
        """``raw`` as a NumPy array."""
        return raw.detach().cpu().numpy()


@dataclass
class ModuleParams:
    """The parameters of a torch module, flattened into one raw vector (a network as λ)."""

    module: nn.Module
    names: list[str] = field(init=False)
    shapes: list[torch.Size] = field(init=False)

    def __post_init__(self) -> None:
        named = [(n, p) for n, p in self.module.named_parameters()]
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]

    def raw0(self) -> Tensor:
        """A copy of the module's current parameters, concatenated into one flat vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]).clone()

    def value(self, raw: Tensor) -> Tensor:
        """``raw`` itself (the flat parameter vector); :meth:`params` splits it by parameter."""
        return raw

    def params(self, flat: Tensor) -> dict[str, Tensor]:
        """Split the flat vector ``flat`` into the module's parameters: name -> tensor of the parameter's shape.

        The tensors are views of ``flat``, so gradients flow back to it (e.g. for ``torch.func.functional_call``)."""
        out: dict[str, Tensor] = {}
        i = 0
        for n, s in zip(self.names, self.shapes, strict=True):
            k = int(np.prod(s)) if len(s) else 1
            out[n] = flat[i : i + k].view(s)
            i += k
        return out

    def project(self, raw: Tensor) -> None:
        """Nothing to do: a network's parameters are unconstrained."""
        pass

    def export(self, raw: Tensor) -> npt.NDArray[Any]:
        """``raw`` as a NumPy array (the flat parameter vector)."""
        return raw.detach().cpu().numpy()


class HyperParameters:
    """A named set of outer variables: raw leaves, their values, projection and export."""

    def __init__(self, kinds: Mapping[str, HyperKind], dtype: torch.dtype = torch.float32) -> None:
        """Create one raw leaf per kind: ``kinds`` maps each name to a kind (:class:`Positive`,
        :class:`Bounded`, :class:`PositiveTensor`, :class:`BoxTensor`, :class:`ModuleParams`); the raw tensors
        start at ``kind.raw0()``, are cast to ``dtype`` and require grad (they are what the outer optimizer moves)."""
        self.kinds = dict(kinds)
        self.dtype = dtype
        self.raw = {k: kind.raw0().to(dtype).requires_grad_(True) for k, kind in self.kinds.items()}

    def values(self, raw: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The hyperparameter values, by name, for the raw tensors ``raw`` (default: the current ones).

        The values keep their graph to the raw leaves, so an outer loss built from them can be differentiated in raw."""
        raw = self.raw if raw is None else raw
        return {k: self.kinds[k].value(raw[k]) for k in self.kinds}

    def chain(self, grads_on_values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """dE/d raw from dE/d values (one backward step through the parametrisation)."""
        names = [k for k in self.kinds if grads_on_values.get(k) is not None]
        if not names:
            return {k: torch.zeros_like(v) for k, v in self.raw.items()}
        with torch.enable_grad():
            vals = self.values()
            got = torch.autograd.grad(
                [vals[k] for k in names],
                [self.raw[k] for k in names],
                [grads_on_values[k].to(vals[k].dtype) for k in names],
                allow_unused=True,
            )
        out = {k: torch.zeros_like(v) for k, v in self.raw.items()}
        for k, g in zip(names, got, strict=True):
            if g is not None:
                out[k] = g
        return out

    @torch.no_grad()
    def project(self) -> None:
        """Put every raw tensor back into its kind's constraint set, in place (after an outer step)."""
        for k, kind in self.kinds.items():
            kind.project(self.raw[k])

    def export(self) -> dict[str, Any]:
        """The current values as plain Python/NumPy data, by name (what a trial records)."""
        return {k: kind.export(self.raw[k].detach()) for k, kind in self.kinds.items()}

    def snapshot(self) -> dict[str, Tensor]:
        """Detached copies of the raw tensors, by name (restore with :meth:`load`)."""
        return {k: v.detach().clone() for k, v in self.raw.items()}

    @torch.no_grad()
    def load(self, snap: Mapping[str, Tensor]) -> None:
        """Copy the raw tensors of ``snap`` (from :meth:`snapshot`) into the current raw leaves, in place."""
        for k, v in snap.items():
            self.raw[k].copy_(v)
