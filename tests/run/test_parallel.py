"""Parallel evaluation on Dask distributed, and resuming an interrupted search from its checkpoint."""

from __future__ import annotations

import json
import os
import time

import pytest
from sklearn.datasets import load_breast_cancer

from automl_bilevel import BilevelClassifier, Proposal, run_search
from automl_bilevel.core.components import InnerLearner, OuterOptimizer
from automl_bilevel.run.journal import JournalMismatchError
from automl_bilevel.run.parallel import DaskExecutor, SequentialExecutor, make_executor
from automl_bilevel.testing import quadratic_problem

SPACE = {"x": (0.0, 1.0), "y": (0.0, 1.0)}


class SlowQuadratic(InnerLearner):
    """(x - 0.3)² + (y - 0.6)² after ``delay`` seconds; the worker process dies at x == 0.123."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def param_names(self, task):
        return None

    def fit(self, X, y, config, *, task, seed, budget=None):
        if config["x"] == 0.123:
            os._exit(13)  # a crash no exception handler sees: the worker process is gone
        time.sleep(self.delay)
        return Quadratic((config["x"] - 0.3) ** 2 + (config["y"] - 0.6) ** 2)


class Quadratic:
    def __init__(self, value):
        self.value = value

    def predict(self, X):
        return [0] * len(X)


def value_objective(model, X, y, *, task):
    return model.value


class Listed(OuterOptimizer):
    """Proposes the given configurations in order."""

    def __init__(self, configs):
        self.configs = list(configs)

    def ask(self, n=1):
        out, self.configs = self.configs[:n], self.configs[n:]
        return [Proposal(c) for c in out]

    def tell(self, proposal, trial):
        pass


def problem_with(learner):
    p = quadratic_problem(0)
    p.learner = learner
    from automl_bilevel.core.components import OuterObjective

    class Value(OuterObjective):
        def __call__(self, model, X, y, *, task):
            return value_objective(model, X, y, task=task)

    p.objective = Value()
    return p


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes; a task whose worker dies is not retried."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    yield lc
    lc.close()


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return X[:200], y[:200]


# -- Dask ---------------------------------------------------------------------------------
def test_trials_run_concurrently_on_two_workers(cluster):
    configs = [{"x": 0.1 * i, "y": 0.5} for i in range(6)]
    with DaskExecutor(address=cluster.scheduler_address) as ex:
        assert ex.slots == 2
        # warm-up: each worker imports this module and the package on its first task
        run_search(problem_with(SlowQuadratic(0.2)), Listed(configs[:2]), n_iter=2, seed=0, executor=ex)
        t0 = time.perf_counter()
        res = run_search(problem_with(SlowQuadratic(0.5)), Listed(configs), n_iter=6, seed=0, executor=ex)
        wall = time.perf_counter() - t0
    assert len(res.trials) == 6 and all(t.ok for t in res.trials)
    assert sorted(t.config["x"] for t in res.trials) == pytest.approx([c["x"] for c in configs])
    assert wall < 0.8 * sum(t.duration for t in res.trials)  # 3 s of work in well under 2.4 s
    assert res.best.config["x"] == pytest.approx(0.3)


def test_a_worker_that_dies_is_a_failed_trial_and_the_search_goes_on(cluster):
    configs = [{"x": 0.5, "y": 0.5}, {"x": 0.123, "y": 0.5}, {"x": 0.3, "y": 0.6}, {"x": 0.9, "y": 0.1}]
    with DaskExecutor(address=cluster.scheduler_address) as ex:
        res = run_search(problem_with(SlowQuadratic()), Listed(configs), n_iter=4, seed=0, executor=ex)
    dead = [t for t in res.trials if t.config["x"] == 0.123]
    assert len(res.trials) == 4 and len(dead) == 1
    assert not dead[0].ok and "Dask worker" in dead[0].error
    assert sum(t.ok for t in res.trials) == 3 and res.best.value == pytest.approx(0.0)


def test_evaluations_cancelled_with_lost_data_are_resubmitted(cluster):
    # a dying worker can take the only copy of the scattered problem with it; Dask then cancels the
    # evaluations that were waiting on it ("lost dependencies"): they are resubmitted, not lost
    problem, opt = problem_with(SlowQuadratic()), Listed([{"x": 0.5, "y": 0.5}, {"x": 0.9, "y": 0.1}])
    with DaskExecutor(address=cluster.scheduler_address) as ex:
        ex.start(opt, problem)
        proposals = opt.ask(2)
        for p in proposals:
            ex.submit(p)
        ex.client.cancel([f for _, _, f in ex._in_flight.values()])
        got = [ex.next_done() for _ in proposals]
    assert sorted(id(p) for p, _ in got) == sorted(id(p) for p in proposals)
    assert all(o.evaluation is not None for _, o in got)


@pytest.mark.parametrize(
    "optimizer,params",
    [("es", {"strategy": "mu_plus_lambda", "population_size": 4}), ("smac", {"n_initial": 2}), ("random", {})],
)
def test_parallel_optimizers_through_the_estimator(cluster, cancer, optimizer, params):
    est = BilevelClassifier(
        "sklearn",
        "val_error",
        optimizer,
        optimizer_params=params,
        n_iter=8,
        dask_address=cluster.scheduler_address,
        tracking=False,
        random_state=0,
    ).fit(*cancer)
    assert est.n_trials_ == 8 and all(s == "COMPLETE" for s in est.history_["status"])
    assert len({repr(sorted(p.items())) for p in est.history_["params"]}) >= 6


def test_a_sequential_optimizer_refuses_workers(cancer):
    from automl_bilevel_plugins.optimizers.random_search import RandomSearch

    # an instance declares no capability unless its class says so (every built-in name is 'parallel')
    with pytest.raises(ValueError, match="one proposal at a time"):
        BilevelClassifier("logistic", "val_loss", RandomSearch(), n_workers=2, tracking=False).fit(*cancer)


def test_make_executor_is_sequential_by_default():
    assert isinstance(make_executor(), SequentialExecutor)
    with pytest.raises(ValueError, match="n_workers"):
        DaskExecutor(0)


@pytest.mark.slow
def test_a_local_cluster_of_its_own_is_started_and_closed(cancer):
    est = BilevelClassifier(
        "sklearn", "val_error", "random", n_iter=4, n_workers=2, tracking=False, random_state=0
    ).fit(*cancer)
    assert est.n_trials_ == 4


# -- checkpoint and resume ------------------------------------------------------------------------
class Interrupting(InnerLearner):
    """Behaves like ``SlowQuadratic`` but raises KeyboardInterrupt on fit number ``at`` (as Ctrl-C would)."""

    calls = 0

    def __init__(self, at=None):
        self.at = at

    def param_names(self, task):
        return None

    def fit(self, X, y, config, *, task, seed, budget=None):
        type(self).calls += 1
        if self.at is not None and type(self).calls == self.at:
            raise KeyboardInterrupt
        return SlowQuadratic().fit(X, y, config, task=task, seed=seed)


def objective_value():
    from automl_bilevel.core.components import OuterObjective

    class Value(OuterObjective):
        def __call__(self, model, X, y, *, task):
            return model.value

    return Value()


@pytest.mark.parametrize("optimizer", ["smac", "es", "random"])
def test_an_interrupted_search_continues_from_its_checkpoint(tmp_path, cancer, optimizer):
    path = tmp_path / "search.jsonl"
    params = {"smac": {"n_initial": 3}, "es": {"population_size": 4}, "random": {}}[optimizer]

    def make(at):
        Interrupting.calls = 0
        return BilevelClassifier(
            Interrupting(at),
            objective_value(),
            optimizer,
            search_space=SPACE,
            n_iter=8,
            optimizer_params=params,
            checkpoint=str(path),
            tracking=False,
        )

    with pytest.raises(KeyboardInterrupt), pytest.warns(RuntimeWarning, match="interrupted after 3"):
        make(at=4).fit(*cancer)
    first = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    assert len(first) == 3
    est = make(at=None).fit(*cancer)
    assert est.n_trials_ == 8 and Interrupting.calls == 5 + 1  # 5 new trials and the refit
    assert est.history_["params"][:3] == [r["config"] for r in first]
    later = {repr(sorted(p.items())) for p in est.history_["params"][3:]}
    assert not later & {repr(sorted(r["config"].items())) for r in first}  # nothing evaluated twice
    assert len(path.read_text().splitlines()) == 1 + 8


def test_a_checkpoint_of_another_search_is_refused_without_prompting(tmp_path, cancer):
    path = tmp_path / "search.jsonl"
    BilevelClassifier("sklearn", "val_error", "random", n_iter=2, checkpoint=path, tracking=False).fit(*cancer)
    with pytest.raises(JournalMismatchError, match="optimizer"):
        BilevelClassifier("sklearn", "val_error", "es", n_iter=3, checkpoint=path, tracking=False).fit(*cancer)
    with pytest.raises(JournalMismatchError, match="data"):
        BilevelClassifier("sklearn", "val_error", "random", n_iter=3, checkpoint=path, tracking=False).fit(
            cancer[0][:150], cancer[1][:150]
        )
    (tmp_path / "other.jsonl").write_text("not json\n")
    with pytest.raises(JournalMismatchError, match="not an automl_bilevel checkpoint"):
        BilevelClassifier("sklearn", "val_error", "random", checkpoint=tmp_path / "other.jsonl", tracking=False).fit(
            *cancer
        )


def test_a_record_cut_short_by_a_crash_is_ignored(tmp_path, cancer):
    path = tmp_path / "search.jsonl"
    BilevelClassifier("sklearn", "val_error", "random", n_iter=3, checkpoint=path, tracking=False, random_state=0).fit(
        *cancer
    )
    with path.open("a") as fh:
        fh.write('{"config": {"C": 1.0}, "val')
    est = BilevelClassifier(
        "sklearn", "val_error", "random", n_iter=5, checkpoint=path, tracking=False, random_state=1
    ).fit(*cancer)
    assert est.n_trials_ == 5


def test_child_runs_are_logged_by_the_driver_for_trials_run_on_workers(cluster, cancer, tracking):
    import mlflow

    uri, exp = tracking
    est = BilevelClassifier(
        "sklearn",
        "val_error",
        "random",
        n_iter=4,
        dask_address=cluster.scheduler_address,
        tracking_uri=uri,
        experiment_name=exp,
        random_state=0,
    ).fit(*cancer)
    client = mlflow.MlflowClient(uri)
    children = client.search_runs(
        [client.get_experiment_by_name(exp).experiment_id], f"tags.mlflow.parentRunId = '{est.mlflow_run_id_}'"
    )
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
