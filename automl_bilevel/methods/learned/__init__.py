"""Learned inner components: a meta-loss network (Hai & Liu; ML3) and a learned optimizer (L2O-DM)
with flatness-aware regularizers, usable inside torch inner learners."""

from __future__ import annotations

from automl_bilevel.methods.learned.loss import LossNetwork, LossNetworkError, load_loss_network, save_loss_network
from automl_bilevel.methods.learned.optimizer import (
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
from automl_bilevel.methods.learned.tasks import sample_tasks

__all__ = [
    "REGULARIZERS",
    "LSTMOptimizer",
    "LearnedOptimizer",
    "LossNetwork",
    "LossNetworkError",
    "MLPOptimizee",
    "hessian_trace",
    "load_loss_network",
    "local_entropy",
    "meta_train_optimizer",
    "preprocess",
    "sample_tasks",
    "save_loss_network",
    "top_eigenvalue",
    "train_optimizee",
]
