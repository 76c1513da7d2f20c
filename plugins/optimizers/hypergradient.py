"""The ``hypergradient`` outer optimizer: hyperparameters moved by the gradient of the validation
objective through inner training (Franceschi et al. 2017, 2018).

Each outer step (one "trial", logged as a metric step) runs the learner's own differentiable
training on every split, computes dE/dλ by the chosen mode, and takes an Adam or SGD step on the
unconstrained λ with norm clipping. A failed step (diverging inner run, NaN objective) is rejected:
λ returns to its previous value and the outer learning rate is halved (``backoffs`` counts them).

Outer variables: every float hyperparameter of the search space the learner can differentiate
(log-scale floats are optimised in log space, others through a sigmoid to their bounds), starting
at the space's defaults, plus ``tensor_hyperparameters`` (``l2_per_feature``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from ConfigSpace import UniformFloatHyperparameter

from automl_bilevel import Evaluation, OptimizerSpec, OuterOptimizer, Proposal, hookimpl
from automl_bilevel.hypergrad import MODES, SOLVERS, Bounded, HyperParameters, Positive, PositiveTensor, hypergradient


class HypergradientOptimizer(OuterOptimizer):
    def __init__(self, mode: str = "reverse", outer_lr: float = 0.1, outer_optimizer: str = "adam",
                 clip: float | None = 10.0, inner_steps: int | None = None, truncate: int | None = None,
                 checkpoint_every: int | None = None, solver: str = "cg", solver_iters: int = 100,
                 tensor_hyperparameters: tuple[str, ...] | list[str] = (), patience: int | None = None,
                 min_delta: float = 0.0, max_backoffs: int = 8):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if not outer_lr > 0:
            raise ValueError(f"outer_lr must be positive, got {outer_lr}")
        if outer_optimizer not in ("adam", "sgd"):
            raise ValueError(f"outer_optimizer must be 'adam' or 'sgd', got {outer_optimizer!r}")
        if mode == "truncated" and not truncate:
            raise ValueError("mode='truncated' needs truncate=K")
        unknown = set(tensor_hyperparameters) - {"l2_per_feature"}
        if unknown:
            raise ValueError(f"unsupported tensor_hyperparameters {sorted(unknown)} (estimators support "
                             "'l2_per_feature'; per-example weights are in automl_bilevel.hypergrad)")
        self.mode, self.outer_lr, self.outer_optimizer, self.clip = mode, float(outer_lr), outer_optimizer, clip
        self.inner_steps, self.truncate, self.checkpoint_every = inner_steps, truncate, checkpoint_every
        self.solver, self.solver_iters = solver, int(solver_iters)
        self.tensor_hyperparameters = tuple(tensor_hyperparameters)
        self.patience, self.min_delta, self.max_backoffs = patience, float(min_delta), int(max_backoffs)

    # -- set-up ---------------------------------------------------------------------------
    def setup(self, problem, seed):
        super().setup(problem, seed)
        learner = problem.learner
        if not hasattr(learner, "differentiable"):
            raise TypeError(f"{type(learner).__name__} has no differentiable() inner problem")
        if not hasattr(problem.objective, "loss_tensor"):
            raise TypeError(f"{type(problem.objective).__name__} has no differentiable loss_tensor")
        diff = getattr(learner, "DIFFERENTIABLE", {})
        kinds, fixed = {}, {}
        for hp in problem.space.values():
            if isinstance(hp, UniformFloatHyperparameter) and hp.name in diff:
                init = float(hp.default_value)
                kinds[hp.name] = Positive(init) if hp.log else Bounded(
                    min(max(init, hp.lower + 1e-6 * (hp.upper - hp.lower)), hp.upper - 1e-6 * (hp.upper - hp.lower)),
                    hp.lower, hp.upper)
            else:
                fixed[hp.name] = hp.default_value if not hasattr(hp, "value") else hp.value
        for name in self.tensor_hyperparameters:
            kinds[name] = PositiveTensor(1e-3, shape=(problem.task.n_features,))
        if not kinds:
            raise ValueError("no continuous hyperparameter to optimise: the space has no float the learner can "
                             f"differentiate (differentiable: {sorted(diff)})")
        self.fixed = fixed
        self.params = HyperParameters(kinds)
        raws = list(self.params.raw.values())
        self.opt = (torch.optim.Adam(raws, lr=self.outer_lr) if self.outer_optimizer == "adam"
                    else torch.optim.SGD(raws, lr=self.outer_lr))
        self.tasks = []
        for split in problem.splits:
            dt = learner.differentiable(split.X_train, split.y_train, fixed, task=problem.task, seed=seed,
                                        steps=self.inner_steps)
            self.tasks.append((dt, dt.tensor(split.X_val), dt.targets(split.y_val)))
        self.best_value, self.best_raw = math.inf, None
        self.prev_raw = self.params.snapshot()
        self.since_best, self.backoffs, self.failures_in_row = 0, 0, 0
        self._grads = None

    # -- ask / evaluate / tell --------------------------------------------------------------
    def _config(self) -> dict:
        cfg = dict(self.fixed)
        for k, v in self.params.export().items():
            if isinstance(v, np.ndarray):
                cfg[f"{k}.mean"] = float(v.mean())
            else:
                cfg[k] = v
        return cfg

    def ask(self, n=1):
        return [Proposal(self._config())]

    def evaluate(self, problem, proposal):
        values = {k: v.detach() for k, v in self.params.values().items()}
        total, grads, info = 0.0, {k: torch.zeros_like(v) for k, v in values.items()}, {}
        for dt, Xv, yv in self.tasks:
            hp = {**dt.constants, **values}

            def outer_loss(w, hp_, dt=dt, Xv=Xv, yv=yv):
                return problem.objective.loss_tensor(dt.outputs(w, Xv), yv, task=problem.task)

            res = hypergradient(dt.dynamics, outer_loss, dt.z0, hp, mode=self.mode, truncate=self.truncate,
                                every=self.checkpoint_every, solver=self.solver, iters=self.solver_iters,
                                alpha=float(hp["lr"]))
            total += res.value / len(self.tasks)
            for k in grads:
                grads[k] += res.grads[k] / len(self.tasks)
            info = res.info
        g_raw = self.params.chain(grads)
        norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in g_raw.values()))
        if not math.isfinite(norm):
            raise FloatingPointError("hypergradient is not finite")
        self._grads = g_raw
        metrics = {"hypergrad_norm": norm, "outer_lr": self.opt.param_groups[0]["lr"], "backoffs": self.backoffs}
        metrics.update({f"hp.{k}": float(v) for k, v in proposal.config.items() if isinstance(v, (int, float))
                        and not isinstance(v, bool) and k not in self.fixed})
        for key in ("residual", "iterations"):
            if key in info:
                metrics[f"solver_{key}"] = float(info[key])
        return Evaluation(total, metrics)

    def tell(self, proposal, trial):
        if not trial.ok:  # reject: back to the previous λ, half the outer learning rate
            self.params.load(self.prev_raw)
            for group in self.opt.param_groups:
                group["lr"] *= 0.5
            self.backoffs += 1
            self.failures_in_row += 1
            return
        self.failures_in_row = 0
        if trial.value < self.best_value - self.min_delta:
            self.best_value, self.best_raw, self.since_best = trial.value, self.params.snapshot(), 0
        else:
            self.since_best += 1
        self.prev_raw = self.params.snapshot()
        for k, p in self.params.raw.items():
            p.grad = self._grads[k].to(p.dtype)
        if self.clip:
            torch.nn.utils.clip_grad_norm_(list(self.params.raw.values()), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.params.project()

    def should_stop(self):
        if self.failures_in_row > self.max_backoffs:
            return True
        return self.patience is not None and self.since_best >= self.patience

    def best_config(self):
        if self.best_raw is None:
            return None
        current = self.params.snapshot()
        self.params.load(self.best_raw)
        cfg = dict(self.fixed)
        cfg.update(self.params.export())
        self.params.load(current)
        return cfg


@hookimpl
def bilevel_register_optimizers():
    return [OptimizerSpec("hypergradient", HypergradientOptimizer,
                          "gradient of the validation loss through inner training (reverse, checkpoint, truncated, "
                          "forward, implicit)", requires=frozenset({"differentiable"}), trials_are_steps=True)]
