"""The ``es`` outer optimizer: evolution strategies over the search space.

``strategy=`` ``"cma"`` (default; CMA-ES via the ``cma`` package), ``"mu_plus_lambda"``
((μ+λ)-ES with self-adaptive mutation strengths) or ``"openai"`` (antithetic natural-gradient
ES); see :mod:`automl_bilevel.evolution`. Float, integer, categorical and conditional
hyperparameters all live in the unit cube of :class:`~automl_bilevel.core.space.UnitCube`; the search
starts at the space's defaults (``start="default"``) or at a random point.

One trial is one population member; a generation is told to the strategy once all its members
are back, so with several Dask workers a whole population is evaluated in parallel. A failed
member is ranked last. A configuration that decodes to a forbidden combination is resampled near
the strategy's point (further out as attempts fail), and, if the point lies deep in a forbidden
region, drawn from the space's sampler, which yields only allowed configurations: a forbidden
clause never stops a search.
A resumed run continues exactly as the uninterrupted one would: the strategy is deterministic given
the seed, so ``replay`` runs its generations again (ask, then tell each recorded member's value) and
the next ask proposes what the uninterrupted run proposed next, in any process. Trials that are not
this strategy's proposals (another space or seed) seed the first generation instead: it starts from
the best of them.

Vector outer variables: when the learner declares ``vector_hyperparameters`` (a network's weights
as a flat vector, e.g. a meta-loss network), they are searched too, appended to the unit-cube
coordinates without bounds and starting at the learner's initial values; a proposal's config holds
each as a 1-d array. ``sigma0`` is then the initial step for both parts.

Batched generations (``batched=True``, the default): when the only searched variable is one such
vector and the learner offers ``evaluate_population`` (the torch learners), the first member of a
generation evaluated in this process evaluates the whole generation as one ``torch.func.vmap`` run
per task; the other members take their values from it. The numbers are those of evaluating members
one by one, up to float32 summation order. Evaluations on Dask workers stay one member at a time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from automl_bilevel import (
    BilevelProblem,
    Evaluation,
    OptimizerSpec,
    OuterOptimizer,
    Proposal,
    Trial,
    as_configspace,
    hookimpl,
)
from automl_bilevel.core.components import PopulationLearner
from automl_bilevel.core.space import UnitCube, same_config
from automl_bilevel.core.validation import POSITIVE, Integral, Interval, Real, StrOptions, validate_params
from automl_bilevel.evolution import STRATEGIES, Strategy, make_strategy

RESAMPLES = 60  # nearby resamples of a forbidden point before drawing a valid one from the space


@dataclass
class _Generation:
    """One population out for evaluation: its decoded configurations and the fitness told so far."""

    id: int
    configs: list[dict[str, Any]]
    fitness: npt.NDArray[np.float64]
    next: int = 0
    told: int = 0


@dataclass
class _Batch:
    """A generation evaluated as one batched run (values per member, or the error all members share)."""

    id: int
    values: npt.NDArray[np.float64] | None
    error: Exception | None
    seconds: float


class EvolutionStrategy(OuterOptimizer):
    """Evolution strategies behind the ask/tell loop; settings checked against ``_parameter_constraints``
    (``sigma0`` is a step in the unit cube)."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "strategy": [StrOptions(set(STRATEGIES))],
        "population_size": [Interval(Integral, 2, None, closed="left"), None],
        "mu": [Interval(Integral, 1, None, closed="left"), None],
        "sigma0": [Interval(Real, 0, 1, closed="right"), None],
        "lr": [POSITIVE],
        "start": [StrOptions({"default", "random"})],
        "batched": ["boolean"],
    }

    def __init__(
        self,
        strategy: str = "cma",
        *,
        population_size: int | None = None,
        mu: int | None = None,
        sigma0: float | None = None,
        lr: float = 0.05,
        start: str = "default",
        batched: bool = True,
    ) -> None:
        validate_params(
            type(self).__name__,
            self._parameter_constraints,
            dict(
                strategy=strategy,
                population_size=population_size,
                mu=mu,
                sigma0=sigma0,
                lr=lr,
                start=start,
                batched=batched,
            ),
        )
        self.strategy, self.population_size, self.mu, self.batched = strategy, population_size, mu, batched
        self.sigma0, self.lr, self.start = sigma0, float(lr), start

    def setup(self, problem: BilevelProblem, seed: int) -> None:
        """Read the space and the learner's vector hyperparameters; the strategy is made at the first ``ask``.
        Raises ValueError when there is nothing to search."""
        super().setup(problem, seed)
        self.space = as_configspace(problem.space, seed=seed)
        self.cube = UnitCube(self.space)
        vectors = problem.learner.vector_hyperparameters(problem.task)
        self.vectors = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in vectors.items()}
        if self.cube.dim == 0 and not self.vectors:
            raise ValueError(
                "the es optimizer needs a search space with at least one non-constant hyperparameter "
                "or a learner with vector_hyperparameters"
            )
        self.es: Strategy | None = None
        self._pool: list[tuple[float, dict[str, Any]]] = []  # replayed (value, config)
        self._gen: _Generation | None = None
        self._gen_id = 0
        self._batch: _Batch | None = None
        self.rng = np.random.default_rng(seed)

    # -- strategy ---------------------------------------------------------------------------
    def _encode(self, config: Any) -> npt.NDArray[np.float64]:
        parts = [self.cube.encode(config)] + [
            np.asarray(config.get(k, v), dtype=np.float64).ravel() for k, v in self.vectors.items()
        ]
        return np.concatenate(parts)

    def _make_strategy(self) -> Strategy:
        if self._pool:
            x0 = self._encode(min(self._pool, key=lambda p: p[0])[1])
        else:
            x0 = self._encode(self.space.get_default_configuration())
            if self.start == "random":
                x0[: self.cube.dim] = self.rng.random(self.cube.dim)
        # unit-cube coordinates are clipped by the decoder; vectors are unbounded
        opts: dict[str, Any] = {"bounds": None if self.vectors else (0.0, 1.0), "seed": self.seed}
        if self.population_size is not None:
            opts["population_size"] = int(self.population_size)
        if self.strategy == "mu_plus_lambda":
            opts.update(sigma0=self.sigma0 or 0.2, mu=self.mu)
        elif self.strategy == "cma":
            opts.update(sigma0=self.sigma0 or 0.25)
        else:
            opts.update(sigma0=self.sigma0 or 0.1, lr=self.lr)
        return make_strategy(self.strategy, x0, **opts)

    def _decode(self, x: npt.NDArray[np.float64]) -> dict[str, Any]:
        d, out = self.cube.dim, {}
        for name, init in self.vectors.items():
            out[name] = x[d : d + init.size].copy()
            d += init.size
        u = np.clip(x[: self.cube.dim], 0, 1)
        for attempt in range(RESAMPLES):
            try:
                return {**self.cube.decode(u), **out}
            except ValueError:  # forbidden combination: resample near it, further out as attempts fail
                step = min(0.05 * 2 ** (attempt // 10), 1.0)
                u = np.clip(u + step * self.rng.standard_normal(u.shape), 0, 1)
        # a point deep inside a forbidden region: a valid configuration from the space's own sampler
        # (which draws only allowed configurations, from the search's seeded RNG)
        return {**self.cube.decode(self.cube.encode(dict(self.space.sample_configuration()))), **out}

    def _new_generation(self) -> _Generation:
        if self.es is None:
            self.es = self._make_strategy()
        X = self.es.ask()
        self._gen_id += 1
        self._gen = _Generation(self._gen_id, [self._decode(x) for x in X], np.full(len(X), np.nan))
        return self._gen

    # -- ask / tell ---------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Proposal]:
        """Up to ``n`` members of the current generation (a new one is asked from the strategy when none is out);
        empty while the rest of the generation is still being evaluated."""
        g = self._gen if self._gen is not None else self._new_generation()
        out: list[Proposal] = []
        while len(out) < n and g.next < len(g.configs):
            if math.isnan(g.fitness[g.next]):  # members told by a replay are not asked again
                out.append(Proposal(g.configs[g.next], info=(g.id, g.next)))
            g.next += 1
        return out  # empty while the rest of this generation is still being evaluated

    def _batchable(self, problem: BilevelProblem) -> bool:
        return (
            self.batched
            and self.cube.dim == 0
            and len(self.vectors) == 1
            and isinstance(problem.learner, PopulationLearner)
        )

    def evaluate(self, problem: BilevelProblem, proposal: Proposal) -> Evaluation:
        """Evaluate one member. In a batched generation (see the module docstring) the first member evaluated runs
        the whole generation with ``evaluate_population`` and the others take their values from it (an error of that
        run is raised for every member; a non-finite value raises FloatingPointError); otherwise the default fit and
        score."""
        g, learner = self._gen, problem.learner
        if (
            not self._batchable(problem)
            or not isinstance(learner, PopulationLearner)
            or proposal.info is None
            or g is None
            or proposal.info[0] != g.id
            or proposal.budget is not None
        ):
            return super().evaluate(problem, proposal)
        gid, i = proposal.info
        if self._batch is None or self._batch.id != gid:
            name = next(iter(self.vectors))
            t0 = time.perf_counter()
            values: npt.NDArray[np.float64] | None = None
            error: Exception | None = None
            try:
                values = learner.evaluate_population(
                    problem.splits,
                    np.stack([c[name] for c in g.configs]),
                    problem.objective,
                    task=problem.task,
                    seed=problem.seed,
                    name=name,
                    config={},
                )
            except Exception as exc:  # every member fails with the reason (as one by one would)
                error = exc
            self._batch = _Batch(gid, values, error, (time.perf_counter() - t0) / len(g.configs))
        batch = self._batch
        if batch.error is not None:
            raise batch.error
        assert batch.values is not None  # set whenever no error was recorded
        value = float(batch.values[i])
        if not math.isfinite(value):
            raise FloatingPointError("inner training diverged or the objective is not finite (batched generation)")
        return Evaluation(value, {"fit_time": batch.seconds, "batched": 1.0})

    def remote_evaluator(self) -> Callable[[BilevelProblem, Proposal], Evaluation]:
        """On Dask workers members are evaluated one by one (the default fit and score)."""
        from automl_bilevel.run.parallel import evaluate_problem

        return evaluate_problem

    def tell(self, proposal: Proposal, trial: Trial) -> None:
        """Record a member's value (a failed trial ranks last, ``inf``); once the whole generation is back, tell it to
        the strategy. A trial that is not a member of the current generation is ignored."""
        g = self._gen
        if proposal.info is None or g is None or proposal.info[0] != g.id or self.es is None:
            return
        g.fitness[proposal.info[1]] = trial.value if trial.ok else math.inf
        g.told += 1
        if g.told == len(g.configs):
            self.es.tell(g.fitness)
            self._gen = None

    def replay(self, trials: list[Trial]) -> None:
        """Run the recorded generations again (exact resume); trials that are not this strategy's
        proposals seed the first generation from their best instead."""
        if self._simulate(trials):
            return
        self.setup(self.problem, self.seed)  # back to a fresh strategy
        self._pool = [(t.value, dict(t.config)) for t in trials if t.ok]

    def _simulate(self, trials: list[Trial]) -> bool:
        """Ask each generation again and tell it the recorded values (trials are in completion order,
        a generation's members all told before the next one is asked); ``False`` if a trial is not a
        member of the generation it falls in."""
        pending = list(trials)
        while pending:
            g = self._new_generation()
            take, pending = pending[: len(g.configs)], pending[len(g.configs) :]
            for t in take:
                j = next(
                    (j for j, c in enumerate(g.configs) if math.isnan(g.fitness[j]) and same_config(c, t.config)),
                    None,
                )
                if j is None:
                    return False
                g.fitness[j] = t.value if t.ok else math.inf
                g.told += 1
            if g.told == len(g.configs):
                assert self.es is not None
                self.es.tell(g.fitness)
                self._gen = None
        return True

    @property
    def generation(self) -> int:
        """The number of generations told to the strategy so far (0 before the strategy is made)."""
        return 0 if self.es is None else self.es.generation


@hookimpl
def bilevel_register_optimizers() -> list[OptimizerSpec]:
    """Register the ``es`` optimizer (capability ``parallel``)."""
    return [
        OptimizerSpec(
            "es",
            EvolutionStrategy,
            "evolution strategies over the search space (cma | mu_plus_lambda | openai)",
            capabilities=frozenset({"parallel"}),
        )
    ]
