"""Evolution strategies on flat vectors, generation by generation (ask a population, tell its
fitness). Lower fitness is better; a NaN or infinite fitness marks a failed individual, which is
ranked last and never survives selection while any individual succeeded.

Used by the ``es`` outer optimizer (search spaces through :class:`~automl_bilevel.core.space.UnitCube`)
and directly for networks as outer variables (a flattened parameter vector).

- :class:`MuPlusLambda`: (μ+λ)-ES with one self-adaptive mutation strength per individual,
  σ' = σ·exp(τ·N(0,1)), θ' = θ + σ'·N(0, I); the best μ of parents and offspring survive
  (as used to evolve a meta-loss network, Hai & Liu, arXiv 2103.08249).
- :class:`CMAES`: CMA-ES from the ``cma`` package, for up to a few hundred dimensions.
- :class:`OpenAIES`: antithetic natural-gradient ES with centred ranks and Adam (Salimans et al.
  2017), for high-dimensional vectors such as network weights.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

STRATEGIES = ("mu_plus_lambda", "cma", "openai")

FloatArray = npt.NDArray[np.float64]
_Module = TypeVar("_Module", bound="torch.nn.Module")


def _finite_or_worst(fitness: npt.ArrayLike) -> FloatArray:
    """Failed (non-finite) fitness values replaced by a value worse than every finite one."""
    f = np.asarray(fitness, dtype=np.float64).copy()
    bad = ~np.isfinite(f)
    if bad.any():
        ok = f[~bad]
        worst = (ok.max() + abs(ok.max()) + 1.0) if ok.size else 1e12
        f[bad] = worst
    return f


class Strategy(ABC):
    """An ES over R^d, optionally clipped to a box ``bounds=(low, high)``."""

    def __init__(
        self, x0: npt.ArrayLike, *, population_size: int, bounds: tuple[float, float] | None = None, seed: int = 0
    ) -> None:
        x0 = np.asarray(x0, dtype=np.float64).ravel()
        if x0.size == 0:
            raise ValueError("an evolution strategy needs at least one dimension")
        if int(population_size) < 2:
            raise ValueError(f"population_size must be >= 2, got {population_size}")
        self.dim, self.population_size, self.bounds = x0.size, int(population_size), bounds
        self.rng = np.random.default_rng(seed)
        self.x0 = self._clip(x0)
        self.best_x, self.best_f = self.x0.copy(), math.inf
        self.generation = 0
        self._asked: FloatArray | None = None

    def _clip(self, x: FloatArray) -> FloatArray:
        return np.clip(x, *self.bounds) if self.bounds is not None else x

    def ask(self) -> FloatArray:
        """The next population, shape (population_size, dim). Call ``tell`` before asking again."""
        if self._asked is not None:
            raise RuntimeError("tell the fitness of the last population before asking for a new one")
        self._asked = self._clip(np.atleast_2d(self._sample()))
        return self._asked.copy()

    def tell(self, fitness: npt.ArrayLike) -> None:
        """The fitness (lower is better) of the population from the last ``ask``, one value per row; a
        non-finite value counts as a failed member. Updates the best point and the search distribution; raises
        ``RuntimeError`` without a pending population and ``ValueError`` for the wrong number of values."""
        if self._asked is None:
            raise RuntimeError("ask for a population before telling its fitness")
        raw = np.asarray(fitness, dtype=np.float64).ravel()
        if raw.shape != (len(self._asked),):
            raise ValueError(f"expected {len(self._asked)} fitness values, got {raw.shape}")
        ok = np.isfinite(raw)
        if ok.any():
            i = int(np.argmin(np.where(ok, raw, np.inf)))
            if raw[i] < self.best_f:
                self.best_f, self.best_x = float(raw[i]), self._asked[i].copy()
        X, self._asked = self._asked, None
        self._update(X, raw)
        self.generation += 1

    @abstractmethod
    def _sample(self) -> FloatArray: ...

    @abstractmethod
    def _update(self, X: FloatArray, fitness: FloatArray) -> None: ...


class MuPlusLambda(Strategy):
    """(μ+λ)-ES with self-adaptive per-individual σ. The first population is x0 and λ−1 mutants of it."""

    def __init__(
        self,
        x0: npt.ArrayLike,
        *,
        population_size: int = 20,
        mu: int | None = None,
        sigma0: float = 0.1,
        tau: float | None = None,
        sigma_bounds: tuple[float, float] = (1e-8, 1.0),
        bounds: tuple[float, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(x0, population_size=population_size, bounds=bounds, seed=seed)
        self.mu = int(mu) if mu is not None else max(1, self.population_size // 4)
        if not 1 <= self.mu <= self.population_size:
            raise ValueError(f"mu must be in [1, population_size], got {mu}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be positive, got {sigma0}")
        self.tau = float(tau) if tau is not None else 1.0 / math.sqrt(2.0 * self.dim)
        self.sigma_bounds = sigma_bounds
        self.sigma0 = float(sigma0)
        self.parents: list[tuple[FloatArray, float, float]] = []  # (x, sigma, fitness)
        self._sigmas: FloatArray | None = None

    def _mutate(self, x: FloatArray, sigma: float) -> tuple[FloatArray, float]:
        s = float(np.clip(sigma * math.exp(self.tau * self.rng.standard_normal()), *self.sigma_bounds))
        return x + s * self.rng.standard_normal(self.dim), s

    def _sample(self) -> FloatArray:
        if not self.parents:
            kids = [(self.x0.copy(), self.sigma0)] + [
                self._mutate(self.x0, self.sigma0) for _ in range(self.population_size - 1)
            ]
        else:
            picks = self.rng.integers(len(self.parents), size=self.population_size)
            kids = [self._mutate(self.parents[i][0], self.parents[i][1]) for i in picks]
        self._sigmas = np.array([s for _, s in kids])
        return np.stack([x for x, _ in kids])

    def _update(self, X: FloatArray, fitness: FloatArray) -> None:
        assert self._sigmas is not None  # drawn by _sample with the population being told
        f = _finite_or_worst(fitness)
        pool = self.parents + [(X[i], float(self._sigmas[i]), float(f[i])) for i in range(len(X))]
        order = sorted(range(len(pool)), key=lambda i: (pool[i][2], i))  # stable: older wins ties
        self.parents = [pool[i] for i in order[: self.mu]]

    @property
    def sigmas(self) -> FloatArray:
        """The step sizes σ of the current parents."""
        return np.array([s for _, s, _ in self.parents])


class CMAES(Strategy):
    """CMA-ES through the ``cma`` package (bounds handled by its boundary transformation)."""

    def __init__(
        self,
        x0: npt.ArrayLike,
        *,
        population_size: int | None = None,
        sigma0: float = 0.2,
        bounds: tuple[float, float] | None = None,
        seed: int = 0,
        options: dict[str, Any] | None = None,
    ) -> None:
        import cma

        dim = np.asarray(x0).size
        popsize = int(population_size) if population_size else 4 + int(3 * math.log(max(dim, 1)))
        super().__init__(x0, population_size=popsize, bounds=bounds, seed=seed)
        opts: dict[str, Any] = {
            "popsize": popsize,
            "seed": int(seed) % (2**31 - 2) + 1,
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
            "tolfun": 0,
            "tolx": 0,
            "tolflatfitness": 10**9,
            "tolfunhist": 0,
            "tolstagnation": 10**9,
        }
        if bounds is not None:
            opts["bounds"] = [bounds[0], bounds[1]]
        opts.update(options or {})
        self.es = cma.CMAEvolutionStrategy(self.x0.tolist(), float(sigma0), opts)
        self._cma_x: list[Any] | None = None

    def _sample(self) -> FloatArray:
        self._cma_x = self.es.ask()
        return np.array(self._cma_x, dtype=np.float64)

    def _update(self, X: FloatArray, fitness: FloatArray) -> None:
        self.es.tell(self._cma_x, _finite_or_worst(fitness).tolist())

    @property
    def sigma(self) -> float:
        """CMA-ES's current overall step size σ."""
        return float(self.es.sigma)


class OpenAIES(Strategy):
    """Antithetic ES: θ ± σε pairs, centred-rank utilities, Adam on the estimated gradient."""

    def __init__(
        self,
        x0: npt.ArrayLike,
        *,
        population_size: int = 20,
        sigma0: float = 0.05,
        lr: float = 0.05,
        weight_decay: float = 0.0,
        bounds: tuple[float, float] | None = None,
        seed: int = 0,
    ) -> None:
        if int(population_size) % 2:
            population_size = int(population_size) + 1  # antithetic pairs
        super().__init__(x0, population_size=population_size, bounds=bounds, seed=seed)
        if not sigma0 > 0 or not lr > 0:
            raise ValueError(f"sigma0 and lr must be positive, got {sigma0}, {lr}")
        self.sigma, self.lr, self.weight_decay = float(sigma0), float(lr), float(weight_decay)
        self.theta = self.x0.copy()
        self._m, self._v, self._t = np.zeros(self.dim), np.zeros(self.dim), 0
        self._eps: FloatArray | None = None

    def _sample(self) -> FloatArray:
        half = self.rng.standard_normal((self.population_size // 2, self.dim))
        self._eps = np.concatenate([half, -half])
        return self.theta + self.sigma * self._eps

    def _update(self, X: FloatArray, fitness: FloatArray) -> None:
        assert self._eps is not None  # drawn by _sample with the population being told
        f = _finite_or_worst(fitness)
        ranks = np.empty(len(f))
        ranks[np.argsort(f, kind="stable")] = np.arange(len(f))
        util = 0.5 - ranks / max(len(f) - 1, 1)  # best +0.5 ... worst -0.5
        grad = -(util @ self._eps) / (len(f) * self.sigma) + self.weight_decay * self.theta  # descent on f
        self._t += 1
        self._m = 0.9 * self._m + 0.1 * grad
        self._v = 0.999 * self._v + 0.001 * grad**2
        mhat, vhat = self._m / (1 - 0.9**self._t), self._v / (1 - 0.999**self._t)
        self.theta = self._clip(self.theta - self.lr * mhat / (np.sqrt(vhat) + 1e-8))


def make_strategy(name: str, x0: npt.ArrayLike, **options: Any) -> Strategy:
    """Build a strategy by name (one of :data:`STRATEGIES`)."""
    classes: dict[str, type[Strategy]] = {"mu_plus_lambda": MuPlusLambda, "cma": CMAES, "openai": OpenAIES}
    if name not in classes:
        raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
    return classes[name](x0, **options)


def module_to_vector(module: torch.nn.Module) -> FloatArray:
    """A torch module's parameters as one flat float64 vector (the ES search point)."""
    import torch

    return torch.nn.utils.parameters_to_vector(module.parameters()).detach().double().numpy().copy()


def vector_to_module(vector: npt.ArrayLike, module: _Module) -> _Module:
    """Load a flat vector (from :func:`module_to_vector`) into ``module``'s parameters, in place."""
    import torch

    vec = torch.as_tensor(np.asarray(vector, dtype=np.float64))
    n = sum(p.numel() for p in module.parameters())
    if vec.ndim != 1 or vec.numel() != n:
        raise ValueError(
            f"expected a flat vector of {n} values for {type(module).__name__}, got shape {tuple(vec.shape)}"
        )
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(vec.to(next(module.parameters()).dtype), module.parameters())
    return module
