"""Black-box outer optimizers: the unit-cube encoding, the ES strategies, the ``es`` and ``smac`` plugins."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ConfigSpace import (
    Categorical,
    Configuration,
    ConfigurationSpace,
    EqualsCondition,
    Float,
    ForbiddenEqualsClause,
    Integer,
)
from ConfigSpace import Normal as NormalPrior
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.svm import SVC

from automl_bilevel import BilevelClassifier, CapabilityError, run_search
from automl_bilevel.core.space import UnitCube
from automl_bilevel.evolution import CMAES, MuPlusLambda, OpenAIES, make_strategy
from automl_bilevel.testing import check_optimizer, quadratic_problem
from automl_bilevel_plugins.optimizers.evolution import EvolutionStrategy
from automl_bilevel_plugins.optimizers.smac_optimizer import SMACOptimizer


def svc_space(forbid=False):
    cs = ConfigurationSpace(seed=0)
    kernel, gamma = Categorical("kernel", ["rbf", "linear"]), Float("gamma", (1e-4, 1.0), log=True)
    cs.add(
        [
            kernel,
            gamma,
            Float("C", (1e-2, 100.0), log=True),
            Integer("degree", (1, 5)),
            EqualsCondition(gamma, kernel, "rbf"),
        ]
    )
    if forbid:
        cs.add(ForbiddenEqualsClause(cs["degree"], 5))
    return cs


# -- unit cube --------------------------------------------------------------------------------
def test_unit_cube_decodes_every_point_to_a_valid_configuration_and_round_trips():
    cube, rng = UnitCube(svc_space()), np.random.default_rng(0)
    assert cube.dim == 4
    for _ in range(200):
        cfg = cube.decode(rng.random(cube.dim))
        assert ("gamma" in cfg) == (cfg["kernel"] == "rbf")  # the condition holds
        back = cube.decode(cube.encode(cfg))
        assert back.keys() == cfg.keys()
        for k, v in cfg.items():
            assert back[k] == (pytest.approx(v, rel=1e-9) if isinstance(v, float) else v)
    lo, hi = cube.decode(np.zeros(4)), cube.decode(np.ones(4))
    assert math.isclose(lo["C"], 1e-2) and math.isclose(hi["C"], 100.0) and hi["degree"] == 5
    with pytest.raises(ValueError, match="length 4"):
        cube.decode(np.zeros(3))


def test_unit_cube_refuses_a_forbidden_point():
    cube = UnitCube(svc_space(forbid=True))
    with pytest.raises(ValueError):
        cube.decode(np.ones(4))


# -- strategies -------------------------------------------------------------------------------
def sphere(X):
    return ((X - 0.7) ** 2).sum(axis=1)


@pytest.mark.parametrize(
    "name,opts",
    [
        ("mu_plus_lambda", {"population_size": 16, "sigma0": 0.2}),
        ("cma", {"sigma0": 0.2}),
        ("openai", {"population_size": 16, "sigma0": 0.05, "lr": 0.05}),
    ],
)
def test_strategies_minimise_a_sphere_despite_failed_members(name, opts):
    es = make_strategy(name, np.full(8, 0.1), bounds=(0.0, 1.0), seed=0, **opts)
    start = float(sphere(es.x0[None])[0])
    for _ in range(60):
        X = es.ask()
        assert X.shape == (es.population_size, 8) and (X >= 0).all() and (X <= 1).all()
        f = sphere(X)
        f[0] = np.nan  # one failed member per generation
        es.tell(f)
    assert es.best_f < 0.02 * start and np.isfinite(es.best_f)
    assert es.generation == 60


def test_mu_plus_lambda_keeps_the_best_mu_and_adapts_sigma():
    es = MuPlusLambda(np.zeros(5), population_size=12, mu=3, sigma0=0.5, seed=1)
    X = es.ask()
    es.tell(sphere(X))
    parents = sorted(sphere(X))[:3]
    assert [p[2] for p in es.parents] == pytest.approx(parents)
    for _ in range(40):
        X = es.ask()
        es.tell(sphere(X))
    assert len(es.parents) == 3 and es.sigmas.max() < 0.5  # σ shrinks as the optimum nears
    assert all(p[2] <= es.best_f + 1e-12 or p[2] >= es.best_f for p in es.parents)


def test_strategies_refuse_misuse():
    es = OpenAIES(np.zeros(3), population_size=5, seed=0)
    assert es.population_size == 6  # antithetic pairs
    with pytest.raises(RuntimeError, match="ask"):
        es.tell(np.zeros(6))
    es.ask()
    with pytest.raises(RuntimeError, match="tell"):
        es.ask()
    with pytest.raises(ValueError, match="6 fitness"):
        es.tell(np.zeros(4))
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("nelder_mead", np.zeros(2))
    with pytest.raises(ValueError, match="at least one dimension"):
        CMAES(np.zeros(0))


def test_all_failed_generation_does_not_break_a_strategy():
    for cls in (MuPlusLambda, CMAES, OpenAIES):
        es = cls(np.full(3, 0.5), population_size=6, bounds=(0, 1), seed=0)
        es.tell(np.full(len(es.ask()), np.nan))
        es.tell(sphere(es.ask()))
        assert np.isfinite(es.best_f)


# -- plugins: the optimizer contract ------------------------------------------------------------
@pytest.mark.parametrize(
    "factory",
    [
        lambda: EvolutionStrategy(),
        lambda: EvolutionStrategy("mu_plus_lambda", population_size=8),
        lambda: EvolutionStrategy("openai", population_size=8, start="random"),
        lambda: SMACOptimizer(n_initial=5),
    ],
    ids=["cma", "mu_plus_lambda", "openai", "smac"],
)
def test_black_box_optimizers_meet_the_contract(factory, request):
    check_optimizer(factory, n_iter=12 if "smac" in request.node.name else 24)


def test_es_waits_for_a_generation_before_asking_more():
    opt = EvolutionStrategy("mu_plus_lambda", population_size=4)
    opt.setup(quadratic_problem(), 0)
    first = opt.ask(10)
    assert len(first) == 4 and opt.ask(1) == []  # generation 1 still out
    from automl_bilevel.core.trials import Trial

    for i, p in enumerate(first):
        opt.tell(p, Trial(i, p.config, 0.1 * i))
    assert opt.generation == 1 and len(opt.ask(2)) == 2


def test_es_rejects_bad_settings_and_empty_spaces():
    with pytest.raises(ValueError, match="strategy"):
        EvolutionStrategy("genetic")
    with pytest.raises(ValueError, match="sigma0"):
        EvolutionStrategy(sigma0=3.0)
    problem = quadratic_problem()
    problem.space = ConfigurationSpace()
    with pytest.raises(ValueError, match="at least one"):
        EvolutionStrategy().setup(problem, 0)


def _mostly_forbidden_space():
    """Only kernel='rbf' is allowed (two thirds of the kernel coordinate are forbidden)."""
    cs = ConfigurationSpace(seed=0)
    kernel = Categorical("kernel", ["rbf", "poly", "linear"])
    cs.add([kernel, Float("C", (1e-2, 100.0), log=True), Integer("degree", (1, 5))])
    cs.add([ForbiddenEqualsClause(kernel, "linear"), ForbiddenEqualsClause(kernel, "poly")])
    return cs


@pytest.mark.parametrize("resamples", [60, 0], ids=["nearby", "sampler-fallback"])
def test_es_turns_points_deep_in_a_forbidden_region_into_allowed_configurations(resamples, monkeypatch):
    import automl_bilevel_plugins.optimizers.evolution as evolution

    monkeypatch.setattr(evolution, "RESAMPLES", resamples)
    problem = quadratic_problem()
    problem.space = _mostly_forbidden_space()
    opt = EvolutionStrategy()
    opt.setup(problem, 0)
    kernel_axis = opt.cube.names.index("kernel")
    rng = np.random.default_rng(0)
    for _ in range(50):
        x = rng.uniform(-3.0, 4.0, opt.cube.dim)  # CMA-ES points may leave the unit cube
        x[kernel_axis] = 5.0  # clipped to 1.0: 'linear', forbidden
        config = opt._decode(x)
        assert config["kernel"] == "rbf"
        Configuration(problem.space, values=config)  # raises for a forbidden or invalid configuration


@pytest.mark.parametrize("seed", [8])
def test_es_searches_a_space_with_forbidden_clauses_to_the_end(seed):
    """A seed on which CMA-ES drifted into the forbidden region and aborted the fit before the fix."""
    cs = ConfigurationSpace(seed=seed)
    kernel, degree = Categorical("kernel", ["rbf", "poly", "linear"]), Integer("degree", (1, 5))
    cs.add([kernel, Float("C", (1e-2, 100.0), log=True), degree])
    cs.add(ForbiddenEqualsClause(kernel, "linear"))
    X, y = load_breast_cancer(return_X_y=True)
    est = BilevelClassifier(
        "sklearn",
        "val_error",
        "es",
        learner_params={"estimator": SVC()},
        search_space=cs,
        n_iter=30,
        tracking=False,
        random_state=seed,
    ).fit(X[:150], y[:150])
    assert est.n_trials_ == 30 and all(p["kernel"] != "linear" for p in est.history_["params"])


# -- plugins through the estimator, on real data ---------------------------------------------------
@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return X[:300], y[:300]


def test_es_tunes_a_conditional_svc_space(cancer):
    est = BilevelClassifier(
        "sklearn",
        "val_error",
        "es",
        learner_params={"estimator": SVC()},
        search_space=svc_space(),
        optimizer_params={"population_size": 6},
        n_iter=18,
        tracking=False,
        random_state=0,
    ).fit(*cancer)
    assert est.n_trials_ == 18 and est.best_value_ < 0.15
    for params in est.history_["params"]:
        assert ("gamma" in params) == (params["kernel"] == "rbf")


def test_smac_runs_through_the_estimator_with_an_initial_design(cancer):
    start = {"C": 3.0, "gamma": 1e-3, "kernel": "rbf", "degree": 2}
    est = BilevelClassifier(
        "sklearn",
        "val_error",
        "smac",
        learner_params={"estimator": SVC()},
        search_space=svc_space(),
        n_iter=10,
        tracking=False,
        random_state=0,
        optimizer_params={"n_initial": 3, "initial_design": [start]},
    ).fit(*cancer)
    assert est.n_trials_ == 10 and start in est.history_["params"]
    assert est.best_value_ <= est.history_["value"][est.history_["params"].index(start)]


def test_smac_multi_fidelity_uses_hyperband_budgets_and_needs_a_multi_fidelity_learner(cancer):
    X, y = load_digits(return_X_y=True)
    est = BilevelClassifier(
        "logistic", "val_error", "smac_mf", learner_params={"epochs": 9}, n_iter=14, tracking=False, random_state=0
    ).fit(X[:400], y[:400])
    budgets = sorted(set(est.history_["budget"]))
    assert budgets[0] == pytest.approx(1 / 9) and len(budgets) >= 2 and all(0 < b <= 1 for b in budgets)
    assert est.best_trial_.budget == max(budgets)  # the best is judged at the highest budget reached

    class NoBudget(SVC):
        pass

    from automl_bilevel.core.components import InnerLearner

    class Plain(InnerLearner):
        def fit(self, X, y, config, *, task, seed, budget=None):  # pragma: no cover - never reached
            raise AssertionError

    with pytest.raises(CapabilityError, match="multi_fidelity"):
        BilevelClassifier(
            Plain(),
            "val_error",
            "smac",
            optimizer_params={"facade": "mf"},
            tracking=False,
            search_space={"a": (0.0, 1.0)},
        ).fit(*cancer)


def test_smac_priors_steer_the_search():
    problem = quadratic_problem(0)
    cs = ConfigurationSpace(seed=0)
    cs.add(
        [
            Float("x", (0.0, 1.0), distribution=NormalPrior(0.3, 0.05)),
            Float("y", (0.0, 1.0), distribution=NormalPrior(0.6, 0.05)),
        ]
    )
    problem.space = cs
    res = run_search(problem, SMACOptimizer(use_priors=True, n_initial=4), n_iter=12, seed=0)
    assert res.best.value < 0.01


def test_smac_failed_trials_do_not_break_the_gaussian_process():
    res = run_search(
        quadratic_problem(0), SMACOptimizer("bb", n_initial=3, initial_design=[{"x": 0.99, "y": 0.5}]), n_iter=8, seed=0
    )
    assert any(not t.ok for t in res.trials) and len(res.trials) == 8 and res.best.ok


def test_smac_needs_a_search_space():
    problem = quadratic_problem()
    problem.space = ConfigurationSpace()
    with pytest.raises(ValueError, match="at least one hyperparameter"):
        SMACOptimizer().setup(problem, 0)


def test_smac_rejects_bad_settings():
    with pytest.raises(ValueError, match="facade"):
        SMACOptimizer("tpe")
    with pytest.raises(ValueError, match="min_budget"):
        SMACOptimizer("mf", min_budget=1.5)
    with pytest.raises(TypeError, match="initial_design"):
        SMACOptimizer(initial_design=[0.5])


# -- vector outer variables (a network's weights) ------------------------------------------------------
class LinearFromVector:
    """A model whose predictions come from a weight vector chosen by the outer optimizer."""

    def __init__(self, module):
        self.module = module

    def predict(self, X):
        import torch

        with torch.no_grad():
            return self.module(torch.as_tensor(X, dtype=torch.float32)).argmax(1).numpy()


def test_es_evolves_a_torch_module_given_as_a_vector_hyperparameter():
    import torch

    from automl_bilevel.core.components import InnerLearner
    from automl_bilevel.evolution import module_to_vector, vector_to_module

    X, y = load_digits(return_X_y=True)
    X = X[:400] / 16.0

    class Evolved(InnerLearner):
        """No inner training at all: the outer variable is the whole linear layer."""

        def vector_hyperparameters(self, task):
            torch.manual_seed(0)
            return {"net": module_to_vector(torch.nn.Linear(64, 10))}

        def param_names(self, task):
            return None

        def fit(self, X, y, config, *, task, seed, budget=None):
            return LinearFromVector(vector_to_module(config["net"], torch.nn.Linear(64, 10)))

    est = BilevelClassifier(
        Evolved(),
        "val_error",
        "es",
        optimizer_params={"strategy": "openai", "sigma0": 0.05, "population_size": 20, "lr": 0.05},
        search_space={},
        n_iter=600,
        tracking=False,
        random_state=0,
    ).fit(X, y[:400])
    first = est.history_["value"][0]
    assert est.best_params_["net"].shape == (650,) and est.best_value_ < first - 0.3  # far better than the init
    assert est.score(X, y[:400]) > 0.3  # chance is 0.1

    with pytest.raises(ValueError, match="650 values"):
        vector_to_module(np.zeros(3), torch.nn.Linear(64, 10))
