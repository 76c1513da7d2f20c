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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from ConfigSpace import ConfigurationSpace
from torch import Tensor

from automl_bilevel.core.components import DifferentiableInnerProblem, DifferentiableLearner, InnerLearner, Task
from automl_bilevel.core.problem import BilevelProblem, Split
from automl_bilevel.evolution import vector_to_module
from automl_bilevel.gradient import hypergradient
from automl_bilevel.gradient.outer import DifferentiableProblem, GradientResult
from automl_bilevel.methods.learned.loss import LossNetwork
from automl_bilevel.plugin.registry import get_registry
from automl_bilevel.run.engine import SearchResult, run_search
from automl_bilevel.run.lifecycle import Run

if TYPE_CHECKING:
    from automl_bilevel.run.checkpoint import Checkpoint


def mlp_learner(
    loss: str | LossNetwork, *, inner_steps: int = 20, lr: float = 0.1, hidden_units: int = 100
) -> InnerLearner:
    """The inner learner of the paper: 784-h-h-10 MLP, ``inner_steps`` full-batch SGD steps (the
    registered ``mlp`` learner, resolved through the registry like any plugin)."""
    learner: InnerLearner = get_registry().make(
        "learner",
        "mlp",
        dict(
            hidden_units=hidden_units,
            n_layers=2,
            activation="relu",
            optimizer="sgd",
            lr=lr,
            weight_decay=0.0,
            epochs=inner_steps,
            batch_size=10**6,
            standardize=False,
            loss=loss,
        ),
    )[0]
    return learner


def evaluate_loss(
    loss: str | LossNetwork,
    tasks: Sequence[Split],
    *,
    n_classes: int,
    inner_steps: int = 20,
    lr: float = 0.1,
    seed: int = 0,
) -> list[float]:
    """Validation accuracy of an MLP trained with ``loss`` ('default', 'mse' or a LossNetwork) on each task."""
    learner = mlp_learner(loss, inner_steps=inner_steps, lr=lr)
    task = Task("classification", tasks[0].X_train.shape[1], n_classes)
    accs = []
    for i, s in enumerate(tasks):
        model = learner.fit(s.X_train, s.y_train, {}, task=task, seed=seed + i)
        accs.append(float(np.mean(model.predict(s.X_val) == s.y_val)))
    return accs


def evolve_loss_network(
    tasks: Sequence[Split],
    *,
    n_classes: int,
    n_evaluations: int = 200,
    strategy: str = "mu_plus_lambda",
    population_size: int = 10,
    sigma0: float = 0.05,
    inner_steps: int = 20,
    lr: float = 0.1,
    seed: int = 0,
    timeout: float | None = None,
    run: Run | None = None,
    net: LossNetwork | None = None,
    strategy_options: Mapping[str, Any] | None = None,
    checkpoint: Checkpoint | None = None,
) -> tuple[LossNetwork, SearchResult]:
    """Evolve a loss network (``net``, else a new cross-entropy start) with the ``es`` optimizer
    (``strategy_options`` go to it, e.g. OpenAI-ES's ``lr``) through the one loop (tracked in ``run``,
    an :class:`automl_bilevel.run.lifecycle.Run`, whose executor may be Dask); returns the best network
    and the search."""
    registry = get_registry()
    net = net or LossNetwork(n_classes, seed=seed)
    learner = mlp_learner(net, inner_steps=inner_steps, lr=lr)
    objective, _ = registry.make("objective", "val_error")
    problem = BilevelProblem(
        learner,
        objective,
        ConfigurationSpace(),
        Task("classification", tasks[0].X_train.shape[1], n_classes),
        list(tasks),
        seed,
    )
    opt, _ = registry.make(
        "optimizer",
        "es",
        dict(strategy=strategy, population_size=population_size, sigma0=sigma0, **(strategy_options or {})),
    )
    res = run_search(problem, opt, n_iter=n_evaluations, seed=seed, timeout=timeout, run=run, checkpoint=checkpoint)
    if res.best is not None:
        vector_to_module(res.best.config["loss_net"], net)
    return net, res


class LossNetworkProblem(DifferentiableProblem):
    """ML3 as a problem of the one loop: the outer variable is the loss network's flat weight vector; outer
    step ``k`` averages the hypergradient of the validation cross-entropy over ``tasks_per_step``
    tasks (reverse mode through all inner steps, or the last ``truncate``). With ``held_out`` tasks,
    every ``eval_every`` steps (from the start) and at the last of ``n_steps`` the step also
    measures the network's validation accuracy on them (``held_out_accuracy``, ``val_value`` = 1 −
    it), which the optimizer keeps its best point by: 20 SGD steps at a useful step size are close
    to chaotic in the loss weights, so single steps can make things worse."""

    def __init__(
        self,
        tasks: Sequence[Split],
        net: LossNetwork,
        *,
        n_classes: int,
        inner_steps: int = 20,
        lr: float = 0.1,
        tasks_per_step: int = 4,
        truncate: int | None = None,
        held_out: Sequence[Split] = (),
        eval_every: int = 10,
        seed: int = 0,
        n_steps: int | None = None,
    ) -> None:
        if int(tasks_per_step) < 1 or int(eval_every) < 1 or not tasks:
            raise ValueError(
                f"need tasks_per_step >= 1, eval_every >= 1 and some tasks, got {tasks_per_step}, "
                f"{eval_every}, {len(tasks)} tasks"
            )
        self.tasks, self.held_out, self.net = list(tasks), list(held_out), net
        self.n_classes, self.inner_steps, self.lr = int(n_classes), int(inner_steps), float(lr)
        self.tasks_per_step, self.eval_every, self.seed = int(tasks_per_step), int(eval_every), int(seed)
        self.n_steps = n_steps
        self.mode: dict[str, Any] = (
            {"mode": "reverse"} if truncate is None else {"mode": "truncated", "truncate": int(truncate)}
        )
        # the registered mlp learner has the differentiable capability
        self.learner = cast(DifferentiableLearner, mlp_learner(net, inner_steps=inner_steps, lr=lr))
        self.task = Task("classification", self.tasks[0].X_train.shape[1], self.n_classes)

    def outer_variables(self) -> dict[str, Tensor]:
        """One outer variable, ``loss_net``: the loss network's weights as a flat float32 vector."""
        return {"loss_net": self.net.flat().float().clone()}

    def export(self, outer: Mapping[str, Tensor]) -> dict[str, Any]:
        """Nothing: the network's weights are stored with the run, not in a trial's configuration."""
        return {}  # the network's weights are stored with the run, not as a trial's configuration

    def network(self, outer: Mapping[str, Tensor]) -> LossNetwork:
        """The loss network with the weights of ``outer`` (written into ``net`` in place)."""
        vector_to_module(outer["loss_net"].detach().double().numpy(), self.net)
        return self.net

    def value_and_grad(self, outer: Mapping[str, Tensor], *, step: int) -> GradientResult:
        """The mean validation cross-entropy over ``tasks_per_step`` tasks, each trained for ``inner_steps``
        with the loss network at ``outer``, and its hypergradient on the network's weights (reverse mode, or
        truncated). With held-out tasks, every ``eval_every`` steps from the first and at the last, also their
        accuracy (``held_out_accuracy``, ``val_value`` = 1 − it)."""
        theta = outer["loss_net"].detach()
        metrics: dict[str, float] = {}
        last = self.n_steps is not None and step == self.n_steps - 1
        if self.held_out and (step % self.eval_every == 0 or last):
            acc = float(
                np.mean(
                    evaluate_loss(
                        self.network(outer),
                        self.held_out,
                        n_classes=self.n_classes,
                        inner_steps=self.inner_steps,
                        lr=self.lr,
                        seed=self.seed,
                    )
                )
            )
            metrics.update(held_out_accuracy=acc, val_value=1.0 - acc)
        k = self.tasks_per_step
        grads: list[Tensor] = []
        values: list[float] = []
        for j in range(k):
            split = self.tasks[(step * k + j) % len(self.tasks)]
            dt = self.learner.differentiable(
                split.X_train,
                split.y_train,
                {"loss_net": theta.numpy()},
                task=self.task,
                seed=self.seed + (step + 1) * k + j,
            )
            Xv, yv = dt.tensor(split.X_val), dt.targets(split.y_val)

            def outer_loss(
                w: Tensor,
                hp: Mapping[str, Tensor],
                dt: DifferentiableInnerProblem = dt,
                Xv: Tensor = Xv,
                yv: Tensor = yv,
            ) -> Tensor:
                return F.cross_entropy(dt.outputs(w, Xv), yv)

            res = hypergradient(dt.dynamics, outer_loss, dt.z0, dt.constants, **self.mode)
            grads.append(res.grads["loss_net"])
            values.append(float(res.value))
        return GradientResult(float(np.mean(values)), {"loss_net": torch.stack(grads).mean(0).float()}, metrics)


@dataclass
class ML3Result:
    """What :func:`train_loss_network_ml3` returns: the value of each accepted step, the rejected steps
    with their reasons, the held-out accuracies by step, the step it kept (``best_step``) and the search's result."""

    values: list[float] = field(default_factory=list)  # mean validation cross-entropy per accepted step
    rejected: list[tuple[int, str | None]] = field(default_factory=list)  # (step, reason), steps from 0
    held_out: list[tuple[int, float]] = field(default_factory=list)  # (step, accuracy on held-out tasks)
    best_step: int = 0
    search: SearchResult | None = None


def train_loss_network_ml3(
    tasks: Sequence[Split],
    *,
    n_classes: int,
    outer_steps: int = 100,
    outer_lr: float = 1e-3,
    inner_steps: int = 20,
    lr: float = 0.1,
    clip: float = 10.0,
    tasks_per_step: int = 4,
    truncate: int | None = None,
    held_out: Sequence[Split] = (),
    eval_every: int = 10,
    seed: int = 0,
    net: LossNetwork | None = None,
    run: Run | None = None,
    checkpoint: Checkpoint | None = None,
) -> tuple[LossNetwork, ML3Result]:
    """Train a loss network by hypergradients of the validation cross-entropy (ML3) through the one
    loop (:class:`LossNetworkProblem` moved by the ``hypergradient`` optimizer: Adam at ``outer_lr``,
    clipped at ``clip``; a step with a non-finite hypergradient is rejected with its reason and the
    outer learning rate halved). Returns the network at the best held-out point (the last point
    without ``held_out``). ``run`` tracks it; ``checkpoint`` makes a later call continue exactly."""
    if int(outer_steps) < 0:
        raise ValueError(f"need outer_steps >= 0, got {outer_steps}")
    net = net or LossNetwork(n_classes, seed=seed)
    problem = LossNetworkProblem(
        tasks,
        net,
        n_classes=n_classes,
        inner_steps=inner_steps,
        lr=lr,
        tasks_per_step=tasks_per_step,
        truncate=truncate,
        held_out=held_out,
        eval_every=eval_every,
        seed=seed,
        n_steps=int(outer_steps),
    )
    opt, _ = get_registry().make("optimizer", "hypergradient", {"outer_lr": outer_lr, "clip": clip})
    res = run_search(problem, opt, n_iter=int(outer_steps), seed=seed, run=run, checkpoint=checkpoint)
    final = opt.best_variables() if held_out else opt.vars
    problem.network(final)
    out = ML3Result(
        values=[t.value for t in res.trials if t.ok],
        rejected=[(t.number, t.error) for t in res.trials if not t.ok],  # the step, numbered as held_out's
        held_out=[(t.number, t.metrics["held_out_accuracy"]) for t in res.trials if "held_out_accuracy" in t.metrics],
        best_step=max(opt.best_step, 0) if held_out else len(res.trials),
        search=res,
    )
    return net, out


def summarise(accs: Sequence[float]) -> tuple[float, float]:
    """The mean and standard deviation of accuracies (the standard deviation is NaN for one value)."""
    a = np.asarray(accs, dtype=float)
    return float(a.mean()), float(a.std()) if len(a) > 1 else math.nan
