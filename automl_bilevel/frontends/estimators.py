"""scikit-learn estimators over the bilevel engine: ``BilevelClassifier`` and ``BilevelRegressor``.

``__init__`` only stores its arguments; plugin resolution and validation happen in ``fit``.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import replace
from numbers import Integral, Real
from typing import Any, Self, cast

import numpy as np
from ConfigSpace import ConfigurationSpace
from numpy.typing import ArrayLike
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from automl_bilevel.core.components import InnerLearner, OuterObjective, OuterOptimizer, Task
from automl_bilevel.core.events import RunContext, TrackingSettings, plain, run_params
from automl_bilevel.core.problem import BilevelProblem, Split
from automl_bilevel.core.space import as_configspace, check_names, describe
from automl_bilevel.frontends.base import SearchEstimator
from automl_bilevel.plugin.registry import check_compatible, get_registry
from automl_bilevel.plugin.specs import Component
from automl_bilevel.run.engine import AllTrialsFailedError, SearchResult
from automl_bilevel.run.lifecycle import Run
from automl_bilevel.run.parallel import check_address
from automl_bilevel.run.runtime import thread_policy

#: above this magnitude a feature value overflows float32 (the torch learners) and wrecks any fit
MAX_ABS_FEATURE = float(np.finfo(np.float32).max)
#: above this a feature is far outside any scale a learner's defaults expect: warned loudly
LARGE_FEATURE = 1e12


def _check_magnitude(X: np.ndarray) -> None:
    """Refuse values a float32 learner cannot hold; warn loudly about absurdly large ones."""
    if X.size == 0:
        return
    big = np.abs(X)
    at = tuple(int(k) for k in np.unravel_index(int(np.argmax(big)), X.shape))  # (sample, feature) or more
    j = at[1:] if len(at) > 2 else at[1]
    where = f"X[{', '.join(map(str, at))}] = {float(X[at])!r} (feature {j})"
    top = float(big[at])
    if top > MAX_ABS_FEATURE:
        raise ValueError(
            f"{where} is beyond float32's range: every trial would train on "
            "overflowed values; scale the features (e.g. StandardScaler in a Pipeline) or fix the entry"
        )
    if top > LARGE_FEATURE:
        warnings.warn(
            f"{where}: features this large usually put every trial at chance; "
            "scale them (e.g. StandardScaler in a Pipeline)",
            UserWarning,
            stacklevel=3,
        )


def _learner_and_params(learner: Any, params: Mapping[str, Any] | None) -> tuple[Any, Mapping[str, Any] | None]:
    """The registered name (and its parameters) for a ``learner`` given as an object: an ``nn.Module``
    class or instance is the ``torch`` learner's ``module``; another callable is the ``function``
    learner's ``fit(X, y, config, seed)``."""
    if isinstance(learner, (str, InnerLearner)):
        return learner, params
    torch = sys.modules.get("torch")  # the host does not import torch; a module object means it is loaded
    module_type = getattr(getattr(torch, "nn", None), "Module", None)
    if module_type is not None and (
        isinstance(learner, module_type) or (isinstance(learner, type) and issubclass(learner, module_type))
    ):
        return "torch", {"module": learner, **dict(params or {})}
    return "function", {"fit": learner, **dict(params or {})}


class _BilevelEstimator(SearchEstimator):
    _task_kind = "classification"

    _parameter_constraints: dict[str, list[Any]] = {
        "learner": [str, InnerLearner, callable],
        "objective": [str, OuterObjective],
        "optimizer": [str, OuterOptimizer],
        "search_space": [None, dict, ConfigurationSpace],
        "n_iter": [Interval(Integral, 1, None, closed="left")],
        "learner_params": [None, dict],
        "objective_params": [None, dict],
        "optimizer_params": [None, dict],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "cv": [None, Interval(Integral, 2, None, closed="left")],
        "timeout": [None, Interval(Real, 0, None, closed="neither")],
        "n_workers": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [None, Integral],
        "dask_address": [None, str],
        "checkpoint": [None, str, os.PathLike],
        "tracking": ["boolean"],
        "tracking_uri": [None, str],
        "experiment_name": [str],
        "run_name": [None, str],
        "log_model": ["boolean"],
        "log_plots": ["boolean"],
        "preprocess": [StrOptions({"auto", "none"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        learner: str | InnerLearner = "logistic",
        objective: str | OuterObjective = "val_loss",
        optimizer: str | OuterOptimizer[Any] = "random",
        *,
        search_space: Mapping[str, Any] | ConfigurationSpace | None = None,
        n_iter: int = 20,
        learner_params: Mapping[str, Any] | None = None,
        objective_params: Mapping[str, Any] | None = None,
        optimizer_params: Mapping[str, Any] | None = None,
        validation_fraction: float = 0.2,
        cv: int | None = None,
        timeout: float | None = None,
        n_workers: int = 1,
        n_jobs: int | None = None,
        dask_address: str | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        tracking: bool = True,
        tracking_uri: str | None = None,
        experiment_name: str = "automl-bilevel",
        run_name: str | None = None,
        log_model: bool = True,
        log_plots: bool = True,
        preprocess: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ) -> None:
        self.learner = learner
        self.objective = objective
        self.optimizer = optimizer
        self.search_space = search_space
        self.n_iter = n_iter
        self.learner_params = learner_params
        self.objective_params = objective_params
        self.optimizer_params = optimizer_params
        self.validation_fraction = validation_fraction
        self.cv = cv
        self.timeout = timeout
        self.n_workers = n_workers
        self.n_jobs = n_jobs
        self.dask_address = dask_address
        self.checkpoint = checkpoint
        self.tracking = tracking
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.log_model = log_model
        self.log_plots = log_plots
        self.preprocess = preprocess
        self.random_state = random_state
        self.verbose = verbose

    # -- data -----------------------------------------------------------------------------
    def _encode_targets(self, y: np.ndarray) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _check_split_sizes(self, y: np.ndarray) -> None:
        """Refuse, before any work, a ``cv`` or ``validation_fraction`` the data cannot honour: a
        validation set of fewer than 2 samples or without every class, or more folds than the smallest
        class has samples (never silently fewer folds)."""
        n = len(y)
        counts = np.bincount(y) if self._task_kind == "classification" else None
        if self.cv is not None:
            smallest = int(counts[counts > 0].min()) if counts is not None else n
            if self.cv > smallest:
                where = "the smallest class has" if counts is not None else "the data has"
                raise ValueError(
                    f"cv={self.cv} needs at least {self.cv} samples {'per class' if counts is not None else ''}"
                    f"; {where} {smallest}: use cv <= {smallest}".replace("  ", " ")
                )
            return
        n_val = int(math.ceil(float(self.validation_fraction) * n))  # as train_test_split rounds
        if n_val < 2 or n - n_val < 1:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} of {n} samples gives {n_val} validation "
                f"and {n - n_val} training samples; it needs at least 2 validation samples and 1 training sample"
            )
        if counts is not None:
            k = int((counts > 0).sum())
            if n_val < k or n - n_val < k:
                raise ValueError(
                    f"validation_fraction={self.validation_fraction} of {n} samples gives {n_val} validation and "
                    f"{n - n_val} training samples, fewer than one per class ({k} classes): every class needs a "
                    "sample on both sides; use a validation_fraction that gives at least that many, or more data"
                )

    def _splits(self, X: np.ndarray, y: np.ndarray, seed: int) -> list[Split]:
        stratify = self._task_kind == "classification" and np.bincount(y).min() >= 2
        if self.cv is not None:
            n_folds = min(self.cv, len(y)) if not stratify else min(self.cv, int(np.bincount(y).min()))
            if n_folds < 2:
                raise ValueError(f"cv={self.cv} needs at least 2 samples per class; got too few")
            kf = (StratifiedKFold if stratify else KFold)(n_folds, shuffle=True, random_state=seed)
            return [Split(X[tr], y[tr], X[va], y[va]) for tr, va in kf.split(X, y)]
        try:
            Xtr, Xva, ytr, yva = train_test_split(
                X, y, test_size=self.validation_fraction, random_state=seed, stratify=y if stratify else None
            )
        except ValueError:  # too few samples per class for a stratified split of that size
            Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=self.validation_fraction, random_state=seed)
        return [Split(Xtr, ytr, Xva, yva)]

    # -- fit ------------------------------------------------------------------------------
    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Run the outer optimizer on a validation split of (X, y), then refit on all of it.

        Ctrl-C stops the search: the estimator is refitted with the best configuration found so
        far, the tracking run ends as KILLED, and KeyboardInterrupt is raised again.
        """
        self._validate_params()
        nd = len(getattr(X, "shape", ())) > 2  # images, sequences: kept float32 (no float64 copy of an image set)
        if nd:
            self.preprocessor_ = None
        else:
            X = self._preprocess_fit(X)  # tables: categorical columns encoded, missing values imputed
        X, y = cast(
            tuple[np.ndarray, np.ndarray],
            validate_data(
                self,
                X,
                y,
                dtype=[np.float32, np.float64] if nd else np.float64,
                allow_nd=True,
                y_numeric=self._task_kind == "regression",
            ),
        )
        if X.shape[0] < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples, got {X.shape[0]} sample")
        _check_magnitude(X)
        y_enc, n_outputs = self._encode_targets(y)
        self._check_split_sizes(y_enc)
        seed = self._seed()
        self.input_shape_ = tuple(int(d) for d in X.shape[1:])
        task = Task(self._task_kind, int(np.prod(X.shape[1:])), n_outputs, self.input_shape_ if nd else ())

        registry = get_registry()
        learner = registry.make("learner", *_learner_and_params(self.learner, self.learner_params))
        if nd and not getattr(learner.obj, "accepts_nd", False):
            raise ValueError(
                f"learner {learner.name!r} takes 2-D input (n_samples, n_features), but X has shape "
                f"{X.shape}; use a torch learner (learner='torch' with your module, 'logistic' or 'mlp') "
                "for images and sequences, or flatten X"
            )
        objective = registry.make("objective", self.objective, self.objective_params)
        optimizer = registry.make("optimizer", self.optimizer, self.optimizer_params)
        check_compatible(task, learner, objective, optimizer)
        self._check_parallel(optimizer)
        inner: InnerLearner = learner.obj
        space = self._build_space(inner, task, seed)
        dry_run = getattr(inner, "check_input", None)  # the module's one-batch dry run, before any trial
        if dry_run is not None:
            dry_run(X, y_enc, task, dict(space.get_default_configuration()))
        checkpoint, seed = self._open_checkpoint(  # records checked against the space (file:line)
            self._fingerprint(X, y_enc, learner, objective, optimizer, space), seed, space
        )
        problem = BilevelProblem(learner.obj, objective.obj, space, task, self._splits(X, y_enc, seed), seed)
        context = replace(
            self._context(task, learner, objective, optimizer, space),
            resumed_trials=len(checkpoint.trials) if checkpoint else 0,
        )

        def conclude(result: SearchResult, run: Run) -> dict[str, Any]:
            best = result.best
            if best is None:
                if result.status == "KILLED":
                    raise KeyboardInterrupt
                errors = sorted({t.error for t in result.trials if t.error})
                if not result.trials:  # nothing ran: say why instead of "all 0 trials failed"
                    raise AllTrialsFailedError(
                        f"no trial finished: the search stopped by {result.stop_reason} "
                        f"(timeout={self.timeout}) before the first one ended"
                    )
                raise AllTrialsFailedError(
                    f"all {len(result.trials)} trials failed; errors: {'; '.join(errors[:3]) or 'non-finite objective'}"
                )
            self.best_params_ = dict(optimizer.obj.best_config() or best.config)
            self.best_value_ = float(best.value)
            self.best_score_ = -self.best_value_
            self.best_trial_ = best
            self.n_trials_ = len(result.trials)
            X_refit, y_refit, refit_params = self._refit_data(X, y_enc, problem.splits)
            with thread_policy(work=float(X.size)):  # the refit: threads sized to the work (runtime.py)
                refitted = optimizer.obj.refit(inner, X_refit, y_refit, refit_params, task=task, seed=seed)
                self.model_ = (
                    refitted
                    if refitted is not None
                    else inner.fit(X_refit, y_refit, refit_params, task=task, seed=seed)
                )
            for name, value in optimizer.obj.fitted_attributes().items():  # e.g. online's schedule_
                setattr(self, name, value)
            self.learner_ = learner.obj
            self.search_space_ = space
            return {"artifacts": inner.learned_components(self.best_params_)}

        self._search(
            context,
            registry,
            problem,
            optimizer,
            n_iter=self.n_iter,
            seed=seed,
            checkpoint=checkpoint,
            n_workers=self._n_workers(),
            conclude=conclude,
        )
        return self

    def _refit_data(
        self, X: np.ndarray, y: np.ndarray, splits: list[Split]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """What the refit trains on: all of (X, y) with the best parameters, except that tuned
        ``example_weights`` (one per training example of the split) refit on the split's training part
        followed by its validation part, with the tuned weights for the first and weight 1 for the
        second (as the hyper-cleaning recipe does)."""
        params = dict(self.best_params_)
        ex = params.get("example_weights")
        if ex is None or len(splits) != 1 or np.shape(ex) == (len(y),):
            return X, y, params
        split = splits[0]
        if np.shape(ex) != (len(split.y_train),):
            raise ValueError(
                f"example_weights has shape {np.shape(ex)}; neither the training part ({len(split.y_train)}) "
                f"nor all the data ({len(y)})"
            )
        params["example_weights"] = np.concatenate([np.asarray(ex, dtype=np.float64), np.ones(len(split.y_val))])
        return np.concatenate([split.X_train, split.X_val]), np.concatenate([split.y_train, split.y_val]), params

    def _n_workers(self) -> int:
        """``n_workers``, or ``n_jobs`` (scikit-learn's name for it; -1: one worker per CPU) when given."""
        if self.n_jobs is None:
            return int(self.n_workers)
        if self.n_jobs == 0:
            raise ValueError("n_jobs=0 means no worker; use n_jobs=1 (sequential), more, or -1 (one worker per CPU)")
        n = self.n_jobs if self.n_jobs > 0 else max((os.cpu_count() or 1) + 1 + self.n_jobs, 1)
        if self.n_workers not in (1, n):
            raise ValueError(
                f"n_jobs={self.n_jobs} and n_workers={self.n_workers} disagree; n_jobs is scikit-learn's "
                "name for n_workers (trials evaluated at once): give one of them"
            )
        return int(n)

    def _check_parallel(self, optimizer: Component) -> None:
        if self._n_workers() == 1 and self.dask_address is None:
            return
        if self.dask_address is not None:  # an unreachable scheduler fails here, before a run exists
            check_address(self.dask_address)
        if "parallel" not in optimizer.declared("capabilities"):
            raise ValueError(
                f"optimizer {optimizer.name!r} evaluates one proposal at a time (no 'parallel' capability); "
                "use n_workers=1 and no dask_address"
            )

    def _fingerprint(
        self,
        X: np.ndarray,
        y: np.ndarray,
        learner: Component,
        objective: Component,
        optimizer: Component,
        space: ConfigurationSpace,
    ) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: components, their settings, space, data."""
        names = {c.kind: c.name for c in (learner, objective, optimizer)}
        digest = hashlib.sha1(np.ascontiguousarray(X).tobytes() + np.ascontiguousarray(y).tobytes()).hexdigest()
        return {
            **names,
            "learner_params": plain(self.learner_params),
            "objective_params": plain(self.objective_params),
            "optimizer_params": plain(self.optimizer_params),
            "search_space": describe(space),
            "validation_fraction": self.validation_fraction,
            "cv": self.cv,
            "task": self._task_kind,
            "data": digest,
        }

    def _build_space(self, learner: InnerLearner, task: Task, seed: int) -> ConfigurationSpace:
        if self.search_space is None:
            return as_configspace(learner.config_space(task), seed=seed)
        space = as_configspace(self.search_space, seed=seed)
        check_names(space, learner.param_names(task), f"learner {self.learner!r}")
        return space

    def _context(
        self, task: Task, learner: Component, objective: Component, optimizer: Component, space: ConfigurationSpace
    ) -> RunContext:
        plugins = {c.kind: c.info() for c in (learner, objective, optimizer)}
        return RunContext(
            name=f"{type(self).__name__}-{plugins['learner']['name']}-{plugins['optimizer']['name']}",
            task=task.kind,
            learner=plugins["learner"]["name"],
            objective=plugins["objective"]["name"],
            optimizer=plugins["optimizer"]["name"],
            params=run_params(self),
            plugins=plugins,
            search_space=describe(space),
            n_iter=self.n_iter,
            tracking=TrackingSettings(
                self.tracking,
                self.tracking_uri,
                self.experiment_name,
                log_model=bool(self.log_model),
                progress=self.verbose > 0,
                run_name=self.run_name,
                log_plots=bool(self.log_plots),
                verbose=int(self.verbose),
            ),
            trials_are_steps=bool(optimizer.declared("trials_are_steps")),
        )

    # -- predict --------------------------------------------------------------------------
    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags: missing values are accepted (imputed) with ``preprocess='auto'``."""
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.preprocess == "auto"
        return tags

    def _preprocess_fit(self, X: ArrayLike) -> ArrayLike:
        """Categorical columns one-hot encoded and missing values imputed by a ColumnTransformer fitted
        here and kept as ``preprocessor_`` (``preprocess='auto'``, see :mod:`.tabular`)."""
        from automl_bilevel.frontends import tabular

        self.preprocessor_ = None
        if self.preprocess == "none":
            tabular.check_numeric(X, f"{type(self).__name__}.fit")
            return X
        if not tabular.needs_preprocessing(X):
            return X
        X = tabular.prepare_categoricals(X)
        preprocessor = tabular.make_preprocessor(X)
        out: np.ndarray = preprocessor.fit_transform(X)
        self.preprocessor_ = preprocessor
        return out

    def _check_X(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self, "model_")
        preprocessor = getattr(self, "preprocessor_", None)
        if preprocessor is not None:
            from automl_bilevel.frontends import tabular

            X = preprocessor.transform(tabular.prepare_categoricals(X))
        nd = len(getattr(self, "input_shape_", ())) > 1
        checked: np.ndarray = validate_data(
            self, X, dtype=[np.float32, np.float64] if nd else np.float64, allow_nd=True, reset=False
        )
        shape = getattr(self, "input_shape_", None)
        if shape is not None and tuple(checked.shape[1:]) != shape:
            raise ValueError(
                f"X has examples of shape {tuple(checked.shape[1:])}, but {type(self).__name__} was fitted "
                f"on examples of shape {shape}"
            )
        return checked

    def predict(self, X: ArrayLike) -> np.ndarray:
        checked = self._check_X(X)  # first: an unfitted estimator raises NotFittedError
        return self.model_.predict(checked)


class BilevelClassifier(ClassifierMixin, _BilevelEstimator):  # type: ignore[misc]  # untyped scikit-learn mixin
    """A classifier whose hyperparameters are found by a bilevel outer optimizer.

    Parameters
    ----------
    learner, objective, optimizer : str or instance
        Registered names (see ``automl-bilevel plugins``) or component instances.
    search_space : dict or ConfigurationSpace, optional
        Replaces the learner's default space (see :mod:`automl_bilevel.core.space`).
    n_iter : int
        Outer iterations: trials, outer steps or generations, as the optimizer counts them.
    learner_params, objective_params, optimizer_params : dict, optional
        Keyword arguments for the named component's factory.
    validation_fraction : float
        Held-out fraction for the outer objective (ignored when ``cv`` is set).
    cv : int, optional
        K-fold cross-validation for the outer objective (mean over folds).
    timeout : float, optional
        Wall-clock budget of the search in seconds.
    n_workers : int
        Trials evaluated at once. 1 (default): in this process, one after another. More: on Dask
        distributed, a LocalCluster of that many worker processes unless ``dask_address`` is given.
        The optimizer must be ``parallel`` (random, smac, es).
    n_jobs : int, optional
        scikit-learn's name for ``n_workers``, with the same meaning; -1 is one worker per CPU (-2
        all but one). ``None`` (default): ``n_workers`` decides.
    dask_address : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``) to evaluate trials on.
    checkpoint : str or path, optional
        A JSON-lines file the trials are appended to as they finish. Fitting again with the same
        file continues the search from them (same seed and split; they count toward ``n_iter``).
    tracking : bool
        Log the run to MLflow (needs the ``mlflow_tracking`` plugin).
    tracking_uri : str, optional
        Else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.
    experiment_name : str
        The MLflow experiment the runs go to.
    run_name : str, optional
        The MLflow parent run's name; default ``<Estimator>-<learner>-<optimizer>``. Fits of the same
        settings (inside ``GridSearchCV`` or ``cross_val_score``) are told apart by the tags
        ``automl_bilevel.settings_hash`` and ``automl_bilevel.fit``, and nest under a run the user opened.
    log_model : bool
        Log the refitted estimator as the run's MLflow model (default True).
    log_plots : bool
        Log the run's figures (history, importances, ...) as PNG files when it ends (default True).
    preprocess : {"auto", "none"}
        ``"auto"`` (default): a table with text/categorical columns or missing values (a pandas
        DataFrame, or an array with NaN) is one-hot encoded and imputed by a scikit-learn
        ``ColumnTransformer`` fitted on the training data and kept as ``preprocessor_``, part of the
        fitted (and logged) model; numeric data without missing values is used as it is. ``"none"``:
        refuse such data, naming the columns.
    random_state : int, RandomState or None
    verbose : int
        1 shows a progress bar with the best value so far on stderr; 2 also one line per trial.

    Attributes
    ----------
    best_params_, best_value_ (objective, lower is better), best_score_ (= -best_value_, greater is
    better as in scikit-learn), best_trial_, trials_, history_ (dict of columns), n_trials_,
    model_ (refitted on all data), classes_, mlflow_run_id_, run_info_, interrupted_; and what the
    optimizer adds (``OuterOptimizer.fitted_attributes``: ``online`` adds ``schedule_`` and
    ``online_model_``).
    """

    def _encode_targets(self, y: np.ndarray) -> tuple[np.ndarray, int]:
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            label = self.classes_[0].item() if isinstance(self.classes_[0], np.generic) else self.classes_[0]
            raise ValueError(
                f"BilevelClassifier needs samples of at least 2 classes in the data, but the data "
                f"contains only one class: {label!r}"
            )
        return y_enc.astype(np.int64), len(self.classes_)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The predicted class labels of the rows of ``X`` (in the labels of ``classes_``)."""
        pred = super().predict(X)
        labels: np.ndarray = self.classes_[pred]
        return labels

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities of the rows of ``X``, one column per class of ``classes_``; raises
        ``AttributeError`` when the fitted model has no ``predict_proba``."""
        X = self._check_X(X)
        # hasattr, not a runtime-checkable protocol: see components.has_predict_proba
        if not hasattr(self.model_, "predict_proba"):
            raise AttributeError(f"the fitted {type(self.model_).__name__} has no predict_proba")
        proba: np.ndarray = self.model_.predict_proba(X)
        return proba


class BilevelRegressor(RegressorMixin, _BilevelEstimator):  # type: ignore[misc]  # untyped scikit-learn mixin
    """A regressor whose hyperparameters are found by a bilevel outer optimizer.

    Same parameters and attributes as :class:`BilevelClassifier` (without ``classes_``); the
    default learner is ``mlp``.
    """

    _task_kind = "regression"

    def __init__(
        self,
        learner: str | InnerLearner = "mlp",
        objective: str | OuterObjective = "val_loss",
        optimizer: str | OuterOptimizer[Any] = "random",
        *,
        search_space: Mapping[str, Any] | ConfigurationSpace | None = None,
        n_iter: int = 20,
        learner_params: Mapping[str, Any] | None = None,
        objective_params: Mapping[str, Any] | None = None,
        optimizer_params: Mapping[str, Any] | None = None,
        validation_fraction: float = 0.2,
        cv: int | None = None,
        timeout: float | None = None,
        n_workers: int = 1,
        n_jobs: int | None = None,
        dask_address: str | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        tracking: bool = True,
        tracking_uri: str | None = None,
        experiment_name: str = "automl-bilevel",
        run_name: str | None = None,
        log_model: bool = True,
        log_plots: bool = True,
        preprocess: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(
            learner,
            objective,
            optimizer,
            search_space=search_space,
            n_iter=n_iter,
            learner_params=learner_params,
            objective_params=objective_params,
            optimizer_params=optimizer_params,
            validation_fraction=validation_fraction,
            cv=cv,
            timeout=timeout,
            n_workers=n_workers,
            n_jobs=n_jobs,
            dask_address=dask_address,
            checkpoint=checkpoint,
            tracking=tracking,
            tracking_uri=tracking_uri,
            experiment_name=experiment_name,
            run_name=run_name,
            log_model=log_model,
            log_plots=log_plots,
            preprocess=preprocess,
            random_state=random_state,
            verbose=verbose,
        )

    def _encode_targets(self, y: np.ndarray) -> tuple[np.ndarray, int]:
        return np.asarray(y, dtype=np.float64), 1
