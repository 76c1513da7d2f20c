"""Tuning a meta-learner's settings (meta_lr, L2G's α and β, width, inner steps) with any black-box
outer optimizer (``random``, ``smac``, ``es``, a third-party one) as an ordinary search of the one
loop, whose trials are short meta-trainings.

The problem is a :class:`~automl_bilevel.core.problem.BilevelProblem` like any hyperparameter search: the
inner learner (:class:`MetaTrainingLearner`) meta-trains a ``MetaLearnerClassifier`` on the
meta-training classes with the trial's settings, and the outer objective (:class:`FewShotError`) is
its N-way K-shot error on held-out classes (the same seeded episodes for every trial). So the search
is tracked (a child run per trial), resumable (``checkpoint``), parallel on Dask (``n_workers``), and
multi-fidelity optimizers scale each trial's meta-iterations by its budget.

    best, result = tune_meta_learner(X, y, search_space={"meta_lr": (1e-4, 1e-2, "log"),
                                                         "l2g_weight": (0.1, 10.0, "log")},
                                     method="protonet", l2g=True, optimizer="smac", n_iter=20)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from automl_bilevel.core.components import FittedModel, InnerLearner, OuterObjective, Task
from automl_bilevel.core.events import RunContext, TrackingSettings, plain
from automl_bilevel.core.problem import BilevelProblem, Split
from automl_bilevel.core.space import as_configspace, describe
from automl_bilevel.methods.meta.episodes import EpisodeError, as_images, class_split, rotate_classes
from automl_bilevel.plugin.registry import check_compatible, get_registry
from automl_bilevel.plugin.specs import Component
from automl_bilevel.run.checkpoint import Checkpoint
from automl_bilevel.run.engine import SearchResult, run_search
from automl_bilevel.run.lifecycle import Run

if TYPE_CHECKING:
    from automl_bilevel.frontends.meta_estimator import MetaLearnerClassifier

#: MetaLearnerClassifier settings a trial may set; any other key goes to ``method_params``
ESTIMATOR_SETTINGS = frozenset(
    {"l2g", "l2g_lr", "l2g_weight", "meta_lr", "meta_iters", "k_shot", "q_queries", "rotations"}
)


class _Fitted:
    """A meta-trained estimator as the inner learner's fitted model."""

    def __init__(self, estimator: MetaLearnerClassifier) -> None:
        self.estimator = estimator

    def predict(self, X: np.ndarray) -> np.ndarray:  # the FittedModel protocol; few-shot needs a support set
        """Not available: a meta-learner predicts after adapting to a support set (raises ``NotImplementedError``)."""
        raise NotImplementedError("a meta-learner predicts after adapt(support); use FewShotError as objective")


class MetaTrainingLearner(InnerLearner):
    """Short meta-trainings as an inner learner: ``fit`` meta-trains a ``MetaLearnerClassifier`` with the
    ``base`` settings updated by the trial's configuration (estimator settings, else ``method_params``);
    a ``budget`` in (0, 1] scales ``meta_iters``."""

    def __init__(self, base: Mapping[str, Any]) -> None:
        self.base = dict(base)

    def param_names(self, task: Task) -> set[str] | None:
        """``None``: any name goes (estimator settings and method parameters are checked when built)."""
        return None  # estimator settings or the method's parameters: checked when the method is built

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        config: Mapping[str, Any],
        *,
        task: Task,
        seed: int,
        budget: float | None = None,
    ) -> _Fitted:
        """Meta-train a ``MetaLearnerClassifier`` on (``X``, ``y``) with the base settings updated by
        ``config``; ``budget`` scales ``meta_iters``. The fitted model is scored by :class:`FewShotError`."""
        from automl_bilevel.frontends.meta_estimator import MetaLearnerClassifier

        settings = {k: v for k, v in config.items() if k in ESTIMATOR_SETTINGS}
        method_params = {
            **(self.base.get("method_params") or {}),
            **{k: v for k, v in config.items() if k not in ESTIMATOR_SETTINGS},
        }
        params = {**self.base, **settings, "method_params": method_params or None}
        if budget is not None:
            params["meta_iters"] = max(1, round(int(params.get("meta_iters", 1000)) * float(budget)))
        est = MetaLearnerClassifier(**params, val_fraction=0.0, tracking=False, random_state=seed)
        return _Fitted(est.fit(X, y))


class FewShotError(OuterObjective):
    """1 − N-way K-shot accuracy on the classes of the validation data, over ``n_episodes`` seeded
    episodes (the same for every trial)."""

    def __init__(self, n_episodes: int = 100, seed: int = 0) -> None:
        self.n_episodes, self.seed = int(n_episodes), int(seed)

    def __call__(self, model: FittedModel, X: np.ndarray, y: np.ndarray, *, task: Task) -> float:
        """1 − the N-way K-shot accuracy of the meta-trained ``model`` on episodes from (``X``, ``y``);
        raises ``TypeError`` for a model not fitted by :class:`MetaTrainingLearner`."""
        if not isinstance(model, _Fitted):
            raise TypeError(
                f"FewShotError scores a meta-trained learner (MetaTrainingLearner), got {type(model).__name__}"
            )
        res = model.estimator.evaluate(X, y, n_episodes=self.n_episodes, random_state=self.seed)
        return 1.0 - float(res["accuracy"])


def tune_meta_learner(
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    search_space: Mapping[str, Any] | Any,
    method: str = "protonet",
    optimizer: str = "random",
    optimizer_params: Mapping[str, Any] | None = None,
    n_iter: int = 10,
    meta_iters: int = 200,
    val_fraction: float = 0.3,
    n_episodes: int = 100,
    timeout: float | None = None,
    n_workers: int = 1,
    dask_address: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    tracking: bool = True,
    tracking_uri: str | None = None,
    experiment_name: str = "automl-bilevel-meta",
    random_state: int = 0,
    **settings: Any,
) -> tuple[dict[str, Any], SearchResult]:
    """Search a meta-learner's settings; returns the best configuration and the search. ``settings``
    are fixed ``MetaLearnerClassifier`` settings (``l2g``, ``n_way``, ``k_shot``, ``image_shape``, ...)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1): the held-out classes score the trials; got {val_fraction}")
    images, labels = as_images(X, settings.get("image_shape")), np.asarray(y)
    if labels.ndim != 1 or len(labels) != len(images):
        raise EpisodeError(f"{len(images)} images but labels of shape {labels.shape}")
    seed = int(random_state)
    space = as_configspace(search_space, seed=seed)
    registry = get_registry()
    registry.get("meta_learner", method)  # an unknown method before any work
    base = {"method": method, "meta_iters": int(meta_iters), **settings}
    learner = Component(MetaTrainingLearner(base), None, "learner")
    objective = Component(FewShotError(n_episodes, seed), None, "objective")
    opt = registry.make("optimizer", optimizer, optimizer_params)
    train_classes, val_classes = class_split(labels, (1.0 - val_fraction, val_fraction), seed)
    tr, va = np.isin(labels, train_classes), np.isin(labels, val_classes)
    X_val, y_val = images[va], labels[va]
    if settings.get("rotations"):  # as the trials' meta-training classes are (after the class split)
        X_val, y_val = rotate_classes(X_val, y_val)
    n_way = int(settings.get("n_way", 5))
    if len(np.unique(y_val)) < n_way:
        raise EpisodeError(
            f"the held-out classes ({len(np.unique(y_val))}) are fewer than n_way={n_way}; "
            "raise val_fraction or use rotations=True"
        )
    task = Task("few_shot_classification", int(np.prod(images.shape[1:])), n_way)
    problem = BilevelProblem(
        learner.obj, objective.obj, space, task, [Split(images[tr], labels[tr], X_val, y_val)], seed
    )
    check_compatible(Task("classification", task.n_features, n_way), learner, objective, opt)
    cp = None
    if checkpoint is not None:
        cp = Checkpoint(
            checkpoint,
            {
                "tune_meta_learner": plain(base),
                "optimizer": optimizer,
                "optimizer_params": plain(dict(optimizer_params or {})),
                "search_space": describe(space),
                "val_fraction": val_fraction,
            },
        )
        if cp.open(seed) != seed:
            raise ValueError("checkpoint was written with another random_state")
    context = RunContext(
        name=f"tune-{method}-{optimizer}",
        task="few_shot_classification",
        learner=method,
        objective="few_shot_error",
        optimizer=optimizer,
        params=plain(base),
        plugins={},
        search_space=describe(space),
        n_iter=int(n_iter),
        tracking=TrackingSettings(tracking, tracking_uri, experiment_name),
    )
    with Run(context, registry) as run:
        result = run_search(
            problem,
            opt.obj,
            n_iter=int(n_iter),
            seed=seed,
            timeout=timeout,
            n_workers=n_workers,
            dask_address=dask_address,
            checkpoint=cp,
            run=run,
        )
        best = result.best
        run.finish(result.status)
    if result.status == "KILLED":
        raise KeyboardInterrupt
    if best is None:
        raise RuntimeError(f"no trial completed; errors: {sorted({t.error for t in result.trials if t.error})[:3]}")
    return dict(opt.obj.best_config() or best.config), result
