"""``MetaLearnerClassifier``: a scikit-learn-style meta-estimator for few-shot classification.

``fit(X, y)`` meta-trains over the classes of a labelled image set (a class split gives the
meta-validation classes; the state with the best meta-validation accuracy is kept);
``adapt(X_support, y_support)`` returns a fitted classifier for new classes;
``evaluate(X, y)`` reports N-way K-shot accuracy with a 95% confidence interval over test episodes.
Tracked in MLflow like every run: meta-iterations as steps (meta-training loss and accuracy,
meta-validation accuracy), the best meta-validation model as the run's model artifact.
"""
from __future__ import annotations

import math
import time
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..engine import RunSession
from ..events import RunContext, TrackingSettings, TrialFinished, plugin_info, run_params
from ..registry import get_registry
from ..trials import COMPLETE, FAILED, Trial
from .base import MetaLearner
from .episodes import EpisodeError, EpisodeSampler, as_images, class_split, rotate_classes
from .training import evaluate_episodes, meta_train


class AdaptedClassifier(ClassifierMixin, BaseEstimator):
    """A meta-learner adapted to one support set: predicts among the support set's classes."""

    def __init__(self, model: MetaLearner | None = None, support_x=None, support_y=None, classes=None,
                 image_shape=None):
        self.model, self.support_x, self.support_y, self.classes = model, support_x, support_y, classes
        self.image_shape = image_shape

    def __sklearn_is_fitted__(self):
        return self.model is not None

    @property
    def classes_(self):
        return self.classes

    def predict_proba(self, X):
        if self.model is None:
            raise NotFittedError("this AdaptedClassifier has no meta-learner; get one from MetaLearnerClassifier.adapt")
        Xq = torch.as_tensor(as_images(X, self.image_shape))
        if Xq.shape[1:] != self.support_x.shape[1:]:
            raise EpisodeError(f"query images have shape {tuple(Xq.shape[1:])}, support images "
                               f"{tuple(self.support_x.shape[1:])}")
        self.model.eval()
        with torch.no_grad():
            out = self.model(self.support_x, self.support_y, Xq, len(self.classes))
        if self.model.output == "scores":
            out = torch.log(out.clamp_min(1e-12))
        return torch.softmax(out, dim=1).numpy().astype(np.float64)

    def predict(self, X):
        return self.classes[self.predict_proba(X).argmax(1)]


class MetaLearnerClassifier(BaseEstimator):
    """Episodic meta-learning for N-way K-shot classification.

    Parameters
    ----------
    method : str or MetaLearner
        ``protonet``, ``relationnet``, ``hyperrep`` (see ``automl-bilevel plugins``) or an instance.
    method_params : dict, optional
        Keyword arguments of the registered method (``width``, ``depth``, ``inner_steps``, ...).
    l2g : bool
        Train with L2G (a second, unseen-class task per step, differentiated through an inner step).
    l2g_lr, l2g_weight : float
        L2G's inner step size α and the weight β of the unseen-class loss.
    n_way, k_shot, q_queries : int
        Episode shape for meta-training (and the default for ``evaluate``).
    meta_iters, meta_lr, timeout :
        Meta-training budget (steps, seconds) and Adam's learning rate.
    val_fraction : float
        Fraction of the base classes held out for meta-validation (0: none).
    val_every, val_episodes : int
        Meta-validation schedule.
    rotations : bool
        Omniglot-style augmentation: every base class at 0/90/180/270° becomes four classes (after
        the class split).
    image_shape : tuple, optional
        (C, H, W) or (H, W) when X holds flat rows.
    tracking, tracking_uri, experiment_name, random_state, verbose :
        As for :class:`automl_bilevel.BilevelClassifier`.
    """

    _parameter_constraints: dict = {
        "method": [str, MetaLearner],
        "method_params": [None, dict],
        "l2g": ["boolean"],
        "l2g_lr": [Interval(Real, 0, None, closed="neither")],
        "l2g_weight": [Interval(Real, 0, None, closed="left")],
        "n_way": [Interval(Integral, 2, None, closed="left")],
        "k_shot": [Interval(Integral, 1, None, closed="left")],
        "q_queries": [Interval(Integral, 1, None, closed="left")],
        "meta_iters": [Interval(Integral, 1, None, closed="left")],
        "meta_lr": [Interval(Real, 0, None, closed="neither")],
        "timeout": [None, Interval(Real, 0, None, closed="neither")],
        "val_fraction": [Interval(Real, 0, 1, closed="left")],
        "val_every": [Interval(Integral, 1, None, closed="left")],
        "val_episodes": [Interval(Integral, 1, None, closed="left")],
        "rotations": ["boolean"],
        "image_shape": [None, tuple, list],
        "tracking": ["boolean"],
        "tracking_uri": [None, str],
        "experiment_name": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "device": [StrOptions({"cpu"})],
    }

    def __init__(self, method="protonet", *, method_params=None, l2g=False, l2g_lr=0.1, l2g_weight=1.0, n_way=5,
                 k_shot=1, q_queries=15, meta_iters=1000, meta_lr=1e-3, timeout=None, val_fraction=0.2,
                 val_every=50, val_episodes=50, rotations=False, image_shape=None, tracking=True,
                 tracking_uri=None, experiment_name="automl-bilevel-meta", random_state=None, verbose=0,
                 device="cpu"):
        self.method, self.method_params, self.l2g, self.l2g_lr, self.l2g_weight = (
            method, method_params, l2g, l2g_lr, l2g_weight)
        self.n_way, self.k_shot, self.q_queries = n_way, k_shot, q_queries
        self.meta_iters, self.meta_lr, self.timeout = meta_iters, meta_lr, timeout
        self.val_fraction, self.val_every, self.val_episodes = val_fraction, val_every, val_episodes
        self.rotations, self.image_shape = rotations, image_shape
        self.tracking, self.tracking_uri, self.experiment_name = tracking, tracking_uri, experiment_name
        self.random_state, self.verbose, self.device = random_state, verbose, device

    # -- data -------------------------------------------------------------------------------------
    def _samplers(self, images, labels, seed):
        parts = (1.0 - self.val_fraction, self.val_fraction) if self.val_fraction > 0 else (1.0,)
        groups = class_split(labels, parts, seed)
        out = []
        for i, classes in enumerate(groups):
            mask = np.isin(labels, classes)
            x, y = images[mask], labels[mask]
            if self.rotations:
                x, y = rotate_classes(x, y)
            where = "meta-training" if i == 0 else "meta-validation"
            try:
                out.append(EpisodeSampler(x, y, self.n_way, self.k_shot, self.q_queries, seed=seed + i))
            except EpisodeError as exc:
                raise EpisodeError(f"{where} classes ({len(classes)} base classes): {exc}") from None
        return out[0], (out[1] if len(out) > 1 else None)

    def _build(self, images):
        in_channels, size = images.shape[1], images.shape[2]
        if images.shape[2] != images.shape[3]:
            raise EpisodeError(f"square images expected, got {images.shape[2]}x{images.shape[3]}")
        if isinstance(self.method, MetaLearner):
            if self.method_params:
                raise ValueError("method_params cannot be combined with a MetaLearner instance")
            return self.method, None
        model, reg = get_registry().make("meta_learner", self.method,
                                         {"in_channels": in_channels, "image_size": size, **(self.method_params or {})})
        return model, reg

    # -- fit ----------------------------------------------------------------------------------------
    def fit(self, X, y):
        self._validate_params()
        images = as_images(X, self.image_shape)
        labels = np.asarray(y)
        if labels.ndim != 1 or len(labels) != len(images):
            raise EpisodeError(f"{len(images)} images but labels of shape {labels.shape}")
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        torch.manual_seed(seed)
        model, reg = self._build(images)  # an unknown method or a bad setting before any data work
        train, val = self._samplers(images, labels, seed)
        self.image_shape_ = tuple(images.shape[1:])
        name = reg.name if reg else type(model).__name__
        context = RunContext(
            name=f"{type(self).__name__}-{name}{'-l2g' if self.l2g else ''}", task="few_shot_classification",
            learner=name, objective="query_loss", optimizer="adam+l2g" if self.l2g else "adam",
            params=run_params(self), plugins={"learner": plugin_info(model, reg)},
            search_space={}, n_iter=self.meta_iters,
            tracking=TrackingSettings(self.tracking, self.tracking_uri, self.experiment_name,
                                      progress=self.verbose > 0),
            trials_are_steps=True)
        session = RunSession(get_registry().run_listeners(context))
        self.run_info_ = session.info
        self.mlflow_run_id_ = self.run_info_.get("mlflow_run_id")
        session.start(context)
        steps: list[Trial] = []
        best = [None]

        def on_step(step):
            metrics = {"train_accuracy": step.accuracy}
            if step.val_accuracy is not None:
                metrics["meta_val_accuracy"] = step.val_accuracy
            t = Trial(step.iteration, {}, step.loss, FAILED if step.error else COMPLETE, step.seconds,
                      metrics=metrics, error=step.error)
            steps.append(t)
            if t.ok and (best[0] is None or t.value < best[0].value):
                best[0] = t
            session.emit(TrialFinished(t, best[0], len(steps), self.meta_iters))

        t0 = time.perf_counter()
        try:
            res = meta_train(model, train, val, meta_iters=self.meta_iters, meta_lr=self.meta_lr, l2g=self.l2g,
                             l2g_lr=self.l2g_lr, l2g_weight=self.l2g_weight, val_every=self.val_every,
                             val_episodes=self.val_episodes, timeout=self.timeout, on_step=on_step)
            model.load_state_dict(res.best_state)
            model.eval()
        except BaseException as exc:
            session.finish("FAILED", steps, time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
            raise
        self.model_ = model
        self.history_ = {"iteration": [s.iteration for s in res.steps], "loss": [s.loss for s in res.steps],
                         "train_accuracy": [s.accuracy for s in res.steps],
                         "meta_val_accuracy": [s.val_accuracy for s in res.steps]}
        self.best_val_accuracy_ = res.best_val_accuracy if math.isfinite(res.best_val_accuracy) else None
        self.best_iteration_ = res.best_iteration
        self.n_iter_ = len(res.steps)
        self.stop_reason_ = res.stop_reason
        self.interrupted_ = res.stop_reason == "interrupted"
        session.finish("KILLED" if self.interrupted_ else "FINISHED", steps, time.perf_counter() - t0, model=self)
        if self.interrupted_:
            raise KeyboardInterrupt
        return self

    # -- use ----------------------------------------------------------------------------------------
    def adapt(self, X_support, y_support, n_way: int | None = None) -> AdaptedClassifier:
        """A classifier for the classes of the support set (each must have at least one example)."""
        check_is_fitted(self, "model_")
        sx = as_images(X_support, self.image_shape)
        if sx.shape[1:] != self.image_shape_:
            raise EpisodeError(f"support images have shape {sx.shape[1:]}, the model was meta-trained on "
                               f"{self.image_shape_}")
        classes, ys = np.unique(np.asarray(y_support), return_inverse=True)
        if len(ys) != len(sx):
            raise EpisodeError(f"{len(sx)} support images but {len(ys)} labels")
        if n_way is not None and len(classes) != n_way:
            raise EpisodeError(f"the support set covers {len(classes)} classes, not the {n_way} of an "
                               f"{n_way}-way task")
        if len(classes) < 2:
            raise EpisodeError("a support set needs at least 2 classes")
        return AdaptedClassifier(self.model_, torch.as_tensor(sx), torch.as_tensor(ys), classes, self.image_shape)

    def evaluate(self, X, y, *, n_way: int | None = None, k_shot: int | None = None, q_queries: int | None = None,
                 n_episodes: int = 600, random_state=None) -> dict:
        """N-way K-shot accuracy on the classes of (X, y): mean and 95% CI half-width over episodes."""
        check_is_fitted(self, "model_")
        images = as_images(X, self.image_shape)
        if images.shape[1:] != self.image_shape_:
            raise EpisodeError(f"images have shape {images.shape[1:]}, the model was meta-trained on {self.image_shape_}")
        n, k, q = n_way or self.n_way, k_shot or self.k_shot, q_queries or self.q_queries
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
        sampler = EpisodeSampler(images, y, n, k, q, seed=seed)
        mean, half = evaluate_episodes(self.model_, sampler, n_episodes)
        return {"accuracy": mean, "ci95": half, "n_episodes": int(n_episodes), "n_way": n, "k_shot": k}

