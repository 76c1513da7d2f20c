"""Learned inner components: a meta-loss network (Hai & Liu; ML3) as the training loss of torch
inner learners."""
from __future__ import annotations

from .loss import LossNetwork, LossNetworkError, load_loss_network, save_loss_network
from .tasks import sample_tasks

__all__ = ["LossNetwork", "LossNetworkError", "load_loss_network", "sample_tasks", "save_loss_network"]
