"""Learned inner components: a learned optimizer (L2O-DM) with flatness-aware regularizers."""
from __future__ import annotations

from .optimizer import (
    REGULARIZERS,
    LearnedOptimizer,
    LSTMOptimizer,
    MLPOptimizee,
    hessian_trace,
    local_entropy,
    meta_train_optimizer,
    preprocess,
    top_eigenvalue,
    train_optimizee,
)

__all__ = ["REGULARIZERS", "LSTMOptimizer", "LearnedOptimizer", "MLPOptimizee", "hessian_trace", "local_entropy",
           "meta_train_optimizer", "preprocess", "top_eigenvalue", "train_optimizee"]
