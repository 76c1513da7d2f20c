"""Where the trials to plot come from: a fitted estimator, a list of trials, a checkpoint file, or an
MLflow run id (mlflow is imported only for the last)."""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automl_bilevel.core.trials import COMPLETE, FAILED, Trial

_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Trials:
    """The trials of one run, as the plots read them."""

    trials: tuple[Trial, ...]
    #: the outer objective's name (the y axis)
    objective: str = "objective"
    #: each trial is one outer step of a single trajectory (gradient methods, meta-training)
    steps: bool = False
    title: str = ""


def _steps_of(optimizer: Any) -> bool:
    """Whether a registered optimizer's trials are outer steps (False when it is not registered)."""
    if not isinstance(optimizer, str):
        return bool(getattr(optimizer, "trials_are_steps", False))
    from automl_bilevel.plugin.registry import get_registry

    try:
        return bool(getattr(get_registry().get("optimizer", optimizer).spec, "trials_are_steps", False))
    except Exception:
        return False


def _from_estimator(est: Any) -> Trials:
    trials = getattr(est, "trials_", None)
    if trials is None:
        raise ValueError(f"{type(est).__name__} is not fitted: plot it after fit()")
    meta = hasattr(est, "meta_iters")  # MetaLearnerClassifier: its trials are meta-training steps
    objective = getattr(est, "objective", "query_loss" if meta else "objective")
    optimizer = getattr(est, "optimizer", None)
    name = optimizer if isinstance(optimizer, str) else type(optimizer).__name__
    learner = getattr(est, "method" if meta else "learner", "")
    learner = learner if isinstance(learner, str) else type(learner).__name__
    steps = meta or (_steps_of(optimizer) if optimizer is not None else False)
    return Trials(
        tuple(trials),
        objective if isinstance(objective, str) else type(objective).__name__,
        steps,
        f"{learner} / {name}" if learner else name,
    )


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _from_checkpoint(path: Path) -> Trials:
    """The trials of a checkpoint (JSON lines, :mod:`automl_bilevel.run.journal`), read only."""
    from automl_bilevel.run.journal import FORMAT

    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    try:
        header = json.loads(lines[0])
        assert isinstance(header, dict) and header.get("format") == FORMAT
    except Exception:
        raise ValueError(f"{path} is not an automl_bilevel checkpoint file") from None
    trials: list[Trial] = []
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            if i == len(lines) or (i == len(lines) - 1 and not lines[-1]):
                break  # a last line cut short by a kill
            raise ValueError(f"{path}:{i}: corrupt record (not JSON)") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("config"), dict):
            raise ValueError(f"{path}:{i}: not a trial record")
        status = rec.get("status", COMPLETE)
        trials.append(
            Trial(
                len(trials),
                rec["config"],
                _number(rec.get("value")),
                status if status in (COMPLETE, FAILED) else FAILED,
                float(rec.get("duration") or 0.0),
                rec.get("budget"),
                dict(rec.get("metrics") or {}),
                rec.get("error"),
            )
        )
    fp = header.get("fingerprint") or {}
    optimizer = str(fp.get("optimizer", ""))
    return Trials(
        tuple(trials),
        str(fp.get("objective", "objective")),
        _steps_of(optimizer) if optimizer else False,
        f"{fp.get('learner', '')} / {optimizer}".strip(" /"),
    )


def _from_mlflow(run_id: str, tracking_uri: str | None) -> Trials:
    """The trials of an MLflow parent run: its ``trials.json`` artifact, else its child runs."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    tags = run.data.tags
    steps = "value" in run.data.metrics  # only runs whose trials are steps keep `value` on the parent
    title = f"{tags.get('automl_bilevel.learner', '')} / {tags.get('automl_bilevel.optimizer', '')}".strip(" /")
    objective = tags.get("automl_bilevel.objective", "objective")
    trials: list[Trial] = []
    try:
        import mlflow.artifacts

        records = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/trials.json")
    except Exception:
        records = None
    if isinstance(records, list):
        for rec in records:
            trials.append(
                Trial(
                    int(rec["number"]),
                    dict(rec.get("params") or {}),
                    _number(rec.get("value")),
                    rec.get("status", COMPLETE),
                    float(rec.get("duration") or 0.0),
                    rec.get("budget"),
                    {},
                    rec.get("error"),
                )
            )
    else:  # a run that did not end (killed): its children
        children = client.search_runs(
            [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=50000
        )
        for c in children:
            if "automl_bilevel.trial" not in c.data.tags:
                continue
            config: dict[str, Any] = {}
            for k, v in c.data.params.items():
                try:
                    config[k] = json.loads(v)
                except ValueError:
                    config[k] = v
            config.pop("budget", None)
            trials.append(
                Trial(
                    int(c.data.tags["automl_bilevel.trial"]),
                    config,
                    _number(c.data.metrics.get("value")),
                    COMPLETE if c.info.status == "FINISHED" else FAILED,
                    float(c.data.metrics.get("duration", 0.0)),
                )
            )
        trials.sort(key=lambda t: t.number)
    if not trials:
        raise ValueError(f"MLflow run {run_id} has no trials to plot (no trials.json, no trial child runs)")
    return Trials(tuple(trials), objective, steps, title)


def load(source: Any, *, tracking_uri: str | None = None) -> Trials:
    """The trials of ``source``: a fitted estimator (``trials_``), a sequence of :class:`Trial`, a
    checkpoint file (path), an MLflow run id (a 32-hex-digit string; the store is ``tracking_uri``, else
    ``MLFLOW_TRACKING_URI``), or :class:`Trials` itself."""
    if isinstance(source, Trials):
        return source
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        path = Path(text).expanduser()
        if path.is_file():
            return _from_checkpoint(path)
        if _RUN_ID.fullmatch(text):
            return _from_mlflow(text, tracking_uri)
        raise ValueError(
            f"plot source {text!r} is neither a checkpoint file nor an MLflow run id (32 hexadecimal digits)"
        )
    if isinstance(source, Sequence):
        bad = [type(t).__name__ for t in source if not isinstance(t, Trial)]
        if bad:
            raise TypeError(f"a list to plot must hold Trial records, got {bad[0]}")
        return Trials(tuple(source))
    if hasattr(source, "get_params"):
        return _from_estimator(source)
    raise TypeError(
        f"cannot plot a {type(source).__name__}: pass a fitted estimator, a list of trials, "
        "a checkpoint file or an MLflow run id"
    )


def is_number(value: Any) -> bool:
    """A scalar number (Python or numpy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_tensor(value: Any) -> bool:
    """A tensor hyperparameter's value as a trial records it: a list or an array."""
    return isinstance(value, (list, tuple, np.ndarray))


def numeric_params(trials: Sequence[Trial]) -> dict[str, list[float]]:
    """Scalar hyperparameters as numbers per trial (NaN where unset); categorical ones as codes in order
    of first appearance; tensors (lists) are left out."""
    names: dict[str, None] = {}
    for t in trials:
        names.update(dict.fromkeys(k for k, v in t.config.items() if not is_tensor(v) and not isinstance(v, Mapping)))
    out: dict[str, list[float]] = {}
    for name in names:
        codes: dict[Any, int] = {}
        col: list[float] = []
        for t in trials:
            v = t.config.get(name)
            if v is None:
                col.append(math.nan)
            elif is_number(v):
                col.append(float(v))
            else:
                col.append(float(codes.setdefault(v, len(codes))))
        if len({v for v in col if not math.isnan(v)}) > 1:  # a fixed value explains nothing
            out[name] = col
    return out


def categories(trials: Sequence[Trial], name: str) -> list[str] | None:
    """The category labels of a categorical hyperparameter in code order; None for a numeric one."""
    labels: dict[str, None] = {}
    for t in trials:
        v = t.config.get(name)
        if v is not None and not is_number(v) and not is_tensor(v):
            labels[str(v)] = None
    return list(labels) or None


def log_scaled(values: Sequence[float]) -> bool:
    """Positive values spanning more than two decades and crowded at the low end on a linear axis (the
    median under a tenth of the largest, as for a log-uniform sample) read better on a log axis."""
    v = [x for x in values if math.isfinite(x)]
    if not v or min(v) <= 0 or max(v) / min(v) <= 100:
        return False
    return float(np.median(v)) < 0.1 * max(v)
