"""Outer variables moved by gradients, inside the one search loop.

Every gradient-based outer method of the package (hypergradient HO, episodic meta-training with or
without L2G, hyper-representation, ML3, L2O meta-training, data hyper-cleaning) is the same outer
optimizer, :class:`GradientOuterOptimizer`, on a different :class:`DifferentiableProblem`:

- the problem says what its outer variables are (``outer_variables``: raw, unconstrained tensors;
  ``trainable`` names the ones gradients move, the others are *state* the problem carries from step
  to step, such as batch-norm statistics or an optimizee's weights), and how to evaluate them:
  ``value_and_grad(outer, step=k)`` returns the outer objective, its gradient on the trainable
  variables, metrics, and the new state. Everything random in it is drawn from ``(seed, step)``, so
  an evaluation is a pure function of the proposal and runs on a Dask worker like any other;
- the optimizer keeps the outer state (variables, Adam/SGD moments, step, best point), proposes one
  outer step at a time (``Proposal.info`` is an :class:`OuterPoint`), and in ``tell`` takes the step or,
  for a failed evaluation (a diverging inner run, a NaN), rejects it: back to the previous point,
  outer learning rate times ``backoff``. Its ``state_dict`` is saved with a checkpoint, so a resumed
  run continues exactly where it stopped.

A :class:`~automl_bilevel.core.problem.BilevelProblem` whose learner and objective are differentiable is
viewed as a :class:`HyperparameterProblem`: its differentiable hyperparameters (log-scale floats in
log space, bounded floats through a sigmoid, per-feature and per-example tensors) are the outer
variables and the hypergradient (:func:`automl_bilevel.gradient.hypergradient`, any mode) is the
gradient.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from automl_bilevel.core.components import (
    DifferentiableInnerProblem,
    DifferentiableLearner,
    DifferentiableObjective,
    OuterOptimizer,
    PerLayerLearner,
    Proposal,
)
from automl_bilevel.core.problem import BilevelProblem, GradientResult, Problem
from automl_bilevel.core.trials import Evaluation, Trial
from automl_bilevel.core.validation import POSITIVE, Integral, Interval, Real, StrOptions, validate_params

#: outer optimizers a gradient method can use on its variables
OUTER_OPTIMIZERS = ("adam", "sgd")

#: The settings of every gradient outer optimizer (scikit-learn's ``_parameter_constraints`` style).
GRADIENT_CONSTRAINTS: dict[str, list[Any]] = {
    "outer_lr": [POSITIVE],
    "outer_optimizer": [StrOptions(set(OUTER_OPTIMIZERS))],
    "clip": [POSITIVE, None],
    "patience": [Interval(Integral, 0, None, closed="left"), None],
    "min_delta": [Interval(Real, 0, None, closed="left")],
    "max_backoffs": [Interval(Integral, 0, None, closed="left")],
    "backoff": [Interval(Real, 0, 1, closed="right")],
}


@dataclass(frozen=True)
class OuterPoint:
    """What a gradient method's proposal carries: the outer variables to evaluate at, and the step."""

    step: int
    variables: Mapping[str, Tensor]
    outer_lr: float = math.nan  # the optimizer's state at this step, reported with the trial
    backoffs: int = 0


class DifferentiableProblem(ABC):
    """A bilevel problem whose outer objective is differentiable in named tensor outer variables.

    Subclasses are plain picklable objects (they are scattered to Dask workers once). ``seed`` is the
    run's seed; every random draw of ``value_and_grad(outer, step=k)`` comes from ``(seed, k)``.
    A metric ``val_value`` (lower is better) in a result, where the problem measures one (held-out
    tasks, meta-validation), is what the optimizer keeps its best point by; else the value.
    """

    seed: int = 0

    @abstractmethod
    def outer_variables(self) -> dict[str, Tensor]:
        """The initial outer variables (raw, unconstrained), by name."""

    @property
    def trainable(self) -> frozenset[str]:
        """Names of the variables gradients move (default: all)."""
        return frozenset(self.outer_variables())

    @abstractmethod
    def value_and_grad(self, outer: Mapping[str, Tensor], *, step: int) -> GradientResult:
        """The outer objective at ``outer`` and its gradient on the trainable variables. Raise (or
        return a non-finite value) for a failed step: the optimizer rejects it."""

    def project(self, outer: Mapping[str, Tensor]) -> None:  # noqa: B027 - optional hook, unconstrained by default
        """Put the variables back into their constraint set after a step (in place)."""

    def export(self, outer: Mapping[str, Tensor]) -> dict[str, Any]:
        """The configuration a trial records (and an estimator refits with) for these variables."""
        return {}

    def after_rejection(self, outer: Mapping[str, Tensor], step: int) -> dict[str, Tensor]:
        """New state after a rejected step (e.g. a fresh optimizee); default: unchanged."""
        return {}


# -- the hyperparameter view of a BilevelProblem --------------------------------------------------------
def _kinds(
    problem: BilevelProblem, tensor_hyperparameters: tuple[str, ...], tensor_init: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    from ConfigSpace import UniformFloatHyperparameter

    from automl_bilevel.gradient import Bounded, BoxTensor, Positive, PositiveTensor

    learner = cast(DifferentiableLearner, problem.learner)  # checked by HyperparameterProblem
    diff = dict(learner.differentiable_hyperparameters(problem.task))
    kinds: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for hp in problem.space.values():
        if isinstance(hp, UniformFloatHyperparameter) and hp.name in diff:
            init, lo, hi = float(hp.default_value), float(hp.lower), float(hp.upper)
            kinds[hp.name] = (
                Positive(init)
                if hp.log
                else Bounded(min(max(init, lo + 1e-6 * (hi - lo)), hi - 1e-6 * (hi - lo)), lo, hi)
            )
        else:
            fixed[hp.name] = hp.value if hasattr(hp, "value") else hp.default_value

    def start_value(name: str, default: Any, shape: tuple[int, ...], what: str) -> Any:
        """``tensor_init[name]`` checked against the shape the data gives (a scalar fills it)."""
        value = tensor_init.get(name, default)
        arr = np.asarray(value, dtype=np.float64) if not isinstance(value, Tensor) else value.detach().numpy()
        if arr.ndim and arr.shape != shape:
            raise ValueError(
                f"tensor_init[{name!r}] has shape {arr.shape}, but {name!r} needs {shape} ({what}); "
                "give a scalar or that many values"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"tensor_init[{name!r}] must be finite")
        return value

    for name in tensor_hyperparameters:
        kind = diff.get(name)
        if kind == "positive_per_feature":
            shape = (problem.task.n_features,)
            kinds[name] = PositiveTensor(start_value(name, 1e-3, shape, "one per feature"), shape=shape)
        elif kind == "positive_per_layer":  # one value per parameter tensor, starting at the scalar setting
            if not isinstance(problem.learner, PerLayerLearner):
                raise ValueError(f"{name!r} needs a learner that names its layers (layer_names(task, config))")
            layers = list(problem.learner.layer_names(problem.task, fixed))
            base = name.removesuffix("_per_layer")
            start = fixed.get(base, getattr(learner, "settings", {}).get(base, 1e-3))
            if base in kinds:
                start = kinds[base].init
            init = start_value(name, max(float(start), 1e-8), (len(layers),), "one per layer")
            kinds[name] = PositiveTensor(init, shape=(len(layers),), labels=tuple(layers))
        elif kind == "unit_per_example":
            if len(problem.splits) != 1:
                raise ValueError(f"{name!r} (one weight per training example) needs one split, not cv")
            shape = (len(problem.splits[0].y_train),)
            kinds[name] = BoxTensor(start_value(name, 1.0, shape, "one per training example"), shape=shape)
        elif kind == "vector":  # a network's weights (a loss network), free, starting where the learner has them
            start = np.asarray(problem.learner.vector_hyperparameters(problem.task)[name], dtype=np.float64)
            kinds[name] = BoxTensor(
                start_value(name, start, start.shape, "the learner's vector"),
                shape=start.shape,
                low=-math.inf,
                high=math.inf,
            )
        else:
            tensors = sorted(
                k for k, v in diff.items() if v.endswith(("per_feature", "per_example", "per_layer", "vector"))
            )
            why = getattr(learner, "why_not_differentiable", lambda task, name: None)(problem.task, name)
            if why:
                raise ValueError(f"tensor hyperparameter {name!r} is not available: {why}")
            raise ValueError(
                f"unsupported tensor hyperparameter {name!r} for learner "
                f"{type(learner).__name__}; it differentiates {tensors}"
            )
    if not kinds:
        raise ValueError(
            "no continuous hyperparameter to optimise: the space has no float the learner can "
            f"differentiate (differentiable: {sorted(diff)})"
        )
    return kinds, fixed


class HyperparameterProblem(DifferentiableProblem):
    """A :class:`~automl_bilevel.core.problem.BilevelProblem` seen by a gradient method: its differentiable
    hyperparameters are the outer variables, the mean validation objective over its splits the value,
    the hypergradient (``mode``: reverse, checkpoint, truncated, forward, implicit) the gradient."""

    def __init__(
        self,
        problem: BilevelProblem,
        *,
        tensor_hyperparameters: tuple[str, ...] = (),
        tensor_init: Mapping[str, Any] | None = None,
        inner_steps: int | None = None,
        mode: str = "reverse",
        truncate: int | None = None,
        checkpoint_every: int | None = None,
        solver: str = "cg",
        solver_iters: int = 100,
        budget: float | None = None,
    ) -> None:
        if not isinstance(problem.learner, DifferentiableLearner):
            raise TypeError(
                f"{type(problem.learner).__name__} does not implement the DifferentiableLearner "
                "protocol (differentiable, differentiable_hyperparameters)"
            )
        if not isinstance(problem.objective, DifferentiableObjective):
            raise TypeError(
                f"{type(problem.objective).__name__} does not implement the DifferentiableObjective "
                "protocol (loss_tensor)"
            )
        self.problem, self.seed = problem, problem.seed
        unknown = set(tensor_init or {}) - set(tensor_hyperparameters)
        if unknown:
            raise ValueError(f"tensor_init names {sorted(unknown)}, which are not tensor_hyperparameters")
        self.kinds, self.fixed = _kinds(problem, tuple(tensor_hyperparameters), dict(tensor_init or {}))
        why_not = getattr(problem.learner, "why_not_batched", None)  # forward mode batches steps with vmap
        reason = why_not(problem.task) if mode == "forward" and callable(why_not) else None
        if reason:
            raise ValueError(f"mode='forward' cannot run this learner: {reason}")
        self.inner_steps, self.budget = inner_steps, budget  # budget: the learner's multi-fidelity fraction
        self.how: dict[str, Any] = dict(
            mode=mode, truncate=truncate, every=checkpoint_every, solver=solver, iters=solver_iters
        )
        self._tasks: list[tuple[DifferentiableInnerProblem, Tensor, Tensor]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the built tasks (tensors); they are rebuilt where the problem is evaluated."""
        return {**self.__dict__, "_tasks": None}  # rebuilt where it is evaluated

    def tasks(self) -> list[tuple[DifferentiableInnerProblem, Tensor, Tensor]]:
        """Per split: the learner's inner problem and the validation data as tensors (built once)."""
        if self._tasks is None:
            p = self.problem
            self._tasks = []
            for split in p.splits:
                dt = cast(DifferentiableLearner, p.learner).differentiable(
                    split.X_train,
                    split.y_train,
                    self.fixed,
                    task=p.task,
                    seed=p.seed,
                    steps=self.inner_steps,
                    budget=self.budget,
                )
                self._tasks.append((dt, dt.tensor(split.X_val), dt.targets(split.y_val)))
        return self._tasks

    def outer_variables(self) -> dict[str, Tensor]:
        """The raw initial tensors of the differentiable hyperparameters (float32), by name."""
        return {k: kind.raw0().float() for k, kind in self.kinds.items()}

    def project(self, outer: Mapping[str, Tensor]) -> None:
        """Project each raw tensor into its kind's constraint set, in place."""
        with torch.no_grad():
            for k, kind in self.kinds.items():
                kind.project(outer[k])

    def export(self, outer: Mapping[str, Tensor]) -> dict[str, Any]:
        """The full configuration: the fixed hyperparameters plus the exported values of the outer variables."""
        return {**self.fixed, **{k: kind.export(outer[k].detach()) for k, kind in self.kinds.items()}}

    def value_and_grad(self, outer: Mapping[str, Tensor], *, step: int) -> GradientResult:
        """The mean validation objective over the splits at the raw variables ``outer``, and its gradient
        on them: the hypergradient of each split's inner problem (the configured mode), chained through the
        kinds' parametrisations. Metrics: each hyperparameter's value (``hp.<name>``, or ``hp.<name>.mean``
        for a tensor) and, for the implicit mode, the solver's residual and iterations."""
        from automl_bilevel.gradient import hypergradient

        p = self.problem
        raw = {k: outer[k].detach().clone().requires_grad_(True) for k in self.kinds}
        with torch.enable_grad():
            values = {k: kind.value(raw[k]) for k, kind in self.kinds.items()}
        total = 0.0
        g_values = {k: torch.zeros_like(v) for k, v in values.items()}
        info: dict[str, Any] = {}
        tasks = self.tasks()
        objective = cast(DifferentiableObjective, p.objective)  # checked in __init__
        for dt, Xv, yv in tasks:
            hp = {**dt.constants, **{k: v.detach() for k, v in values.items()}}

            def outer_loss(
                w: Tensor,
                hp_: Mapping[str, Tensor],
                dt: DifferentiableInnerProblem = dt,
                Xv: Tensor = Xv,
                yv: Tensor = yv,
            ) -> Tensor:
                return objective.loss_tensor(dt.outputs(w, Xv), yv, task=p.task)

            res = hypergradient(dt.dynamics, outer_loss, dt.z0, hp, alpha=float(hp["lr"]), **self.how)
            total += res.value / len(tasks)
            for k in g_values:
                g_values[k] += res.grads[k] / len(tasks)
            info = res.info
        names = list(self.kinds)
        with torch.enable_grad():
            got = torch.autograd.grad(
                [values[k] for k in names],
                [raw[k] for k in names],
                [g_values[k].to(values[k].dtype) for k in names],
                allow_unused=True,
            )
        grads = {
            k: (g if g is not None else torch.zeros_like(raw[k])).detach() for k, g in zip(names, got, strict=True)
        }
        metrics = {
            (f"hp.{k}" if values[k].ndim == 0 else f"hp.{k}.mean"): float(values[k].detach().mean()) for k in names
        }
        for k in names:  # per-layer values are logged per layer, by parameter name
            for label, v in zip(getattr(self.kinds[k], "labels", ()), values[k].detach().reshape(-1), strict=False):
                metrics[f"hp.{k}.{label}"] = float(v)
        for key in ("residual", "iterations"):
            if key in info:
                metrics[f"solver_{key}"] = float(info[key])
        return GradientResult(float(total), grads, metrics)


def gradient_view(problem: Problem, options: Mapping[str, Any]) -> DifferentiableProblem:
    """``problem`` as a :class:`DifferentiableProblem`: itself if it is one, else the hyperparameter view
    of a bilevel problem (cached on the problem, so each process builds it once)."""
    if isinstance(problem, DifferentiableProblem):
        return problem
    if not isinstance(problem, BilevelProblem):
        raise TypeError(
            f"a gradient optimizer needs a DifferentiableProblem or a BilevelProblem, got {type(problem).__name__}"
        )
    cache: dict[str, HyperparameterProblem] = problem.__dict__.setdefault("_views", {})
    key = repr(sorted(options.items()))
    if key not in cache:
        cache[key] = HyperparameterProblem(problem, **options)
    return cache[key]


# -- the optimizer ---------------------------------------------------------------------------------------
def _clone(vars_: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in vars_.items()}


def evaluate_point(problem: Problem, proposal: Proposal, options: Mapping[str, Any]) -> Evaluation:
    """Evaluate one gradient proposal (stateless: a pure function of the problem and the proposal)."""
    point = proposal.info
    if not isinstance(point, OuterPoint):
        raise TypeError(f"a gradient proposal carries an OuterPoint, got {type(point).__name__}")
    dp = gradient_view(problem, options)
    res = dp.value_and_grad(point.variables, step=point.step)
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in res.grads.values()))
    if not math.isfinite(norm):
        raise FloatingPointError("the outer gradient is not finite")
    if not math.isfinite(res.value):
        raise FloatingPointError(f"the outer objective is {res.value}")
    metrics = {"hypergrad_norm": norm, "outer_lr": point.outer_lr, "backoffs": point.backoffs, **res.metrics}
    return Evaluation(float(res.value), metrics, extra=res)


class GradientOuterOptimizer(OuterOptimizer[Any]):
    """Adam or SGD on the outer variables of a :class:`DifferentiableProblem`, one outer step per trial.

    ``options`` build the problem's gradient view (for a bilevel problem: the hypergradient mode and
    its settings). A failed step is rejected: the variables return to the previous point and the outer
    learning rate is multiplied by ``backoff``; more than ``max_backoffs`` failures in a row stop the
    search. ``patience`` stops after that many steps without improving by ``min_delta``.
    """

    def __init__(
        self,
        *,
        outer_lr: float = 0.1,
        outer_optimizer: str = "adam",
        clip: float | None = 10.0,
        patience: int | None = None,
        min_delta: float = 0.0,
        max_backoffs: int = 8,
        backoff: float = 0.5,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        validate_params(
            type(self).__name__,
            GRADIENT_CONSTRAINTS,
            dict(
                outer_lr=outer_lr,
                outer_optimizer=outer_optimizer,
                clip=clip,
                patience=patience,
                min_delta=min_delta,
                max_backoffs=max_backoffs,
                backoff=backoff,
            ),
        )
        self.outer_lr, self.outer_optimizer, self.clip = float(outer_lr), outer_optimizer, clip
        self.patience, self.min_delta = patience, float(min_delta)
        self.max_backoffs, self.backoff = int(max_backoffs), float(backoff)
        self.options = dict(options or {})

    # -- set-up ---------------------------------------------------------------------------------------
    def setup(self, problem: Problem, seed: int) -> None:
        """Build the problem's gradient view and the outer state: the variables (trainable ones as leaves of
        a fresh torch optimizer), step 0, no best point yet."""
        super().setup(problem, seed)
        self.view = gradient_view(problem, self.options)
        self.vars: dict[str, Tensor] = {k: v.detach().clone() for k, v in self.view.outer_variables().items()}
        trainable = self.view.trainable
        for k in trainable:
            self.vars[k].requires_grad_(True)
        self.opt = self.make_torch_optimizer([self.vars[k] for k in sorted(trainable)])
        self.step = 0
        self.prev = _clone(self.vars)
        self.best_value, self.best_step = math.inf, -1
        self.best_vars: dict[str, Tensor] | None = None
        self.since_best, self.backoffs, self.failures_in_row = 0, 0, 0
        self.selects_by_val, self.pending = False, False

    def make_torch_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        """The torch optimizer that moves the trainable variables (override for another rule); its
        ``state_dict`` is saved with a checkpoint."""
        if self.outer_optimizer == "adam":
            return torch.optim.Adam(params, lr=self.outer_lr)
        return torch.optim.SGD(params, lr=self.outer_lr)

    # -- ask / evaluate / tell ------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Proposal]:
        """One proposal for the current outer step (an :class:`OuterPoint` in ``info``, the exported
        configuration in ``config``); an empty list while that step's evaluation is still out."""
        if self.pending:  # the next step needs this one's gradient
            return []
        self.pending = True
        return [
            Proposal(
                self.view.export(self.vars),
                info=OuterPoint(self.step, _clone(self.vars), self.opt.param_groups[0]["lr"], self.backoffs),
            )
        ]

    def evaluate(self, problem: Problem, proposal: Proposal) -> Evaluation:
        """Evaluate the proposal's outer point: :func:`evaluate_point` with this optimizer's options."""
        return evaluate_point(problem, proposal, self.options)

    def remote_evaluator(self) -> Callable[[Any, Proposal], Evaluation]:
        """A picklable :func:`evaluate_point` bound to this optimizer's options, for Dask workers."""
        return functools.partial(evaluate_point, options=dict(self.options))  # picklable, for Dask workers

    def _load(self, values: Mapping[str, Tensor]) -> None:
        """Set the variables in place (trainable ones stay the optimizer's leaves)."""
        with torch.no_grad():
            for k, v in values.items():
                if k in self.view.trainable:
                    self.vars[k].copy_(v)
                else:
                    self.vars[k] = v.detach().clone()

    def _apply_state(self, state: Mapping[str, Tensor]) -> None:
        trained = set(state) & self.view.trainable
        if trained:
            raise ValueError(f"a problem returned new state for trainable variables {sorted(trained)}")
        self._load(state)

    def tell(self, proposal: Proposal, trial: Trial) -> None:
        """Take the outer step with the trial's gradient (its norm clipped to ``clip``), then project and
        apply the problem's new state; keep the best point. A failed trial is rejected: back to the previous
        point (with the problem's ``after_rejection`` state) and the outer learning rate times ``backoff``."""
        self.pending = False
        self.step += 1
        if not trial.ok:  # reject: back to the previous point, smaller outer steps
            self._load(self.prev)
            self._apply_state(self.view.after_rejection(self.vars, trial.number))
            for group in self.opt.param_groups:
                group["lr"] *= self.backoff
            self.backoffs += 1
            self.failures_in_row += 1
            return
        self.failures_in_row = 0
        res: GradientResult = trial.extra
        has_val = "val_value" in trial.metrics
        if has_val and not self.selects_by_val:  # from the first validated step on, select by validation
            self.selects_by_val, self.best_value, self.best_vars = True, math.inf, None
        if has_val or not self.selects_by_val:
            score = float(trial.metrics["val_value"]) if has_val else trial.value
            if score < self.best_value - self.min_delta:
                self.best_value, self.best_vars, self.best_step = score, _clone(proposal.info.variables), trial.number
                self.since_best = 0
            else:
                self.since_best += 1
        self.prev = _clone(self.vars)
        for k in self.view.trainable:
            self.vars[k].grad = res.grads[k].to(self.vars[k].dtype)
        params = [self.vars[k] for k in sorted(self.view.trainable)]
        if self.clip:
            torch.nn.utils.clip_grad_norm_(params, self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.view.project(self.vars)
        self._apply_state(res.state)

    def should_stop(self) -> bool:
        """Whether to stop: more than ``max_backoffs`` rejected steps in a row, or ``patience`` steps
        without improvement."""
        if self.failures_in_row > self.max_backoffs:
            return True
        return self.patience is not None and self.since_best >= self.patience

    # -- results --------------------------------------------------------------------------------------
    def best_variables(self) -> dict[str, Tensor]:
        """The outer variables of the best evaluated point (by ``val_value`` where the problem measures
        one, else by value); the current ones if no step completed."""
        return _clone(self.best_vars if self.best_vars is not None else self.vars)

    def best_config(self) -> dict[str, Any] | None:
        """The exported configuration of the best point, or ``None`` when no step completed."""
        if self.best_vars is None:
            return None
        return self.view.export(self.best_vars)

    # -- checkpoint -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The outer state: variables, previous point, torch optimizer state, step, best point and
        the stopping counters."""
        return {
            "vars": _clone(self.vars),
            "prev": _clone(self.prev),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "best_value": self.best_value,
            "best_vars": None if self.best_vars is None else _clone(self.best_vars),
            "best_step": self.best_step,
            "since_best": self.since_best,
            "backoffs": self.backoffs,
            "failures_in_row": self.failures_in_row,
            "selects_by_val": self.selects_by_val,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the outer state saved by :meth:`state_dict`; raises ``ValueError`` when it holds
        other variables than the problem's."""
        missing = set(self.vars) ^ set(state["vars"])
        if missing:
            raise ValueError(f"the saved outer state has other variables (differs in {sorted(missing)})")
        self._load(state["vars"])
        self.prev = _clone(state["prev"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.best_value, self.best_step = int(state["step"]), float(state["best_value"]), state["best_step"]
        self.best_vars = None if state["best_vars"] is None else _clone(state["best_vars"])
        self.since_best, self.backoffs = int(state["since_best"]), int(state["backoffs"])
        self.failures_in_row = int(state["failures_in_row"])
        self.selects_by_val = bool(state["selects_by_val"])
        self.pending = False

    def replay(self, trials: list[Trial]) -> None:
        """Refuse trials to replay: a gradient method resumes only from its saved outer state
        (``ValueError`` when there are trials)."""
        if trials:
            raise ValueError(
                "a gradient method resumes from its saved outer state, not by replaying trials; "
                "the checkpoint has trials but no state file"
            )


__all__ = [
    "DifferentiableProblem",
    "GradientOuterOptimizer",
    "GradientResult",
    "HyperparameterProblem",
    "OuterPoint",
    "evaluate_point",
    "gradient_view",
]
