"""Experiment files (TOML): dataset, learner, objective, optimizer, budget, tracking.

See ``automl_bilevel/frontends/experiments/default.toml`` for the shape. Unknown sections or keys are an
error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.model_selection import train_test_split

from automl_bilevel.frontends.data import load_dataset

if TYPE_CHECKING:  # pragma: no cover
    from automl_bilevel.frontends.estimators import BilevelClassifier, BilevelRegressor

SCHEMA = {
    "name": None,
    "data": {"dataset", "test_size", "data_dir", "max_samples", "target"},
    "estimator": {
        "task",
        "learner",
        "objective",
        "optimizer",
        "n_iter",
        "timeout",
        "validation_fraction",
        "cv",
        "n_workers",
        "dask_address",
        "checkpoint",
        "random_state",
        "learner_params",
        "objective_params",
        "optimizer_params",
    },
    "search_space": None,
    "tracking": {"enabled", "uri", "experiment", "run_name", "log_model", "log_plots"},
}


MAX_NAME = 500  # MLflow's longest experiment name


class ExperimentError(ValueError):
    """The experiment file is malformed."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# (check, what it must be) per key: a value of the wrong type is an error, never silently coerced
_STR = (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
_TABLE = (lambda v: isinstance(v, dict), "a table")
TYPES: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "data": {
        "dataset": _STR,
        "test_size": (lambda v: _is_num(v) and 0 < v < 1, "a number between 0 and 1 (exclusive)"),
        "data_dir": _STR,
        "max_samples": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "target": _STR,
    },
    "estimator": {
        "task": (lambda v: v in ("classification", "regression"), "'classification' or 'regression'"),
        "learner": _STR,
        "objective": _STR,
        "optimizer": _STR,
        "n_iter": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "timeout": (lambda v: _is_num(v) and v > 0, "a number of seconds > 0"),
        "validation_fraction": (lambda v: _is_num(v) and 0 < v < 1, "a number between 0 and 1 (exclusive)"),
        "cv": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
        "n_workers": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "dask_address": _STR,
        "checkpoint": _STR,
        "random_state": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "learner_params": _TABLE,
        "objective_params": _TABLE,
        "optimizer_params": _TABLE,
    },
    "tracking": {
        "enabled": (lambda v: isinstance(v, bool), "true or false (a TOML boolean, not a string)"),
        "uri": _STR,
        "experiment": (
            lambda v: isinstance(v, str) and v.strip() != "" and len(v) <= MAX_NAME,
            f"a non-empty string of at most {MAX_NAME} characters (MLflow's limit)",
        ),
        "run_name": _STR,
        "log_model": (lambda v: isinstance(v, bool), "true or false (a TOML boolean, not a string)"),
        "log_plots": (lambda v: isinstance(v, bool), "true or false (a TOML boolean, not a string)"),
    },
}


@dataclass
class Experiment:
    """One experiment file: its ``name``, the ``[data]``, ``[estimator]``, ``[search_space]`` and
    ``[tracking]`` tables, and where it was read from (``source``). Build it with :meth:`load` or
    :meth:`from_dict`, run it with :meth:`run`."""

    name: str
    data: dict[str, Any]
    estimator: dict[str, Any]
    search_space: dict[str, Any] | None
    tracking: dict[str, Any]
    source: str

    @classmethod
    def load(cls, path: str | Path | None = None) -> Experiment:
        """Read and check the TOML experiment file at ``path`` (default: the embedded digits experiment);
        raises ``ExperimentError`` for a missing file, invalid TOML or an invalid experiment."""
        if path is None:
            text = resources.files("automl_bilevel").joinpath("frontends/experiments/default.toml").read_text()
            source = "embedded default (digits)"
        else:
            p = Path(path)
            if not p.is_file():
                raise ExperimentError(f"experiment file {str(p)!r} does not exist")
            text, source = p.read_text(), str(p)
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ExperimentError(f"{source}: not valid TOML: {exc}") from exc
        return cls.from_dict(raw, source)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> Experiment:
        """An experiment from the parsed TOML ``raw`` (``source`` names it in errors); raises
        ``ExperimentError`` for unknown sections or keys, a missing dataset or a value of the wrong type."""
        unknown = set(raw) - set(SCHEMA)
        if unknown:
            raise ExperimentError(f"{source}: unknown section(s) {sorted(unknown)}; allowed: {sorted(SCHEMA)}")
        for section, keys in SCHEMA.items():
            if keys is None or section not in raw:
                continue
            if not isinstance(raw[section], dict):
                raise ExperimentError(f"{source}: [{section}] must be a table")
            bad = set(raw[section]) - keys
            if bad:
                raise ExperimentError(f"{source}: unknown key(s) {sorted(bad)} in [{section}]; allowed: {sorted(keys)}")
        if "dataset" not in raw.get("data", {}):
            raise ExperimentError(f"{source}: [data] needs a 'dataset'")
        for section, types in TYPES.items():
            for key, value in raw.get(section, {}).items():
                ok, what = types[key]
                if not ok(value):
                    raise ExperimentError(f"{source}: [{section}] {key} must be {what}, got {value!r}")
        if "name" in raw and not _STR[0](raw["name"]):
            raise ExperimentError(f"{source}: name must be a non-empty string, got {raw['name']!r}")
        if "name" in raw and len(raw["name"]) > MAX_NAME:
            raise ExperimentError(
                f"{source}: name is {len(raw['name'])} characters long; at most {MAX_NAME} (MLflow's limit)"
            )
        if "search_space" in raw and not isinstance(raw["search_space"], dict):
            raise ExperimentError(f"{source}: [search_space] must be a table")
        return cls(
            name=str(raw.get("name", Path(source).stem)),
            data=dict(raw["data"]),
            estimator=dict(raw.get("estimator", {})),
            search_space=raw.get("search_space"),
            tracking=dict(raw.get("tracking", {})),
            source=source,
        )

    def build_estimator(
        self, task: str, *, verbose: int = 1, overrides: dict[str, Any] | None = None
    ) -> BilevelClassifier | BilevelRegressor:
        """The estimator the experiment describes for ``task`` (``classification``: a
        :class:`BilevelClassifier`, else a :class:`BilevelRegressor`), with its tracking settings, ``verbose``
        and the ``overrides`` (estimator parameters) applied."""
        from automl_bilevel.frontends.estimators import BilevelClassifier, BilevelRegressor

        params = {k: v for k, v in self.estimator.items() if k != "task"}
        params.update(
            search_space=self.search_space,
            verbose=verbose,
            tracking=bool(self.tracking.get("enabled", True)),
            tracking_uri=self.tracking.get("uri"),
            experiment_name=self.tracking.get("experiment", "automl-bilevel"),
            run_name=self.tracking.get("run_name"),
            log_model=self.tracking.get("log_model", True),
            log_plots=self.tracking.get("log_plots", True),
        )
        params.update(overrides or {})
        if task == "classification":
            return BilevelClassifier(**params)
        return BilevelRegressor(**params)

    def _check_data(self, y: Any, task: str) -> None:
        """The loaded data can make the test split and the task asked for, or a clear error."""
        from sklearn.utils.multiclass import type_of_target

        name, n = self.data["dataset"], len(y)
        y = np.asarray(y)
        distinct = len(np.unique(y))
        if task == "classification" and (
            type_of_target(y) == "continuous" or (np.issubdtype(y.dtype, np.floating) and distinct > n / 4)
        ):
            raise ExperimentError(
                f"task = 'classification' but dataset {name!r} has a continuous target "
                f"({distinct} distinct values in {n} samples): use task = 'regression'"
            )
        test_size = float(self.data.get("test_size", 0.25))
        n_test = int(np.ceil(test_size * n))
        k = len(np.unique(y)) if task == "classification" else 1
        need = max(2, k)
        if n_test < need or n - n_test < 2 * need:
            what = f"max_samples = {self.data['max_samples']}" if "max_samples" in self.data else f"{n} samples"
            raise ExperimentError(
                f"[data] {what} is too few for dataset {name!r}: a test split of {test_size} leaves {n_test} test "
                f"and {n - n_test} training samples; with {k} class(es) it needs at least {need} test and "
                f"{2 * need} training samples (raise max_samples)"
            )

    def run(self, *, verbose: int = 1, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Load data, fit on the train split, score on the test split; a results dict.

        On Ctrl-C the partial results are returned with ``interrupted=True``.
        """
        X, y, task = load_dataset(
            self.data["dataset"],
            self.data.get("data_dir"),
            self.data.get("max_samples"),
            seed=int(self.estimator.get("random_state") or 0),
            target=self.data.get("target"),
        )
        task = self.estimator.get("task", task)
        self._check_data(y, task)
        strat = y if task == "classification" else None
        Xtr, Xte, ytr, yte = train_test_split(
            X,
            y,
            test_size=float(self.data.get("test_size", 0.25)),
            random_state=int(self.estimator.get("random_state") or 0),
            stratify=strat,
        )
        est = self.build_estimator(task, verbose=verbose, overrides=overrides)
        t0, interrupted = time.perf_counter(), False
        try:
            est.fit(Xtr, ytr)
        except KeyboardInterrupt:
            interrupted = True
            if not hasattr(est, "model_"):
                raise
        metric = "accuracy" if task == "classification" else "r2"
        return {
            "experiment": self.name,
            "source": self.source,
            "dataset": self.data["dataset"],
            "n_train": int(len(Xtr)),
            "n_test": int(len(Xte)),
            "task": task,
            "learner": est.learner if isinstance(est.learner, str) else type(est.learner).__name__,
            "objective": est.objective if isinstance(est.objective, str) else type(est.objective).__name__,
            "optimizer": est.optimizer if isinstance(est.optimizer, str) else type(est.optimizer).__name__,
            "n_trials": est.n_trials_,
            "n_failed": int(sum(s != "COMPLETE" for s in est.history_["status"])),
            "stop_reason": est.stop_reason_,
            "best_value": est.best_value_,
            "best_params": {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in est.best_params_.items()},
            "best_budget": est.best_trial_.budget,
            "test_metric": metric,
            "test_score": float(est.score(Xte, yte)),
            "seconds": time.perf_counter() - t0,
            "mlflow_run_id": est.mlflow_run_id_,
            "mlflow_tracking_uri": est.run_info_.get("mlflow_tracking_uri"),
            "interrupted": interrupted,
            # the best five at the highest budget first (multi-fidelity runs one configuration at several)
            "top_trials": sorted(
                (
                    {"number": n, "value": v, "budget": b, "params": p}
                    for n, v, b, p, s in zip(
                        est.history_["number"],
                        est.history_["value"],
                        est.history_["budget"],
                        est.history_["params"],
                        est.history_["status"],
                        strict=False,
                    )
                    if s == "COMPLETE"
                ),
                key=lambda r: (-(r["budget"] or 1.0), r["value"]),
            )[:5],
        }
