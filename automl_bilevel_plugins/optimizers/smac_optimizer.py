"""The ``smac`` outer optimizer: SMAC3 itself, driven through its ask/tell interface.

Facades (``facade=``):

- ``"hpo"`` (default): random-forest Bayesian optimization (``HyperparameterOptimizationFacade``);
- ``"bb"``: Gaussian-process Bayesian optimization (``BlackBoxFacade``), for small continuous spaces;
- ``"mf"``: multi-fidelity BO with Hyperband (``MultiFidelityFacade``);
- ``"hb"``: Hyperband with random sampling (``HyperbandFacade``).

For ``mf`` and ``hb`` a trial's budget is a fraction in [``min_budget``, 1] of the learner's full
effort (epochs for the torch learners, a training-data fraction for ``sklearn``): the learner
must declare ``multi_fidelity``. Registered also as ``smac_mf``, which the host checks for that.

The space comes from the learner (or the user), conditions and priors included: with
``use_priors=True`` the acquisition function is weighted by the hyperparameters' prior
distributions (πBO, SMAC's ``PriorAcquisitionFunction``). ``initial_design`` adds user-given
configurations to SMAC's initial design; ``n_initial`` sets its size.

SMAC's files go to a temporary directory (removed afterwards); SMAC's own resume is never used,
since it may prompt with ``input()``. Resuming is the host's checkpoint: the trials of an earlier run
are told to SMAC as finished trials before its first ask (``replay``), so it continues with the
model they give.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ConfigSpace import Configuration

from automl_bilevel import (
    BilevelProblem,
    OptimizerSpec,
    OuterOptimizer,
    Proposal,
    Trial,
    as_configspace,
    config_dict,
    hookimpl,
)
from automl_bilevel.core.space import same_config
from automl_bilevel.core.validation import Integral, Interval, Real, StrOptions, validate_params

if TYPE_CHECKING:  # smac is imported when an optimizer is set up, not with the plugin
    from smac.runhistory import TrialValue

FACADES = ("hpo", "bb", "mf", "hb")


def _ordered_local_search(maximizer: Any) -> Any:
    """``maximizer`` with its local search made independent of ``PYTHONHASHSEED``.

    SMAC's ``LocalSearch._get_init_points_from_previous_configs`` removes duplicate start points with
    ``list(set(...))``; a ``Configuration`` hashes its ``repr`` (a string), so the order of the start
    points, hence the search and the proposals, changed with the process's hash seed: two runs with the
    same ``random_state`` matched on 15 of 40 configurations. SMAC's docstring promises "all but the
    first occurrence ... dropped", in order: that is what this subclass does (``dict.fromkeys``), with the
    same draws from the same random state."""
    import itertools

    import numpy as np
    from smac.acquisition.maximizer.local_search import LocalSearch
    from smac.utils.configspace import convert_configurations_to_array

    class OrderedLocalSearch(LocalSearch):
        def _get_init_points_from_previous_configs(
            self,
            previous_configs: list[Configuration],
            n_points: int,
            additional_start_points: list[tuple[float, Configuration]] | None,
        ) -> list[Configuration]:
            assert self._acquisition_function is not None
            if self._acquisition_function.model is not None:
                conf_array = convert_configurations_to_array(previous_configs)
                costs = self._acquisition_function.model.predict_marginalized(conf_array)[0]
                if len(costs.shape) == 2 and costs.shape[1] > 1:
                    weights = np.array([self._rng.rand() for _ in range(costs.shape[1])])
                    costs = costs @ (weights / np.sum(weights))
                random = self._rng.rand(len(costs))
                indices = np.lexsort((random.flatten(), costs.flatten()))
                by_cost = [previous_configs[ind] for ind in indices][:n_points]
            else:
                by_cost = []
            extra = [asp[1] for asp in additional_start_points] if additional_start_points is not None else []
            return list(dict.fromkeys(itertools.chain(by_cost, extra)))

    local = getattr(maximizer, "_local_search", None)
    if type(local) is LocalSearch:
        local.__class__ = OrderedLocalSearch  # same state, the one method replaced
    return maximizer


def _facade_class(name: str) -> Any:
    """The facade class (a ``type[AbstractFacade]`` whose class methods take facade-specific keywords:
    ``get_intensifier(eta=...)`` for the multi-fidelity ones, ``max_config_calls=`` for the others)."""
    import smac

    return {
        "hpo": smac.HyperparameterOptimizationFacade,
        "bb": smac.BlackBoxFacade,
        "mf": smac.MultiFidelityFacade,
        "hb": smac.HyperbandFacade,
    }[name]


class SMACOptimizer(OuterOptimizer):
    """SMAC3 behind the ask/tell loop; settings are checked against ``_parameter_constraints``."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "facade": [StrOptions(set(FACADES))],
        "n_initial": [Interval(Integral, 0, None, closed="left"), None],
        "initial_design": [list, tuple, None],
        "use_priors": ["boolean"],
        "min_budget": [Interval(Real, 0, 1, closed="neither")],
        "eta": [Interval(Integral, 2, None, closed="left")],
        "random_probability": [Interval(Real, 0, 1, closed="both"), None],
        "n_trials": [Interval(Integral, 1, None, closed="left"), None],
        "logging_level": [Interval(Integral, 0, 50, closed="both")],
    }

    def __init__(
        self,
        facade: str = "hpo",
        *,
        n_initial: int | None = None,
        initial_design: Sequence[Mapping[str, Any]] | None = None,
        use_priors: bool = False,
        min_budget: float = 1 / 9,
        eta: int = 3,
        random_probability: float | None = None,
        n_trials: int | None = None,
        logging_level: int = 40,
    ) -> None:
        validate_params(
            type(self).__name__,
            self._parameter_constraints,
            dict(
                facade=facade,
                n_initial=n_initial,
                initial_design=initial_design,
                use_priors=use_priors,
                min_budget=min_budget,
                eta=eta,
                random_probability=random_probability,
                n_trials=n_trials,
                logging_level=logging_level,
            ),
        )
        if initial_design is not None and not all(isinstance(c, Mapping) for c in initial_design):
            raise TypeError("initial_design must be a list of configurations (dicts)")
        self.facade, self.n_initial, self.initial_design = facade, n_initial, initial_design
        self.use_priors, self.min_budget, self.eta = use_priors, float(min_budget), int(eta)
        self.random_probability, self.n_trials, self.logging_level = random_probability, n_trials, logging_level

    @property
    def multi_fidelity(self) -> bool:
        """Whether the facade uses budgets (``mf``, ``hb``)."""
        return self.facade in ("mf", "hb")

    @property
    def requires(self) -> frozenset[str]:
        """Checked by the host next to the registered spec: budgets need a multi-fidelity learner."""
        return frozenset({"multi_fidelity"}) if self.multi_fidelity else frozenset()

    def setup(self, problem: BilevelProblem, seed: int) -> None:
        """Build SMAC's scenario and facade, writing to a temporary folder removed with the optimizer. Raises
        ValueError on an empty search space."""
        from smac import Scenario

        super().setup(problem, seed)
        self.space = as_configspace(problem.space, seed=seed)
        if not len(self.space):
            raise ValueError("SMAC needs a search space with at least one hyperparameter")
        self._dir = Path(tempfile.mkdtemp(prefix="automl_bilevel_smac_"))
        weakref.finalize(self, shutil.rmtree, str(self._dir), True)
        n_trials = int(self.n_trials or self.n_iter or 100)
        self.scenario = Scenario(
            self.space,
            output_directory=self._dir / "smac",
            deterministic=True,
            n_trials=max(n_trials, 1),
            seed=int(seed) % (2**31 - 1),
            # budgets only for multi-fidelity facades (None is Scenario's default: no budgets)
            min_budget=self.min_budget if self.multi_fidelity else None,
            max_budget=1.0 if self.multi_fidelity else None,
        )
        cls = _facade_class(self.facade)
        extra = [Configuration(self.space, values=dict(c)) for c in (self.initial_design or [])]
        design = (
            {"additional_configs": extra or None}
            if self.facade == "hb"  # random sampling: no design size
            else {"n_configs": self.n_initial, "additional_configs": extra or None}
        )
        kwargs: dict[str, Any] = {
            "acquisition_maximizer": _ordered_local_search(cls.get_acquisition_maximizer(self.scenario)),
            "initial_design": cls.get_initial_design(self.scenario, **design),
            "intensifier": (
                cls.get_intensifier(self.scenario, eta=self.eta)
                if self.multi_fidelity
                else cls.get_intensifier(self.scenario, max_config_calls=1)
            ),
        }
        if self.use_priors:
            from smac.acquisition.function import PriorAcquisitionFunction

            kwargs["acquisition_function"] = PriorAcquisitionFunction(
                cls.get_acquisition_function(self.scenario), decay_beta=max(n_trials / 10, 1.0)
            )
        if self.random_probability is not None:
            from smac.random_design import ProbabilityRandomDesign

            kwargs["random_design"] = ProbabilityRandomDesign(self.random_probability, seed=self.scenario.seed)
        self._costs = (math.inf, -math.inf)  # lowest and highest successful cost
        self.smac = cls(self.scenario, None, overwrite=True, logging_level=self.logging_level, **kwargs)

    def ask(self, n: int = 1) -> list[Proposal]:
        """``n`` proposals from SMAC, each with its budget; ``info`` holds SMAC's trial info for ``tell``."""
        out = []
        for _ in range(n):
            info = self.smac.ask()
            out.append(Proposal(config_dict(info.config), budget=info.budget, info=info))
        return out

    def _value(self, trial: Trial) -> TrialValue:
        """A failed trial costs a little more than the worst success so far (an infinite cost would
        break the Gaussian-process model)."""
        from smac.runhistory import StatusType, TrialValue

        if trial.ok:
            self._costs = (min(self._costs[0], trial.value), max(self._costs[1], trial.value))
            return TrialValue(cost=float(trial.value), time=float(trial.duration), status=StatusType.SUCCESS)
        lo, hi = self._costs
        crash = hi + max(hi - lo, abs(hi), 1.0) if math.isfinite(hi) else 1e6
        return TrialValue(
            cost=crash,
            time=float(trial.duration),
            status=StatusType.CRASHED,
            additional_info={"error": trial.error or ""},
        )

    def tell(self, proposal: Proposal, trial: Trial) -> None:
        """Tell SMAC the trial's cost (a failed trial costs a little more than the worst success so far)."""
        self.smac.tell(proposal.info, self._value(trial), save=False)

    def replay(self, trials: list[Trial]) -> None:
        """Bring SMAC to where an interrupted run stopped. Exact when the trials are this search's own
        proposals (same seed, space and ``n_iter``): SMAC is asked again, trial by trial, and told the
        recorded values, so its random state and intensifier are those of the uninterrupted run and
        the next ask proposes what that run proposed. Otherwise (other proposals: another ``n_iter``
        or space) the trials are told to a fresh SMAC as finished trials."""
        if self._ask_again(trials):
            return
        self.setup(self.problem, self.seed)  # a fresh SMAC: nothing asked
        self._tell_finished(trials)

    def _ask_again(self, trials: list[Trial]) -> bool:
        for trial in trials:
            info = self.smac.ask()
            budget = info.budget if self.multi_fidelity else None
            if not same_config(config_dict(info.config), trial.config) or (
                budget is not None and trial.budget is not None and not math.isclose(budget, trial.budget)
            ):
                return False
            self.smac.tell(info, self._value(trial), save=False)
        return True

    def _tell_finished(self, trials: list[Trial]) -> None:
        from smac.runhistory import TrialInfo

        for trial in trials:
            try:
                cfg = Configuration(self.space, values=dict(trial.config))
            except Exception:  # not a point of this space (written by another optimizer): skip it
                continue
            budget = trial.budget if self.multi_fidelity else None
            if self.multi_fidelity and budget is None:
                budget = 1.0
            self.smac.tell(TrialInfo(cfg, seed=0, budget=budget), self._value(trial), save=False)


def _mf(**kwargs: Any) -> SMACOptimizer:
    kwargs.setdefault("facade", "mf")
    return SMACOptimizer(**kwargs)


@hookimpl
def bilevel_register_optimizers() -> list[OptimizerSpec]:
    """Register ``smac`` (capability ``parallel``) and ``smac_mf`` (multi-fidelity; requires ``multi_fidelity``)."""
    return [
        OptimizerSpec(
            "smac",
            SMACOptimizer,
            "SMAC3 Bayesian optimization (facade: hpo | bb | mf | hb)",
            capabilities=frozenset({"parallel"}),
        ),
        OptimizerSpec(
            "smac_mf",
            _mf,
            "SMAC3 multi-fidelity BO with Hyperband (budget: learner epochs / data)",
            requires=frozenset({"multi_fidelity"}),
            capabilities=frozenset({"parallel"}),
        ),
    ]
