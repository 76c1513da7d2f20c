"""Meta-learning over tasks: episodes, meta-learners (ProtoNet, RelationNet, hyper-representation
as plugins), L2G, and the ``MetaLearnerClassifier`` meta-estimator."""

from __future__ import annotations

from .base import MetaLearner, MetaLoss
from .episodes import Episode, EpisodeError, EpisodeSampler, as_images, class_split, rotate_classes
from .estimator import AdaptedClassifier, MetaLearnerClassifier
from .problem import EpisodicProblem
from .search import FewShotError, MetaTrainingLearner, tune_meta_learner
from .training import evaluate_episodes, l2g_loss

__all__ = [
    "AdaptedClassifier",
    "Episode",
    "EpisodeError",
    "EpisodeSampler",
    "EpisodicProblem",
    "FewShotError",
    "MetaTrainingLearner",
    "tune_meta_learner",
    "MetaLearner",
    "MetaLearnerClassifier",
    "MetaLoss",
    "as_images",
    "class_split",
    "evaluate_episodes",
    "l2g_loss",
    "rotate_classes",
]
