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
                        session: RunSession | None = None, executor=None) -> tuple[LossNetwork, SearchResult]:
    """Evolve a loss network with the ``es`` optimizer; returns the best network and the search."""
    from automl_bilevel_plugins.objectives.validation import ValidationError
    from automl_bilevel_plugins.optimizers.evolution import EvolutionStrategy

    net = LossNetwork(n_classes, seed=seed)
    learner = mlp_learner(net, inner_steps=inner_steps, lr=lr)
    problem = BilevelProblem(learner, ValidationError(), ConfigurationSpace(),
                             Task("classification", tasks[0].X_train.shape[1], n_classes), list(tasks), seed)
    opt = EvolutionStrategy(strategy, population_size=population_size, sigma0=sigma0)
    res = run_search(problem, opt, n_iter=n_evaluations, seed=seed, timeout=timeout, session=session,
                     executor=executor)
    if res.best is not None:
        vector_to_module(res.best.config["loss_net"], net)
    return net, res


@dataclass
class ML3Result:
    values: list[float] = field(default_factory=list)  # validation cross-entropy per accepted step
    rejected: list[tuple[int, str]] = field(default_factory=list)


def train_loss_network_ml3(tasks: Sequence[Split], *, n_classes: int, outer_steps: int = 100,
                           outer_lr: float = 1e-3, inner_steps: int = 20, lr: float = 0.1, clip: float = 10.0,
                           seed: int = 0, net: LossNetwork | None = None) -> tuple[LossNetwork, ML3Result]:
    """Train a loss network by hypergradients of the validation cross-entropy (reverse mode)."""
    net = net or LossNetwork(n_classes, seed=seed)
    learner = mlp_learner(net, inner_steps=inner_steps, lr=lr)
    task = Task("classification", tasks[0].X_train.shape[1], n_classes)
    theta = torch.nn.Parameter(net.flat().float().clone())
    opt = torch.optim.Adam([theta], lr=outer_lr)
    out = ML3Result()
    for step in range(int(outer_steps)):
        split = tasks[step % len(tasks)]
        dt = learner.differentiable(split.X_train, split.y_train, {"loss_net": theta.detach().numpy()}, task=task,
                                    seed=seed + step)
        Xv, yv = dt.tensor(split.X_val), dt.targets(split.y_val)

        def outer_loss(w, hp, dt=dt, Xv=Xv, yv=yv):
            return F.cross_entropy(dt.outputs(w, Xv), yv)

        try:
            res = hypergradient(dt.dynamics, outer_loss, dt.z0, dt.constants, mode="reverse")
            g = res.grads["loss_net"]
            if not torch.isfinite(g).all():
                raise FloatingPointError("hypergradient is not finite")
        except (FloatingPointError, LossNetworkError, RuntimeError) as exc:
            out.rejected.append((step, f"{type(exc).__name__}: {exc}"))
            for group in opt.param_groups:
                group["lr"] *= 0.5
            continue
        theta.grad = g.to(theta.dtype)
        torch.nn.utils.clip_grad_norm_([theta], clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.values.append(float(res.value))
    vector_to_module(theta.detach().double().numpy(), net)
    return net, out


def summarise(accs: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(accs, dtype=float)
    return float(a.mean()), float(a.std()) if len(a) > 1 else math.nan
