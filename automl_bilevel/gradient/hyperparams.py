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

    def raw0(self) -> Tensor: ...

    def value(self, raw: Tensor) -> Tensor: ...

    def project(self, raw: Tensor) -> None: ...

    def export(self, raw: Tensor) -> Any: ...


@dataclass
class Positive:
    init: float

    def raw0(self) -> Tensor:
        if not self.init > 0:
            raise ValueError(f"a positive hyperparameter needs a positive initial value, got {self.init}")
        return torch.tensor(math.log(self.init), dtype=torch.float64)

    def value(self, raw: Tensor) -> Tensor:
        return torch.exp(raw)

    def project(self, raw: Tensor) -> None:
        raw.clamp_(-60.0, 30.0)

    def export(self, raw: Tensor) -> float:
        return float(torch.exp(raw))


@dataclass
class Bounded:
    init: float
    low: float
    high: float

    def raw0(self) -> Tensor:
        if not self.low < self.init < self.high:
            raise ValueError(f"initial value {self.init} must lie strictly inside ({self.low}, {self.high})")
        u = (self.init - self.low) / (self.high - self.low)
        return torch.tensor(math.log(u / (1 - u)), dtype=torch.float64)

    def value(self, raw: Tensor) -> Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(raw)

    def project(self, raw: Tensor) -> None:
        raw.clamp_(-30.0, 30.0)

    def export(self, raw: Tensor) -> float:
        return float(self.value(raw))


@dataclass
class PositiveTensor:
    init: npt.ArrayLike  # float or array

    shape: tuple[int, ...] = ()
    labels: tuple[str, ...] = ()  # a name per entry where entries have names (layers), for logging

    def raw0(self) -> Tensor:
        v = torch.as_tensor(np.broadcast_to(np.asarray(self.init, dtype=np.float64), self.shape).copy())
        if not torch.all(v > 0):
            raise ValueError("a positive tensor hyperparameter needs positive initial values")
        return torch.log(v)

    def value(self, raw: Tensor) -> Tensor:
        return torch.exp(raw)

    def project(self, raw: Tensor) -> None:
        raw.clamp_(-60.0, 30.0)

    def export(self, raw: Tensor) -> npt.NDArray[Any]:
        return torch.exp(raw).detach().cpu().numpy()


@dataclass
class BoxTensor:
    """Projected (not reparametrised): the gradient step may leave the box, projection returns."""

    init: npt.ArrayLike  # float or array
    shape: tuple[int, ...] = ()
    low: float = 0.0
    high: float = 1.0

    def raw0(self) -> Tensor:
        v = torch.as_tensor(np.broadcast_to(np.asarray(self.init, dtype=np.float64), self.shape).copy())
        if not torch.all((v >= self.low) & (v <= self.high)):
            raise ValueError(f"initial values must lie in [{self.low}, {self.high}]")
        return v

    def value(self, raw: Tensor) -> Tensor:
        return raw

    def project(self, raw: Tensor) -> None:
        raw.clamp_(self.low, self.high)

    def export(self, raw: Tensor) -> npt.NDArray[Any]:
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
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]).clone()

    def value(self, raw: Tensor) -> Tensor:
        return raw

    def params(self, flat: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        i = 0
        for n, s in zip(self.names, self.shapes, strict=True):
            k = int(np.prod(s)) if len(s) else 1
            out[n] = flat[i : i + k].view(s)
            i += k
        return out

    def project(self, raw: Tensor) -> None:
        pass

    def export(self, raw: Tensor) -> npt.NDArray[Any]:
        return raw.detach().cpu().numpy()


class HyperParameters:
    """A named set of outer variables: raw leaves, their values, projection and export."""

    def __init__(self, kinds: Mapping[str, HyperKind], dtype: torch.dtype = torch.float32) -> None:
        self.kinds = dict(kinds)
        self.dtype = dtype
        self.raw = {k: kind.raw0().to(dtype).requires_grad_(True) for k, kind in self.kinds.items()}

    def values(self, raw: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
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
        for k, kind in self.kinds.items():
            kind.project(self.raw[k])

    def export(self) -> dict[str, Any]:
        return {k: kind.export(self.raw[k].detach()) for k, kind in self.kinds.items()}

    def snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.raw.items()}

    @torch.no_grad()
    def load(self, snap: Mapping[str, Tensor]) -> None:
        for k, v in snap.items():
            self.raw[k].copy_(v)
