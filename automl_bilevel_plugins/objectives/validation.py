"""Validation objectives ``val_loss`` and ``val_error`` (both minimised).

=============  =======================================  ==========================================
objective      classification                           regression
=============  =======================================  ==========================================
``val_loss``   cross-entropy of ``predict_proba``       mean squared error
``val_error``  1 - accuracy                             1 - R² (scale-free; 0 is perfect)
=============  =======================================  ==========================================

``val_loss`` also offers ``loss_tensor`` for hypergradient optimizers (capability
``differentiable``).
"""

from __future__ import annotations

from typing import Protocol, cast

import numpy as np
import torch

from automl_bilevel import FittedModel, ObjectiveSpec, OuterObjective, Task, hookimpl
from automl_bilevel.core.components import DifferentiableObjective

EPS = 1e-12


class _ProbabilisticModel(FittedModel, Protocol):
    """A fitted classifier with ``predict_proba`` (one column per class). Checked with ``hasattr``,
    which is how a model says it has none (``SklearnModel.predict_proba`` raises AttributeError with
    the reason); a runtime-checkable protocol would not do on Python >= 3.12, where ``isinstance``
    looks the attribute up statically and so finds that property."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


class ValidationLoss(OuterObjective, DifferentiableObjective):  # mypy checks loss_tensor against the protocol
    """``val_loss``: cross-entropy of ``predict_proba`` (classification) or mean squared error (regression) on the
    validation data; differentiable through :meth:`loss_tensor`."""

    needs_predict_proba = True  # classification: cross-entropy of predict_proba

    def __call__(self, model: FittedModel, X: np.ndarray, y: np.ndarray, *, task: Task) -> float:
        """The loss of ``model`` on (X, y); raises TypeError for a classifier without ``predict_proba``."""
        if task.is_classifier:
            if not hasattr(model, "predict_proba"):
                raise TypeError(f"{type(model).__name__} has no predict_proba; val_loss needs one (use val_error)")
            p = np.asarray(cast(_ProbabilisticModel, model).predict_proba(X))
            return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0))))
        return float(np.mean((np.asarray(model.predict(X), dtype=float) - y) ** 2))

    def loss_tensor(self, outputs: torch.Tensor, y: torch.Tensor, *, task: Task) -> torch.Tensor:
        """The same loss on tensors, for hypergradients: cross-entropy of the logits ``outputs``, or their MSE."""
        if task.is_classifier:
            return torch.nn.functional.cross_entropy(outputs, y)
        return torch.nn.functional.mse_loss(outputs.reshape(y.shape), y)


class ValidationError(OuterObjective):
    """``val_error``: 1 - accuracy (classification) or the MSE over the variance of ``y``, 1 - R² (regression)."""

    def __call__(self, model: FittedModel, X: np.ndarray, y: np.ndarray, *, task: Task) -> float:
        """The error of ``model`` on (X, y); raises FloatingPointError when a prediction is not finite."""
        pred = np.asarray(model.predict(X))
        if pred.dtype.kind in "fc" and not np.all(np.isfinite(pred)):  # NaN != y would count as a mere error
            raise FloatingPointError(
                f"the model predicted {int(np.sum(~np.isfinite(pred)))} non-finite value(s) "
                f"for {len(pred)} validation samples"
            )
        if task.is_classifier:
            return float(np.mean(pred != y))
        mse = float(np.mean((pred.astype(float) - y) ** 2))
        return mse / max(float(np.var(y)), EPS)


@hookimpl
def bilevel_register_objectives() -> list[ObjectiveSpec]:
    """Register the ``val_loss`` (capability ``differentiable``) and ``val_error`` objectives."""
    return [
        ObjectiveSpec(
            "val_loss",
            ValidationLoss,
            "validation cross-entropy (classification) or MSE (regression)",
            capabilities=frozenset({"differentiable"}),
        ),
        ObjectiveSpec("val_error", ValidationError, "validation error rate (classification) or 1 - R² (regression)"),
    ]
