"""A meta-loss network learned two ways, on small-data tasks (Hai & Liu, arXiv 2103.08249; ML3,
Bechtle et al. 2021).

The inner learner is a 3-layer MLP trained by ``inner_steps`` steps of full-batch SGD on a few
examples with the loss network as its training loss. The outer variable is the loss network:

- :func:`evolve_loss_network`: the ``es`` optimizer ((μ+λ)-ES with self-adaptive σ by default)
  through the host's search loop; fitness = validation error of the trained classifier, averaged
  over sampled tasks; a candidate whose loss is NaN or not a scalar is a failed trial;
- :func:`train_loss_network_ml3`: Adam on the validation cross-entropy differentiated through the
  inner SGD steps (the hypergradient library, reverse mode); a step with a non-finite
  hypergradient is rejected with its reason and the outer learning rate halved.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from ConfigSpace import ConfigurationSpace
import torch.nn.functional as F

from ..components import Task
from ..engine import RunSession, SearchResult, run_search
from ..evolution import vector_to_module
from ..hypergrad import hypergradient
from ..learned.loss import LossNetwork, LossNetworkError
from ..problem import BilevelProblem, Split


def mlp_learner(loss, *, inner_steps: int = 20, lr: float = 0.1, hidden_units: int = 100):
    """The inner learner of the paper: 784-h-h-10 MLP, ``inner_steps`` full-batch SGD steps."""
    from automl_bilevel_plugins.learners.torch_learners import MLPLearner

    return MLPLearner(hidden_units=hidden_units, n_layers=2, activation="relu", optimizer="sgd", lr=lr,
                      weight_decay=0.0, epochs=inner_steps, batch_size=10**6, standardize=False, loss=loss)


def evaluate_loss(loss, tasks: Sequence[Split], *, n_classes: int, inner_steps: int = 20, lr: float = 0.1,
                  seed: int = 0) -> list[float]:
    """Validation accuracy of an MLP trained with ``loss`` ('default', 'mse' or a LossNetwork) on each task."""
    learner = mlp_learner(loss, inner_steps=inner_steps, lr=lr)
    task = Task("classification", tasks[0].X_train.shape[1], n_classes)
    accs = []
    for i, s in enumerate(tasks):
        model = learner.fit(s.X_train, s.y_train, {}, task=task, seed=seed + i)
        accs.append(float(np.mean(model.predict(s.X_val) == s.y_val)))
    return accs


def evolve_loss_network(tasks: Sequence[Split], *, n_classes: int, n_evaluations: int = 200,
                        strategy: str = "mu_plus_lambda", population_size: int = 10, sigma0: float = 0.05,
                        inner_steps: int = 20, lr: float = 0.1, seed: int = 0, timeout: float | None = None,
                        session: RunSession | None = None, executor=None,
                        net: LossNetwork | None = None, strategy_options: dict | None = None
                        ) -> tuple[LossNetwork, SearchResult]:
    """Evolve a loss network (``net``, else a new cross-entropy start) with the ``es`` optimizer
    (``strategy_options`` go to it, e.g. OpenAI-ES's ``lr``); returns the best network and the search."""
    from automl_bilevel_plugins.objectives.validation import ValidationError
    from automl_bilevel_plugins.optimizers.evolution import EvolutionStrategy

    net = net or LossNetwork(n_classes, seed=seed)
    learner = mlp_learner(net, inner_steps=inner_steps, lr=lr)
    problem = BilevelProblem(learner, ValidationError(), ConfigurationSpace(),
                             Task("classification", tasks[0].X_train.shape[1], n_classes), list(tasks), seed)
    opt = EvolutionStrategy(strategy, population_size=population_size, sigma0=sigma0, **(strategy_options or {}))
    res = run_search(problem, opt, n_iter=n_evaluations, seed=seed, timeout=timeout, session=session,
                     executor=executor)
    if res.best is not None:
        vector_to_module(res.best.config["loss_net"], net)
    return net, res


@dataclass
class ML3Result:
    values: list[float] = field(default_factory=list)  # mean validation cross-entropy per accepted step
    rejected: list[tuple[int, str]] = field(default_factory=list)
    held_out: list[tuple[int, float]] = field(default_factory=list)  # (step, accuracy on held-out tasks)
    best_step: int = 0


def train_loss_network_ml3(tasks: Sequence[Split], *, n_classes: int, outer_steps: int = 100,
                           outer_lr: float = 1e-3, inner_steps: int = 20, lr: float = 0.1, clip: float = 10.0,
                           tasks_per_step: int = 4, truncate: int | None = None,
                           held_out: Sequence[Split] = (), eval_every: int = 10, seed: int = 0,
                           net: LossNetwork | None = None, on_step=None) -> tuple[LossNetwork, ML3Result]:
    """Train a loss network by hypergradients of the validation cross-entropy (ML3).

    Each outer step averages the hypergradient over ``tasks_per_step`` tasks (reverse mode through
    all inner steps, or the last ``truncate``). A step with a non-finite hypergradient is rejected
    with its reason and the outer learning rate halved. With ``held_out`` tasks, the network's
    validation accuracy on them is measured every ``eval_every`` steps (and at the start) and the
    best state is returned: 20 SGD steps at a useful step size are close to chaotic in the loss
    weights, so single steps can make things worse. ``on_step(value, metrics, error)`` is called after
    every outer step, as it happens (``TrackedRun.step`` fits: progress and tracking while it runs)."""
    if int(outer_steps) < 0 or int(tasks_per_step) < 1 or int(eval_every) < 1 or not tasks:
        raise ValueError(f"need outer_steps >= 0, tasks_per_step >= 1, eval_every >= 1 and some tasks, got "
                         f"{outer_steps}, {tasks_per_step}, {eval_every}, {len(tasks)} tasks")
    net = net or LossNetwork(n_classes, seed=seed)
    learner = mlp_learner(net, inner_steps=inner_steps, lr=lr)
    task = Task("classification", tasks[0].X_train.shape[1], n_classes)
    theta = torch.nn.Parameter(net.flat().float().clone())
    opt = torch.optim.Adam([theta], lr=outer_lr)
    mode = {"mode": "reverse"} if truncate is None else {"mode": "truncated", "truncate": int(truncate)}
    out = ML3Result()
    best = (-math.inf, theta.detach().clone())

    def check(step):
        nonlocal best
        vector_to_module(theta.detach().double().numpy(), net)
        acc = float(np.mean(evaluate_loss(net, held_out, n_classes=n_classes, inner_steps=inner_steps, lr=lr,
                                          seed=seed)))
        out.held_out.append((step, acc))
        if acc > best[0]:
            best, out.best_step = (acc, theta.detach().clone()), step

    if held_out:
        check(0)
    for step in range(1, int(outer_steps) + 1):
        grads, values = [], []
        try:
            for j in range(int(tasks_per_step)):
                split = tasks[((step - 1) * int(tasks_per_step) + j) % len(tasks)]
                dt = learner.differentiable(split.X_train, split.y_train, {"loss_net": theta.detach().numpy()},
                                            task=task, seed=seed + step * int(tasks_per_step) + j)
                Xv, yv = dt.tensor(split.X_val), dt.targets(split.y_val)

                def outer_loss(w, hp, dt=dt, Xv=Xv, yv=yv):
                    return F.cross_entropy(dt.outputs(w, Xv), yv)

                res = hypergradient(dt.dynamics, outer_loss, dt.z0, dt.constants, **mode)
                g = res.grads["loss_net"]
                if not torch.isfinite(g).all() or not math.isfinite(float(res.value)):
                    raise FloatingPointError("hypergradient is not finite")
                grads.append(g)
                values.append(float(res.value))
        except (FloatingPointError, LossNetworkError, RuntimeError) as exc:
            out.rejected.append((step, f"{type(exc).__name__}: {exc}"))
            for group in opt.param_groups:
                group["lr"] *= 0.5
            if on_step is not None:
                on_step(math.nan, {}, out.rejected[-1][1])
            continue
        theta.grad = torch.stack(grads).mean(0).to(theta.dtype)
        torch.nn.utils.clip_grad_norm_([theta], clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.values.append(float(np.mean(values)))
        if held_out and step % int(eval_every) == 0:
            check(step)
        if on_step is not None:
            on_step(out.values[-1], {"held_out_accuracy": out.held_out[-1][1]} if out.held_out and
                    out.held_out[-1][0] == step else {}, None)
    final = best[1] if held_out else theta.detach()
    vector_to_module(final.double().numpy(), net)
    return net, out


def summarise(accs: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(accs, dtype=float)
    return float(a.mean()), float(a.std()) if len(a) > 1 else math.nan
