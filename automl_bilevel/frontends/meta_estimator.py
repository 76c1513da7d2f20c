"""``MetaLearnerClassifier``: a scikit-learn-style meta-estimator for few-shot classification.

``fit(X, y)`` meta-trains over the classes of a labelled image set (a class split gives the
meta-validation classes; the state with the best meta-validation accuracy is kept);
``adapt(X_support, y_support)`` returns a fitted classifier for new classes;
``evaluate(X, y)`` reports N-way K-shot accuracy with a 95% confidence interval over test episodes.
Tracked in MLflow like every run: meta-iterations as steps (meta-training loss and accuracy,
meta-validation accuracy), the best meta-validation model as the run's model artifact.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from automl_bilevel.core.events import RunContext, TrackingSettings, run_params
from automl_bilevel.frontends.base import SearchEstimator
from automl_bilevel.gradient.outer import GradientOuterOptimizer
from automl_bilevel.methods.meta.base import MetaLearner
from automl_bilevel.methods.meta.episodes import EpisodeError, EpisodeSampler, as_images, class_split, rotate_classes
from automl_bilevel.methods.meta.problem import EpisodicProblem
from automl_bilevel.methods.meta.training import evaluate_episodes
from automl_bilevel.plugin.registry import CapabilityError, Registry, get_registry
from automl_bilevel.plugin.specs import Component, Registered
from automl_bilevel.run.engine import AllTrialsFailedError, SearchResult
from automl_bilevel.run.lifecycle import Run
from automl_bilevel.run.runtime import resolve_device


class AdaptedClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]  # sklearn ships no type information
    """A meta-learner adapted to one support set: predicts among the support set's classes."""

    def __init__(
        self,
        model: MetaLearner | None = None,
        support_x: torch.Tensor | None = None,
        support_y: torch.Tensor | None = None,
        classes: npt.NDArray[Any] | None = None,
        image_shape: Sequence[int] | None = None,
    ) -> None:
        self.model, self.support_x, self.support_y, self.classes = model, support_x, support_y, classes
        self.image_shape = image_shape

    def __sklearn_is_fitted__(self) -> bool:
        """Whether it holds a meta-learner (for scikit-learn's ``check_is_fitted``)."""
        return self.model is not None

    @property
    def classes_(self) -> npt.NDArray[Any] | None:
        """The original labels of the support set's classes, in the order of the probability columns."""
        return self.classes

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Probabilities over the support set's classes for the query images ``X``; raises
        ``NotFittedError`` without a meta-learner and support set, ``EpisodeError`` when the image shapes differ."""
        if self.model is None or self.support_x is None or self.classes is None:
            raise NotFittedError("this AdaptedClassifier has no meta-learner; get one from MetaLearnerClassifier.adapt")
        Xq = torch.as_tensor(as_images(X, self.image_shape))
        if Xq.shape[1:] != self.support_x.shape[1:]:
            raise EpisodeError(
                f"query images have shape {tuple(Xq.shape[1:])}, support images {tuple(self.support_x.shape[1:])}"
            )
        self.model.eval()
        with torch.no_grad():
            out: torch.Tensor = self.model(self.support_x, self.support_y, Xq, len(self.classes))
        if self.model.output == "scores":
            out = torch.log(out.clamp_min(1e-12))
        return torch.softmax(out, dim=1).numpy().astype(np.float64)

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[Any]:
        """The most probable support-set class (its original label) for each query image of ``X``."""
        proba = self.predict_proba(X)  # raises NotFittedError without classes
        assert self.classes is not None  # predict_proba raised NotFittedError otherwise
        labels: npt.NDArray[Any] = self.classes[proba.argmax(1)]
        return labels


class MetaLearnerClassifier(SearchEstimator):
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
    device : str
        ``"cpu"`` (default), ``"auto"`` (a GPU when there is one), ``"cuda"``, ``"cuda:N"`` or ``"mps"``:
        where meta-training runs (the images move there once); the fitted model is returned on the CPU.
    optimizer, optimizer_params :
        The gradient outer optimizer that meta-trains (default ``hypergradient``: Adam at ``meta_lr``,
        no clipping; ``optimizer_params`` override, e.g. ``{"outer_optimizer": "sgd"}``).
    n_workers, dask_address :
        Evaluate the outer steps on Dask workers (as for :class:`automl_bilevel.BilevelClassifier`).
    checkpoint : str or path, optional
        Trials and the outer state (weights, Adam's moments, step) are saved there after every step;
        fitting again with it (e.g. with a larger ``meta_iters``) continues exactly where it stopped.
    tracking, tracking_uri, experiment_name, random_state, verbose :
        As for :class:`automl_bilevel.BilevelClassifier`.

    Attributes
    ----------
    model_, history_ (one row per outer step: ``value`` is the meta-training loss, with
    ``train_accuracy`` and ``meta_val_accuracy``), trials_, best_val_accuracy_, best_iteration_ (the
    step whose point is kept), n_iter_, stop_reason_, mlflow_run_id_, run_info_, interrupted_.
    """

    _parameter_constraints: dict[str, list[Any]] = {
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
        "device": [str],
        "optimizer": [str, GradientOuterOptimizer],
        "optimizer_params": [None, dict],
        "n_workers": [Interval(Integral, 1, None, closed="left")],
        "dask_address": [None, str],
        "checkpoint": [None, str, os.PathLike],
    }

    def __init__(
        self,
        method: str | MetaLearner = "protonet",
        *,
        method_params: dict[str, Any] | None = None,
        l2g: bool = False,
        l2g_lr: float = 0.1,
        l2g_weight: float = 1.0,
        n_way: int = 5,
        k_shot: int = 1,
        q_queries: int = 15,
        meta_iters: int = 1000,
        meta_lr: float = 1e-3,
        timeout: float | None = None,
        val_fraction: float = 0.2,
        val_every: int = 50,
        val_episodes: int = 50,
        rotations: bool = False,
        image_shape: Sequence[int] | None = None,
        tracking: bool = True,
        tracking_uri: str | None = None,
        experiment_name: str = "automl-bilevel-meta",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        device: str = "cpu",
        optimizer: str | GradientOuterOptimizer = "hypergradient",
        optimizer_params: dict[str, Any] | None = None,
        n_workers: int = 1,
        dask_address: str | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> None:
        self.method, self.method_params, self.l2g, self.l2g_lr, self.l2g_weight = (
            method,
            method_params,
            l2g,
            l2g_lr,
            l2g_weight,
        )
        self.n_way, self.k_shot, self.q_queries = n_way, k_shot, q_queries
        self.meta_iters, self.meta_lr, self.timeout = meta_iters, meta_lr, timeout
        self.val_fraction, self.val_every, self.val_episodes = val_fraction, val_every, val_episodes
        self.rotations, self.image_shape = rotations, image_shape
        self.tracking, self.tracking_uri, self.experiment_name = tracking, tracking_uri, experiment_name
        self.random_state, self.verbose, self.device = random_state, verbose, device
        self.optimizer, self.optimizer_params = optimizer, optimizer_params
        self.n_workers, self.dask_address, self.checkpoint = n_workers, dask_address, checkpoint

    # -- data -------------------------------------------------------------------------------------
    def _samplers(
        self,
        images: npt.NDArray[np.float32],
        labels: npt.NDArray[Any],
        seed: int,
        device: torch.device | str | None = None,
    ) -> tuple[EpisodeSampler, EpisodeSampler | None]:
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
                out.append(EpisodeSampler(x, y, self.n_way, self.k_shot, self.q_queries, seed=seed + i, device=device))
            except EpisodeError as exc:
                raise EpisodeError(f"{where} classes ({len(classes)} base classes): {exc}") from None
        return out[0], (out[1] if len(out) > 1 else None)

    def _build(self, images: npt.NDArray[np.float32], registry: Registry) -> tuple[MetaLearner, Registered | None]:
        in_channels, size = images.shape[1], images.shape[2]
        if images.shape[2] != images.shape[3]:
            raise EpisodeError(f"square images expected, got {images.shape[2]}x{images.shape[3]}")
        if isinstance(self.method, MetaLearner):
            if self.method_params:
                raise ValueError("method_params cannot be combined with a MetaLearner instance")
            return copy.deepcopy(self.method), None  # the parameter itself is never trained
        model, reg = registry.make(  # the registry builds what the method registered: a MetaLearner
            "meta_learner", self.method, {"in_channels": in_channels, "image_size": size, **(self.method_params or {})}
        )
        return model, reg

    # -- fit ----------------------------------------------------------------------------------------
    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> Self:
        """Meta-train through the one search loop: each outer step is one trial of the chosen gradient
        outer optimizer (``hypergradient``: Adam at ``meta_lr`` on the meta-loss gradient). With
        ``checkpoint``, fitting again with a larger ``meta_iters`` continues exactly where it stopped."""
        self._validate_params()
        images = as_images(X, self.image_shape)
        labels = np.asarray(y)
        if labels.ndim != 1 or len(labels) != len(images):
            raise EpisodeError(f"{len(images)} images but labels of shape {labels.shape}")
        seed = self._seed()
        device = resolve_device(self.device)  # a missing or malformed device before any work
        registry = get_registry()
        if isinstance(self.method, str):
            registry.get("meta_learner", self.method)  # an unknown method before any work
        factory = (
            registry.get("optimizer", self.optimizer).spec.factory
            if isinstance(self.optimizer, str)
            else type(self.optimizer)
        )
        if not (isinstance(factory, type) and issubclass(factory, GradientOuterOptimizer)):
            raise CapabilityError(
                f"meta-training moves a network by gradients; optimizer {self.optimizer!r} is not "
                "a gradient outer optimizer (use 'hypergradient')"
            )
        defaults = {"outer_lr": self.meta_lr, "clip": None} if isinstance(self.optimizer, str) else {}
        optimizer = registry.make("optimizer", self.optimizer, {**defaults, **(self.optimizer_params or {})})
        # a resumed run keeps its seed: the same classes, episodes, start
        checkpoint, seed = self._open_checkpoint(self._fingerprint(images, labels, optimizer), seed)
        with torch.random.fork_rng(devices=[]):  # the network's start is the seed's, not the global RNG's
            torch.manual_seed(seed)
            model, reg = self._build(images, registry)
        model = model.to(device)
        train, val = self._samplers(images, labels, seed, device)
        self.image_shape_ = tuple(images.shape[1:])
        problem = EpisodicProblem(
            model,
            train,
            val,
            seed=seed,
            l2g=self.l2g,
            l2g_lr=self.l2g_lr,
            l2g_weight=self.l2g_weight,
            val_every=self.val_every,
            val_episodes=self.val_episodes,
            n_steps=self.meta_iters,
        )
        method = Component(model, reg, "meta_learner")
        name, oname = method.name, optimizer.name
        context = RunContext(
            name=f"{type(self).__name__}-{name}{'-l2g' if self.l2g else ''}",
            task="few_shot_classification",
            learner=name,
            objective="query_loss+l2g" if self.l2g else "query_loss",
            optimizer=oname,
            params=run_params(self),
            plugins={"learner": method.info(), "optimizer": optimizer.info()},
            search_space={},
            n_iter=self.meta_iters,
            tracking=TrackingSettings(
                self.tracking,
                self.tracking_uri,
                self.experiment_name,
                progress=self.verbose > 0,
                verbose=int(self.verbose),
            ),
            trials_are_steps=True,
        )

        def conclude(result: SearchResult, run: Run) -> dict[str, Any]:
            if result.status != "KILLED" and not any(t.ok for t in result.trials):
                # as BilevelClassifier: no untrained model is returned as if it were fitted
                errors = sorted({t.error for t in result.trials if t.error})
                raise AllTrialsFailedError(
                    f"no meta-training step finished: the search stopped by {result.stop_reason} "
                    f"(timeout={self.timeout}) before the first one ended"
                    if not result.trials
                    else f"all {len(result.trials)} meta-training steps failed; errors: "
                    f"{'; '.join(e[:300] for e in errors[:3]) or 'non-finite meta-loss'}"
                )
            opt = optimizer.obj
            validated = val is not None and opt.best_vars is not None
            problem.load(opt.best_variables() if validated else opt.vars).eval()
            model.to("cpu")  # adapt, evaluate, pickling: on the CPU, wherever it was trained
            best = result.trials[opt.best_step] if validated else (result.trials[-1] if result.trials else None)
            self.model_ = model
            for key in ("train_accuracy", "meta_val_accuracy"):
                self.history_[key] = [t.metrics.get(key) for t in result.trials]
            self.best_val_accuracy_ = best.metrics["meta_val_accuracy"] if validated and best is not None else None
            self.best_iteration_ = best.number if best is not None else -1
            self.n_iter_ = len(result.trials)
            return {"best": best}

        self._search(
            context,
            registry,
            problem,
            optimizer,
            n_iter=self.meta_iters,
            seed=seed,
            checkpoint=checkpoint,
            n_workers=self.n_workers,
            conclude=conclude,
        )
        return self

    def _fingerprint(
        self, images: npt.NDArray[np.float32], labels: npt.NDArray[Any], optimizer: Component
    ) -> dict[str, Any]:
        """What a checkpoint must match to be continued: method, settings (not the budget), data."""
        params = {
            k: v
            for k, v in run_params(self).items()
            if k
            not in (
                "meta_iters",
                "timeout",
                "tracking",
                "tracking_uri",
                "experiment_name",
                "verbose",
                "checkpoint",
                "n_workers",
                "dask_address",
            )
        }
        digest = hashlib.sha1(np.ascontiguousarray(images).tobytes() + np.ascontiguousarray(labels).tobytes())
        method = self.method if isinstance(self.method, str) else type(self.method).__name__
        return {"method": method, "params": params, "optimizer": optimizer.name, "data": digest.hexdigest()}

    # -- use ----------------------------------------------------------------------------------------
    def adapt(self, X_support: npt.ArrayLike, y_support: npt.ArrayLike, n_way: int | None = None) -> AdaptedClassifier:
        """A classifier for the classes of the support set (each must have at least one example)."""
        check_is_fitted(self, "model_")
        sx = as_images(X_support, self.image_shape)
        if sx.shape[1:] != self.image_shape_:
            raise EpisodeError(
                f"support images have shape {sx.shape[1:]}, the model was meta-trained on {self.image_shape_}"
            )
        classes, ys = np.unique(np.asarray(y_support), return_inverse=True)
        if len(ys) != len(sx):
            raise EpisodeError(f"{len(sx)} support images but {len(ys)} labels")
        if n_way is not None and len(classes) != n_way:
            raise EpisodeError(f"the support set covers {len(classes)} classes, not the {n_way} of an {n_way}-way task")
        if len(classes) < 2:
            raise EpisodeError("a support set needs at least 2 classes")
        return AdaptedClassifier(self.model_, torch.as_tensor(sx), torch.as_tensor(ys), classes, self.image_shape)

    def evaluate(
        self,
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        *,
        n_way: int | None = None,
        k_shot: int | None = None,
        q_queries: int | None = None,
        n_episodes: int = 600,
        random_state: int | np.random.RandomState | None = None,
    ) -> dict[str, Any]:
        """N-way K-shot accuracy on the classes of (X, y): mean and 95% CI half-width over episodes."""
        check_is_fitted(self, "model_")
        images = as_images(X, self.image_shape)
        if images.shape[1:] != self.image_shape_:
            raise EpisodeError(
                f"images have shape {images.shape[1:]}, the model was meta-trained on {self.image_shape_}"
            )
        n, k, q = n_way or self.n_way, k_shot or self.k_shot, q_queries or self.q_queries
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
        sampler = EpisodeSampler(images, y, n, k, q, seed=seed)
        mean, half = evaluate_episodes(self.model_, sampler, n_episodes)
        return {"accuracy": mean, "ci95": half, "n_episodes": int(n_episodes), "n_way": n, "k_shot": k}
