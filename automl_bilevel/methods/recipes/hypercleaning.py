"""Data hyper-cleaning (Franceschi et al. 2017, §5.1): learn one weight in [0, 1] per training
example by hypergradients of the validation loss, so that mislabelled examples get weight 0.

    y_noisy, flipped = flip_labels(y_train, 0.5, 10, rng)
    res = hyperclean(X_train, y_noisy, X_val, y_val, outer_steps=100)
    scores = flag_scores(res.weights, flipped)        # precision / recall / F1 of weight < 0.5

``mnist_experiment`` is the paper's protocol on the first 20,000 MNIST training images: 5,000
train (half of the labels flipped) / 5,000 validation / 10,000 test, softmax regression, with the
simple baselines trained with the same inner optimizer and steps (no cleaning, validation only,
noisy train + validation, oracle).

The inner learner is any registered differentiable learner (the torch learners)
(softmax regression by default); the weights are projected onto [0, 1] after every Adam step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from ConfigSpace import ConfigurationSpace

from automl_bilevel.core.components import InnerLearner, Task
from automl_bilevel.core.events import RunFinished, RunStarted, TrialFinished
from automl_bilevel.core.problem import BilevelProblem, Split
from automl_bilevel.core.trials import Trial
from automl_bilevel.plugin.registry import get_registry
from automl_bilevel.run.engine import SearchResult, run_search
from automl_bilevel.run.lifecycle import Run

if TYPE_CHECKING:
    from automl_bilevel.run.checkpoint import Checkpoint


def flip_labels(
    y: npt.ArrayLike, fraction: float, n_classes: int, rng: np.random.Generator
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """Flip ``fraction`` of the labels to a uniformly random *wrong* class; returns (y_noisy, mask)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    y = np.asarray(y).copy()
    idx = rng.choice(len(y), size=int(round(fraction * len(y))), replace=False)
    y[idx] = (y[idx] + rng.integers(1, n_classes, size=len(idx))) % n_classes
    mask = np.zeros(len(y), dtype=bool)
    mask[idx] = True
    return y, mask


def flag_scores(weights: npt.ArrayLike, flipped: npt.NDArray[np.bool_], threshold: float = 0.5) -> dict[str, float]:
    """Precision, recall and F1 of flagging ``weight < threshold`` as a flipped label."""
    flagged = np.asarray(weights) < threshold
    tp = int(np.sum(flagged & flipped))
    precision = tp / max(int(flagged.sum()), 1)
    recall = tp / max(int(flipped.sum()), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"precision": precision, "recall": recall, "f1": f1, "n_flagged": int(flagged.sum())}


@dataclass
class CleaningResult:
    """What :func:`hyperclean` returns: the per-example ``weights`` after the last step, one record per
    outer step in ``history`` (``step``, ``val_loss``, ``hypergrad_norm``, ``mean_weight``, ``error``), the
    wall-clock ``seconds`` and the search's result."""

    weights: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    search: SearchResult | None = None


def hyperclean(
    X_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    X_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
    *,
    learner: InnerLearner | None = None,
    outer_steps: int = 100,
    outer_lr: float = 0.1,
    mode: str = "reverse",
    init: float = 1.0,
    seed: int = 0,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    run: Run | None = None,
    checkpoint: Checkpoint | None = None,
    **mode_options: Any,
) -> CleaningResult:
    """Per-example weights of the training set that minimise the validation cross-entropy of the
    learner trained on the weighted training loss: the ``hypergradient`` optimizer (Adam at
    ``outer_lr``, no clipping) on the ``example_weights`` of a bilevel problem, through the one loop
    (``run`` tracks it, ``checkpoint`` makes a later call continue exactly; ``callback(step, record)``
    sees every outer step). Returns the weights after the last step."""
    registry = get_registry()
    if learner is None:
        learner, _ = registry.make(
            "learner",
            "logistic",
            dict(
                optimizer="sgd",
                momentum=0.9,
                lr=0.1,
                weight_decay=1e-5,
                epochs=100,
                batch_size=int(np.shape(X_train)[0]),
            ),
        )
    n_classes = int(max(np.max(y_train), np.max(y_val))) + 1
    task = Task("classification", int(np.shape(X_train)[1]), n_classes)
    objective, _ = registry.make("objective", "val_loss")
    problem = BilevelProblem(
        learner,
        objective,
        ConfigurationSpace(),
        task,
        [Split(np.asarray(X_train), np.asarray(y_train), np.asarray(X_val), np.asarray(y_val))],
        seed,
    )
    opt, _ = registry.make(
        "optimizer",
        "hypergradient",
        dict(
            mode=mode,
            outer_lr=outer_lr,
            clip=None,
            tensor_hyperparameters=["example_weights"],
            tensor_init={"example_weights": init},
            **mode_options,
        ),
    )
    session = Run(listeners=[("callback", _StepCallback(callback))]) if callback is not None and run is None else None
    t0 = time.perf_counter()
    if session is not None:
        res = run_search(problem, opt, n_iter=int(outer_steps), seed=seed, run=session, checkpoint=checkpoint)
    else:
        res = run_search(problem, opt, n_iter=int(outer_steps), seed=seed, run=run, checkpoint=checkpoint)
    weights = opt.view.export(opt.vars)["example_weights"]
    return CleaningResult(weights, [_record(t) for t in res.trials], time.perf_counter() - t0, res)


def _record(trial: Trial) -> dict[str, Any]:
    return {
        "step": trial.number,
        "val_loss": trial.value,
        "hypergrad_norm": trial.metrics.get("hypergrad_norm"),
        "mean_weight": trial.metrics.get("hp.example_weights.mean"),
        "error": trial.error,
    }


class _StepCallback:
    """A run listener that hands each outer step to a plain callback."""

    def __init__(self, callback: Callable[[int, dict[str, Any]], None]) -> None:
        self.callback = callback

    def handle(self, event: RunStarted | TrialFinished | RunFinished) -> None:
        if isinstance(event, TrialFinished):
            self.callback(event.trial.number, _record(event.trial))


def mnist_experiment(
    n_train: int = 5000,
    n_val: int = 5000,
    n_test: int = 10000,
    outer_steps: int = 100,
    seed: int = 0,
    verbose: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, float], dict[str, float], CleaningResult]:
    """The MNIST protocol of the module docstring: returns (test accuracies, flag scores, result)."""
    from automl_bilevel.frontends.data import load_idx_dataset

    X, y = load_idx_dataset("mnist", "train", data_dir)
    X = X[: n_train + n_val + n_test].reshape(-1, 784).astype(np.float64) / 255.0
    y = y[: n_train + n_val + n_test]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    tr, va, te = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    y_noisy, flipped = flip_labels(y[tr], 0.5, 10, rng)

    # the same inner problem for every method: full-batch SGD with momentum, 100 steps
    def learner(n: int) -> InnerLearner:
        made: InnerLearner = get_registry().make(
            "learner",
            "logistic",
            dict(optimizer="sgd", momentum=0.9, lr=0.1, weight_decay=1e-5, epochs=100, batch_size=n),
        )[0]
        return made

    task = Task("classification", 784, 10)

    def test_acc(Xf: npt.NDArray[Any], yf: npt.NDArray[Any], weights: npt.NDArray[Any] | None = None) -> float:
        cfg = {} if weights is None else {"example_weights": weights}
        model = learner(len(Xf)).fit(Xf, yf, cfg, task=task, seed=seed)
        return float(np.mean(model.predict(X[te]) == y[te]))

    log = (
        (
            lambda s, r: (
                print(
                    f"  outer step {s:3d}  val_loss {r['val_loss']:.4f}  mean weight {r['mean_weight']:.3f}", flush=True
                )
                if s % 10 == 0
                else None
            )
        )
        if verbose
        else None
    )
    res = hyperclean(
        X[tr], y_noisy, X[va], y[va], learner=learner(n_train), outer_steps=outer_steps, seed=seed, callback=log
    )
    Xtv, ytv = np.concatenate([X[tr], X[va]]), np.concatenate([y_noisy, y[va]])
    keep = np.concatenate([~flipped, np.ones(n_val, bool)])
    results = {
        "no cleaning": test_acc(X[tr], y_noisy),
        "validation only": test_acc(X[va], y[va]),
        "noisy train + val": test_acc(Xtv, ytv),
        "hyper-cleaning": test_acc(Xtv, ytv, np.concatenate([res.weights, np.ones(n_val)])),
        "oracle": test_acc(Xtv[keep], ytv[keep]),
    }
    return results, flag_scores(res.weights, flipped), res
