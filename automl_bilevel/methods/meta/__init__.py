"""Meta-learning over tasks: episodes, meta-learners (ProtoNet, RelationNet, hyper-representation
as plugins), and L2G. The estimator over them is
:class:`automl_bilevel.MetaLearnerClassifier` (``automl_bilevel.frontends.meta_estimator``)."""

from __future__ import annotations

from automl_bilevel.methods.meta.base import MetaLearner, MetaLoss
from automl_bilevel.methods.meta.episodes import (
    Episode,
    EpisodeError,
    EpisodeSampler,
    as_images,
    class_split,
    rotate_classes,
)
from automl_bilevel.methods.meta.problem import EpisodicProblem
from automl_bilevel.methods.meta.training import evaluate_episodes, l2g_loss

__all__ = [
    "Episode",
    "EpisodeError",
    "EpisodeSampler",
    "EpisodicProblem",
    "MetaLearner",
    "MetaLoss",
    "as_images",
    "class_split",
    "evaluate_episodes",
    "l2g_loss",
    "rotate_classes",
]
