"""The ``online`` outer optimizer: tune the hyperparameters *while* training, in one run.

Real-time hyperparameter optimisation (RTHO, Franceschi et al. 2017): the learner trains once, for its
full length (T inner steps). Every ``every`` = K steps the training pauses, the hypergradient of the
validation objective at the current weights is taken, λ moves by one Adam or SGD step, and training
continues from where it is with the new values. Two hypergradients (``mode``):

- ``"truncated"``: reverse mode through the last ``truncate`` steps of the segment, the state before them
  held constant (:func:`automl_bilevel.gradient.online.segment_reverse`). The default, a quarter of the
  segment (⌈K/4⌉), keeps the whole run at about 1.6 plain runs (an unrolled step with its backward pass
  costs about 3.5 plain steps); ``truncate=every`` unrolls the whole segment (about 3.5 plain runs);
- ``"forward"``: forward-mode tangents dw/dλ carried across the whole run, through every change of λ
  (:class:`automl_bilevel.gradient.online.ForwardCarry`): memory |z|·|λ|, flat in T.

The validation objective is the problem's differentiable objective on a mini-batch of ``val_batch``
examples (1000 by default) drawn afresh for each update (from the seed and the update's number), or on
the whole validation split (``val_batch=None``, or a split no larger than ``val_batch``).

The tuned hyperparameters are those of ``hypergradient``: every float of the search space the learner
differentiates (log-scale floats in log space, bounded ones through a sigmoid, starting at the space's
defaults), plus ``tensor_hyperparameters`` (``l2_per_feature``, and per-layer ones where the learner
declares them). Hyperparameters of the learner's own default space that it cannot differentiate
(``hidden_units``, ``activation``) are held at the space's defaults; one the user put into the space is
refused (use ``hybrid`` with ``inner="online"`` to search it by a black box around online runs). As
everywhere in the package, the search space's values win over ``learner_params``: to hold
``hidden_units`` at 8, make it a constant of the space (``search_space={..., "hidden_units": 8}``).

In the one search loop each update is a trial: its configuration the values the segment trained with,
its value the validation objective after the segment. So a run is tracked (a metric step per update),
shows progress, honours ``timeout`` and Ctrl-C, and resumes from a checkpoint exactly: the inner weights,
the inner optimizer's slots (its state vector ``z``), the forward tangents, the outer variables and the
outer optimizer's state are this optimizer's outer state, saved as plain tensors with every trial.
A segment that diverges (non-finite weights, objective or hypergradient) is rolled back: the weights stay
where the segment started, λ goes back to the values of the last good segment, and the outer learning
rate is multiplied by ``backoff``; more than ``max_backoffs`` failures in a row stop the run.

The result is a schedule. ``best_config()`` (the estimator's ``best_params_``) holds the final values;
the estimator's ``schedule_`` the values of every update (``start``/``stop``: the inner steps it covered)
and ``online_model_`` the model the online run itself trained. The refit on train + validation replays
the schedule (``refit_with="schedule"``, the default: each update's values over the same fraction of the
longer run) or trains with the final values (``refit_with="final"``).
"""

from __future__ import annotations

import bisect
import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from automl_bilevel import OptimizerSpec, hookimpl
from automl_bilevel.core.components import (
    DifferentiableInnerProblem,
    DifferentiableLearner,
    DifferentiableObjective,
    FittedModel,
    InnerLearner,
    OuterOptimizer,
    Proposal,
    Task,
)
from automl_bilevel.core.trials import Evaluation, Trial
from automl_bilevel.gradient.online import ForwardCarry, piecewise_run, segment_reverse
from automl_bilevel.gradient.outer import OUTER_OPTIMIZERS, _kinds

#: how the hypergradient of a segment is computed
ONLINE_MODES = ("truncated", "forward")
#: what the refit on train + validation trains with
REFIT_WITH = ("schedule", "final")
#: updates per run when ``every`` is not given (fewer when the trial budget ``n_iter`` is smaller)
DEFAULT_UPDATES = 50
#: forward mode's tangents are refused above this size (bytes); ``max_tangent_bytes`` overrides it
TANGENT_LIMIT = 2 * 1024**3

_WHY_NOT_MODE = {
    "reverse": "reverse mode differentiates a whole run from its start; online moves λ during one run "
    "(use 'truncated', or the 'hypergradient' optimizer for full reverse mode)",
    "checkpoint": "checkpointed reverse mode differentiates a whole run from its start (use 'truncated')",
    "implicit": "implicit differentiation needs converged inner weights, which a run being tuned has not "
    "(use 'truncated' or 'forward')",
}


@dataclass(frozen=True)
class OnlinePoint:
    """What an online proposal carries: the segment to train and everything it starts from."""

    update: int  # accepted updates so far (the segment's number in the schedule)
    start: int  # first inner step of the segment
    stop: int  # one past its last inner step
    variables: Mapping[str, Tensor]  # raw outer variables the segment trains with
    z: Tensor  # the inner state (weights and optimizer slots) at ``start``
    Z: Tensor | None  # forward mode: tangents dz/dλ at ``start``
    outer_lr: float
    backoffs: int


@dataclass(frozen=True)
class Segment:
    """What evaluating a segment hands to ``tell``: the new state and the hypergradient on the raw variables."""

    z: Tensor
    Z: Tensor | None
    grads: Mapping[str, Tensor]


class _OutputsModel:
    """A classifier from a differentiable inner problem's forward pass at fixed weights (for learners
    whose inner problem has no ``predictor``)."""

    def __init__(self, dt: DifferentiableInnerProblem, w: Tensor) -> None:
        self.dt, self.w = dt, w.detach().clone()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self.dt.outputs(self.w, self.dt.tensor(np.asarray(X)))
        return torch.softmax(out.double(), dim=1).cpu().numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


def _model(dt: DifferentiableInnerProblem, z: Tensor) -> FittedModel:
    """The fitted model of inner problem ``dt`` at state ``z`` (its own ``predictor`` where it has one)."""
    w = dt.dynamics.weights(z)
    predictor = getattr(dt, "predictor", None)
    if callable(predictor):
        return copy.deepcopy(predictor(w))  # a copy: a predictor may share the problem's module
    return _OutputsModel(dt, w)


def _plain(value: Any) -> Any:
    """A value as plain data (numbers, lists, numpy arrays) for the schedule and the saved state."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return float(value) if value.ndim == 0 else value.astype(np.float64)
    if isinstance(value, np.generic):
        return value.item()
    return value


class OnlineOptimizer(OuterOptimizer):
    """Hyperparameters tuned during one training run (see the module docstring).

    Parameters
    ----------
    every : int, optional
        Inner steps between two updates (K). Default: the run's length over ``min(50, n_iter)``.
    mode : {"truncated", "forward"}
        How a segment's hypergradient is computed.
    truncate : int, optional
        Truncated mode: unroll the segment's last ``truncate`` steps (default: ⌈K/4⌉; at most K).
    val_batch : int, optional
        Validation examples per update, a fresh mini-batch each time (default 1000; the whole split when
        it is smaller); ``None``: always the whole split. The validation pass and its backward pass run
        once per update: on a large split they would cost more than the segment's training steps.
    outer_lr, outer_optimizer, clip
        The outer step: Adam or SGD on the raw variables, gradient norm clipped at ``clip``.
    tensor_hyperparameters, tensor_init
        Tensor hyperparameters to tune next to the space's floats, and their starting values.
    refit_with : {"schedule", "final"}
        What the estimator's refit on train + validation trains with.
    max_backoffs, backoff
        Divergence handling: outer learning rate times ``backoff`` per rolled-back segment; stop after
        more than ``max_backoffs`` in a row.
    max_tangent_bytes : int
        Forward mode is refused before training when its tangents would exceed this size.
    budget : float, optional
        Fraction of the learner's training to run (set by ``hybrid`` under a multi-fidelity black box).
    """

    def __init__(
        self,
        every: int | None = None,
        mode: str = "truncated",
        truncate: int | None = None,
        val_batch: int | None = 1000,
        outer_lr: float = 0.05,
        outer_optimizer: str = "adam",
        clip: float | None = 10.0,
        tensor_hyperparameters: tuple[str, ...] | list[str] = (),
        tensor_init: Mapping[str, Any] | None = None,
        refit_with: str = "schedule",
        max_backoffs: int = 8,
        backoff: float = 0.5,
        max_tangent_bytes: int = TANGENT_LIMIT,
        budget: float | None = None,
    ) -> None:
        if mode not in ONLINE_MODES:
            why = _WHY_NOT_MODE.get(mode, "it is not a hypergradient mode")
            raise ValueError(f"online: mode must be one of {ONLINE_MODES}, got {mode!r}: {why}")
        for name, value in (("every", every), ("truncate", truncate), ("val_batch", val_batch)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"online: {name} must be an integer >= 1 or None, got {value!r}")
        if truncate is not None and mode != "truncated":
            raise ValueError(f"online: truncate is a setting of mode='truncated', not of mode={mode!r}")
        if not (isinstance(outer_lr, (int, float)) and not isinstance(outer_lr, bool) and outer_lr > 0):
            raise ValueError(f"online: outer_lr must be positive, got {outer_lr!r}")
        if outer_optimizer not in OUTER_OPTIMIZERS:
            raise ValueError(f"online: outer_optimizer must be one of {OUTER_OPTIMIZERS}, got {outer_optimizer!r}")
        if clip is not None and not clip > 0:
            raise ValueError(f"online: clip must be positive or None, got {clip!r}")
        if refit_with not in REFIT_WITH:
            raise ValueError(f"online: refit_with must be one of {REFIT_WITH}, got {refit_with!r}")
        if not 0 < backoff <= 1:
            raise ValueError(f"online: backoff must be in (0, 1], got {backoff!r}")
        if isinstance(tensor_hyperparameters, str):
            raise TypeError(f"online: tensor_hyperparameters must be a list of names, got {tensor_hyperparameters!r}")
        unknown = set(tensor_init or {}) - set(tensor_hyperparameters)
        if unknown:
            raise ValueError(f"online: tensor_init names {sorted(unknown)}, which are not tensor_hyperparameters")
        if budget is not None and not 0 < budget <= 1:
            raise ValueError(f"online: budget must be in (0, 1] or None, got {budget!r}")
        self.every, self.mode = None if every is None else int(every), mode
        self.truncate = None if truncate is None else int(truncate)
        self.val_batch = None if val_batch is None else int(val_batch)
        self.outer_lr, self.outer_optimizer, self.clip = float(outer_lr), outer_optimizer, clip
        self.tensor_hyperparameters = tuple(tensor_hyperparameters)
        self.tensor_init = dict(tensor_init or {})
        self.refit_with = refit_with
        self.max_backoffs, self.backoff = int(max_backoffs), float(backoff)
        self.max_tangent_bytes, self.budget = int(max_tangent_bytes), budget

    # -- set-up: every check before the first inner step ------------------------------------------
    def setup(self, problem: Any, seed: int) -> None:
        """Check the problem (differentiable learner and objective, one split, only hyperparameters it can move), build
        the learner's differentiable inner problem, choose the segment length ``K`` and set up the run's state and the
        outer optimizer. Raises TypeError or ValueError, before the first inner step."""
        super().setup(problem, seed)
        learner, objective = problem.learner, problem.objective
        if not isinstance(learner, DifferentiableLearner):
            raise TypeError(
                f"online needs a differentiable learner; {type(learner).__name__} does not implement the "
                "DifferentiableLearner protocol (differentiable, differentiable_hyperparameters)"
            )
        if not isinstance(objective, DifferentiableObjective):
            raise TypeError(f"online needs a differentiable objective; {type(objective).__name__} has no loss_tensor")
        self.objective: DifferentiableObjective = objective
        if len(problem.splits) != 1:
            raise ValueError(
                f"online trains one run on one training set; the problem has {len(problem.splits)} splits "
                "(cv): use a validation split (cv=None)"
            )
        self._refuse_fixed_choices(problem)
        self.kinds, self.fixed = _kinds(problem, self.tensor_hyperparameters, self.tensor_init)
        split = problem.splits[0]
        self.dt = learner.differentiable(
            split.X_train, split.y_train, self.fixed, task=problem.task, seed=seed, budget=self.budget
        )
        dyn = self.dt.dynamics
        T = int(dyn.T)
        n_iter = self.n_iter if self.n_iter is not None else DEFAULT_UPDATES
        if self.every is None:
            self.K = max(1, math.ceil(T / min(DEFAULT_UPDATES, n_iter)))
        else:
            if self.every > T:
                raise ValueError(
                    f"online: every={self.every} is larger than the run, which has {T} inner steps "
                    f"(the learner's epochs x steps per epoch); use every <= {T}"
                )
            self.K = self.every
        updates = math.ceil(T / self.K)
        if updates > n_iter:
            raise ValueError(
                f"online: every={self.K} makes {updates} updates in a run of {T} inner steps, more than "
                f"n_iter={n_iter} trials: the run would stop at step {n_iter * self.K}; raise n_iter to "
                f">= {updates} or every to >= {math.ceil(T / n_iter)}"
            )
        self.T = T
        self.unroll = max(1, math.ceil(self.K / 4)) if self.truncate is None else min(self.truncate, self.K)
        names = list(self.kinds)
        m = sum(int(np.prod(k.raw0().shape)) for k in self.kinds.values())
        if self.mode == "forward":
            need = int(dyn.dim) * m * 4
            if need > self.max_tangent_bytes:
                raise ValueError(
                    f"online: mode='forward' would carry {m} tangents of the {dyn.dim}-entry inner state "
                    f"({need / 2**30:.1f} GiB, over max_tangent_bytes={self.max_tangent_bytes}); use "
                    "mode='truncated', or fewer tensor hyperparameters"
                )
        self.device = self.dt.z0.device
        self.constants = {k: v for k, v in self.dt.constants.items() if k not in self.kinds}
        X_val, y_val = self.dt.tensor(split.X_val), self.dt.targets(split.y_val)
        self.X_val, self.y_val = X_val, y_val
        self._probe(type(learner).__name__)
        # the run's state
        self.z: Tensor = self.dt.z0.detach().clone()
        self.Z: Tensor | None = None
        self.t, self.update = 0, 0
        self.vars: dict[str, Tensor] = {k: self.kinds[k].raw0().to(torch.float64) for k in names}
        for v in self.vars.values():
            v.requires_grad_(True)
        self.opt = (
            torch.optim.Adam([self.vars[k] for k in names], lr=self.outer_lr)
            if self.outer_optimizer == "adam"
            else torch.optim.SGD([self.vars[k] for k in names], lr=self.outer_lr)
        )
        self.prev = {k: v.detach().clone() for k, v in self.vars.items()}
        self.backoffs, self.failures_in_row = 0, 0
        self.schedule: list[dict[str, Any]] = []
        self.pending = False

    def _probe(self, learner_name: str) -> None:
        """One differentiated step of the mode on a copy of the initial state, so that a mode the learner's
        inner problem cannot run (an operation without a forward-mode rule) is refused before training."""
        values = self._on_device(self._values({k: kind.raw0() for k, kind in self.kinds.items()}))
        dyn, outer_loss = self.dt.dynamics, self._outer_loss(0)
        try:
            if self.mode == "forward":
                carry = ForwardCarry(dyn, values)
                z = carry.advance(self.dt.z0, values, self.constants, 0, 1)
                carry.hypergradient(outer_loss, z, values, self.constants)
            else:
                segment_reverse(dyn, outer_loss, self.dt.z0, values, self.constants, 0, 1)
        except FloatingPointError:
            pass  # a diverging first step is the run's business (rolled back, outer step halved)
        except Exception as exc:
            raise ValueError(
                f"online: mode={self.mode!r} cannot run with learner {learner_name}: {type(exc).__name__}: {exc}"
                + ("; use mode='truncated'" if self.mode == "forward" else "")
            ) from exc

    def _refuse_fixed_choices(self, problem: Any) -> None:
        """Refuse a hyperparameter the user asked to search that online cannot move (not differentiable);
        those of the learner's own default space (architecture choices) are held at their defaults."""
        from ConfigSpace import Constant, UniformFloatHyperparameter

        diff = dict(problem.learner.differentiable_hyperparameters(problem.task))
        default = problem.learner.config_space(problem.task)
        for hp in problem.space.values():
            if isinstance(hp, Constant):
                continue
            if isinstance(hp, UniformFloatHyperparameter) and diff.get(hp.name) in ("positive", "unit"):
                continue
            if hp.name in default and default[hp.name] == hp:
                continue  # the learner's own choice, held at the space's default
            raise ValueError(
                f"online cannot tune {hp.name!r}: the learner does not differentiate it "
                f"(it differentiates {sorted(k for k, v in diff.items() if v in ('positive', 'unit'))}); "
                "fix it (a constant in the search space or learner_params), or search it by a black box "
                "around online runs with optimizer='hybrid', optimizer_params={'inner': 'online'}"
            )

    # -- the values a segment trains with ------------------------------------------------------------
    def _values(self, raw: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: kind.value(raw[k]) for k, kind in self.kinds.items()}

    def _on_device(self, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        dtype = self.dt.z0.dtype
        return {k: v.detach().to(device=self.device, dtype=dtype) for k, v in values.items()}

    def _export(self, raw: Mapping[str, Tensor]) -> dict[str, Any]:
        return {k: kind.export(raw[k].detach()) for k, kind in self.kinds.items()}

    def _outer_loss(self, update: int) -> Callable[[Tensor, Mapping[str, Tensor]], Tensor]:
        Xv, yv = self.X_val, self.y_val
        if self.val_batch is not None and self.val_batch < len(yv):
            gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + update)
            idx = torch.randperm(len(yv), generator=gen)[: self.val_batch].to(Xv.device)
            Xv, yv = Xv[idx], yv[idx]
        objective = self.objective
        dt, task = self.dt, self.problem.task

        def outer_loss(w: Tensor, hp: Mapping[str, Tensor]) -> Tensor:
            return objective.loss_tensor(dt.outputs(w, Xv), yv, task=task)

        return outer_loss

    # -- ask / evaluate / tell ------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Proposal]:
        """The next segment as one proposal with the current values (``info``: an :class:`OnlinePoint`); none while a
        segment is out or after the run's end."""
        if self.pending or self.t >= self.T:  # one segment at a time; none after the run's end
            return []
        self.pending = True
        point = OnlinePoint(
            self.update,
            self.t,
            min(self.t + self.K, self.T),
            {k: v.detach().clone() for k, v in self.vars.items()},
            self.z,
            self.Z,
            float(self.opt.param_groups[0]["lr"]),
            self.backoffs,
        )
        return [Proposal({**self.fixed, **self._export(self.vars)}, info=point)]

    def evaluate(self, problem: Any, proposal: Proposal) -> Evaluation:
        """Train the segment from the point's inner state and take the hypergradient of the validation objective
        (``mode``). The trial's value is that objective; ``extra`` a :class:`Segment` (end state and gradients). Raises
        FloatingPointError when the objective or the hypergradient is not finite."""
        point = proposal.info
        if not isinstance(point, OnlinePoint):
            raise TypeError(f"an online proposal carries an OnlinePoint, got {type(point).__name__}")
        raw = {k: v.detach().clone().requires_grad_(True) for k, v in point.variables.items()}
        with torch.enable_grad():
            values = self._values(raw)
        dev = self._on_device(values)
        outer_loss = self._outer_loss(point.update)
        dyn = self.dt.dynamics
        Z_end: Tensor | None = None
        if self.mode == "truncated":
            value, g, z_end = segment_reverse(
                dyn, outer_loss, point.z, dev, self.constants, point.start, point.stop, self.unroll
            )
        else:
            carry = ForwardCarry(dyn, dev, point.Z)
            z_end = carry.advance(point.z, dev, self.constants, point.start, point.stop)
            value, g = carry.hypergradient(outer_loss, z_end, dev, self.constants)
            Z_end = carry.Z
        names = list(raw)
        with torch.enable_grad():
            got = torch.autograd.grad(
                [values[k] for k in names],
                [raw[k] for k in names],
                [g[k].to(device=values[k].device, dtype=values[k].dtype) for k in names],
                allow_unused=True,
            )
        grads = {
            k: (d if d is not None else torch.zeros_like(raw[k])).detach() for k, d in zip(names, got, strict=True)
        }
        norm = math.sqrt(sum(float((d.double() ** 2).sum()) for d in grads.values()))
        if not math.isfinite(norm):
            raise FloatingPointError("the hypergradient is not finite")
        if not math.isfinite(value):
            raise FloatingPointError(f"the validation objective is {value}")
        metrics: dict[str, float] = {
            "hypergrad_norm": norm,
            "outer_lr": point.outer_lr,
            "backoffs": float(point.backoffs),
            "inner_step": float(point.stop),
        }
        for k in names:
            v = values[k].detach()
            metrics[f"hp.{k}" if v.ndim == 0 else f"hp.{k}.mean"] = float(v.mean())
        return Evaluation(float(value), metrics, extra=Segment(z_end, Z_end, grads))

    def tell(self, proposal: Proposal, trial: Trial) -> None:
        """A trained segment: continue from its end state, add its values to the schedule and take one outer step
        (clipped, projected). A failed one: back to the previous values, outer learning rate times ``backoff``."""
        self.pending = False
        point: OnlinePoint = proposal.info
        if not trial.ok:  # roll back: the segment's weights are dropped, λ returns, smaller outer steps
            self._load(self.prev)
            for group in self.opt.param_groups:
                group["lr"] *= self.backoff
            self.backoffs += 1
            self.failures_in_row += 1
            return
        self.failures_in_row = 0
        seg: Segment = trial.extra
        self.z, self.Z, self.t = seg.z, seg.Z, point.stop
        self.schedule.append(
            {
                "update": point.update,
                "start": point.start,
                "stop": point.stop,
                "value": float(trial.value),
                **{k: _plain(v) for k, v in self._export(point.variables).items()},
            }
        )
        self.update += 1
        self.prev = {k: v.detach().clone() for k, v in point.variables.items()}
        if self.t >= self.T:  # the run is over: its last values are the result
            return
        params = [self.vars[k] for k in self.kinds]
        for k in self.kinds:
            self.vars[k].grad = seg.grads[k].to(self.vars[k].dtype)
        if self.clip:
            torch.nn.utils.clip_grad_norm_(params, self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, kind in self.kinds.items():
                kind.project(self.vars[k])

    def _load(self, raw: Mapping[str, Tensor]) -> None:
        with torch.no_grad():
            for k, v in raw.items():
                self.vars[k].copy_(v)

    def should_stop(self) -> bool:
        """Whether more than ``max_backoffs`` segments in a row have failed."""
        return self.failures_in_row > self.max_backoffs

    def replay(self, trials: list[Trial]) -> None:
        """Refuse trials (ValueError): online resumes from its saved state (:meth:`load_state_dict`), not by
        replaying trials."""
        if trials:
            raise ValueError(
                "online resumes from its saved state (inner weights, optimizer slots), not by replaying "
                "trials; the checkpoint has trials but no state file"
            )

    # -- results --------------------------------------------------------------------------------------
    def best_config(self) -> dict[str, Any] | None:
        """The final values: those the last trained segment used (``None`` before the first)."""
        if not self.schedule:
            return None
        last = self.schedule[-1]
        return {**self.fixed, **{k: last[k] for k in self.kinds}}

    def refit(
        self,
        learner: InnerLearner,
        X: np.ndarray,
        y: np.ndarray,
        config: Mapping[str, Any],
        *,
        task: Task,
        seed: int,
    ) -> FittedModel | None:
        """The refit on (X, y) replaying the schedule: each update's values over the same fraction of the
        (longer) run; ``None`` with ``refit_with="final"`` or before any update (the learner's own fit
        with ``config`` then)."""
        if self.refit_with == "final" or not self.schedule:
            return None
        assert isinstance(learner, DifferentiableLearner)  # checked in setup
        dt = learner.differentiable(X, y, self.fixed, task=task, seed=seed, budget=self.budget)
        dyn = dt.dynamics
        dtype, device = dt.z0.dtype, dt.z0.device
        base = {k: v for k, v in dt.constants.items() if k not in self.kinds}
        per_update = [
            {**base, **{k: torch.as_tensor(np.asarray(s[k]), dtype=dtype, device=device) for k in self.kinds}}
            for s in self.schedule
        ]
        ends = [s["stop"] / self.T for s in self.schedule]  # where each update's values end, as a fraction

        def hp_at(t: int) -> Mapping[str, Tensor]:
            i = bisect.bisect_right(ends, t / dyn.T)
            return per_update[min(i, len(per_update) - 1)]

        z = piecewise_run(dyn, dt.z0, hp_at)
        return _model(dt, z)

    def fitted_attributes(self) -> dict[str, Any]:
        """``schedule_`` (the values of every update) and ``online_model_`` (the online run's own model)."""
        return {
            "schedule_": [dict(s) for s in self.schedule],
            "online_model_": _model(self.dt, self.z) if self.schedule else None,
        }

    # -- checkpoint: plain data only (numbers, strings, lists, dicts, tensors, arrays) ----------------
    def state_dict(self) -> dict[str, Any]:
        """The run's state as plain data: inner weights (and forward tangents), step, update count, current and
        previous values, the outer optimizer's state, back-offs and the schedule."""
        state: dict[str, Any] = {
            "every": int(self.K),
            "T": int(self.T),
            "z": self.z.detach().cpu().clone(),
            "t": int(self.t),
            "update": int(self.update),
            "vars": {k: v.detach().clone() for k, v in self.vars.items()},
            "prev": {k: v.detach().clone() for k, v in self.prev.items()},
            "opt": self.opt.state_dict(),
            "backoffs": int(self.backoffs),
            "failures_in_row": int(self.failures_in_row),
            "schedule": [  # arrays (tensor hyperparameters) as tensors: the state is plain data
                {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                for s in self.schedule
            ],
        }
        if self.Z is not None:
            state["Z"] = self.Z.detach().cpu().clone()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; raises ValueError when it is another run's (other tuned
        hyperparameters, segment or run length, or inner state shape)."""
        if set(state["vars"]) != set(self.vars):
            raise ValueError(f"the saved online state tunes {sorted(state['vars'])}, this run {sorted(self.vars)}")
        if (int(state["every"]), int(state["T"])) != (self.K, self.T):
            raise ValueError(
                f"the saved online run updates every {state['every']} of {state['T']} inner steps, this one every "
                f"{self.K} of {self.T}: with every=None the segment length follows n_iter, so resume with the "
                "first run's n_iter (or give every explicitly)"
            )
        z = torch.as_tensor(state["z"])
        if z.shape != self.z.shape:
            raise ValueError(f"the saved inner state has shape {tuple(z.shape)}, this run {tuple(self.z.shape)}")
        self.z = z.to(device=self.device, dtype=self.dt.z0.dtype)
        self.Z = None if state.get("Z") is None else torch.as_tensor(state["Z"]).to(device=self.device)
        self.t, self.update = int(state["t"]), int(state["update"])
        self._load({k: torch.as_tensor(v) for k, v in state["vars"].items()})
        self.prev = {k: torch.as_tensor(v).detach().clone() for k, v in state["prev"].items()}
        self.opt.load_state_dict(state["opt"])
        self.backoffs, self.failures_in_row = int(state["backoffs"]), int(state["failures_in_row"])
        self.schedule = [
            {
                k: (np.asarray(v, dtype=np.float64) if isinstance(v, (list, np.ndarray, Tensor)) else v)
                for k, v in s.items()
            }
            for s in state["schedule"]
        ]
        self.pending = False


@hookimpl
def bilevel_register_optimizers() -> list[OptimizerSpec]:
    """Register the ``online`` optimizer (requires ``differentiable``; its trials are segments of one run)."""
    return [
        OptimizerSpec(
            "online",
            OnlineOptimizer,
            "hyperparameters tuned during one training run by hypergradients of the validation objective "
            "(RTHO: truncated reverse or forward mode every K steps); the result is a schedule",
            requires=frozenset({"differentiable"}),
            trials_are_steps=True,
        )
    ]
