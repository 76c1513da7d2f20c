"""The thread policy and device resolution (automl_bilevel.run.runtime)."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info

from automl_bilevel import run_search
from automl_bilevel.run.runtime import (
    THREADS_ENV,
    WORK_PER_THREAD,
    available_cores,
    choose_threads,
    problem_work,
    resolve_device,
    thread_policy,
    threads,
)
from automl_bilevel.testing import quadratic_problem
from automl_bilevel_plugins.optimizers.random_search import RandomSearch


@pytest.fixture(autouse=True)
def two_threads(monkeypatch):
    """Every test starts from a caller's setting of 2 threads (whatever the machine has) and no
    user setting in the environment; the caller's setting is put back afterwards."""
    monkeypatch.delenv(THREADS_ENV, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info()}


def test_threads_sets_torch_and_blas_and_restores_the_callers_setting():
    outside = blas_threads()
    with threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
        assert blas_threads() == {1}
    assert torch.get_num_threads() == 2 and blas_threads() == outside


def test_the_setting_is_restored_after_an_exception():
    with pytest.raises(RuntimeError, match="inside"):
        with thread_policy(concurrent=4):
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == 2


def test_one_thread_when_evaluations_run_at_once_or_the_work_is_small():
    assert choose_threads(concurrent=3, work=1e12) == 1
    assert choose_threads(work=1000.0) == 1
    assert choose_threads() == 1  # unknown work counts as small


def test_large_work_gets_threads_up_to_the_cores_and_the_callers_setting():
    big = choose_threads(work=64 * WORK_PER_THREAD)
    assert big == min(64, available_cores(), 2)
    assert choose_threads(work=WORK_PER_THREAD) == 1  # one thread's worth
    assert choose_threads(work=64 * WORK_PER_THREAD, concurrent=2) == 1


def test_what_the_user_asks_for_wins(monkeypatch):
    assert choose_threads(concurrent=8, threads=3) == 3  # explicit argument first
    with threads(3):
        assert choose_threads(concurrent=8) == 3  # then an enclosing threads() block
        with thread_policy(concurrent=8) as n:
            assert n == 3 and torch.get_num_threads() == 3
        assert torch.get_num_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "2")
    assert choose_threads(concurrent=8) == 2  # then the environment
    assert choose_threads(concurrent=8, threads=1) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threads": 0}, "threads must be an integer >= 1, got 0"),
        ({"threads": -2}, "threads must be an integer >= 1"),
        ({"threads": 1.5}, "threads must be an integer >= 1, got 1.5"),
        ({"threads": True}, "threads must be an integer >= 1, got True"),
        ({"threads": "four"}, "threads must be an integer >= 1, got 'four'"),
        ({"concurrent": 0}, "concurrent must be an integer >= 1, got 0"),
        ({"work": -1.0}, "work must be a number >= 0"),
        ({"work": "big"}, "work must be a number >= 0"),
        ({"work": float("nan")}, "work must be a number >= 0"),
    ],
)
def test_bad_settings_are_refused_before_any_change(kwargs, match):
    with pytest.raises(ValueError, match=match):
        with thread_policy(**kwargs):
            pytest.fail("the block must not run")
    assert torch.get_num_threads() == 2


def test_a_bad_thread_count_in_threads_is_refused():
    with pytest.raises(ValueError, match="threads must be an integer >= 1, got 0"):
        with threads(0):
            pytest.fail("the block must not run")


@pytest.mark.parametrize("value", ["0", "many", "-1", "1.5"])
def test_a_bad_environment_setting_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(ValueError, match=f"environment variable {THREADS_ENV} must be an integer >= 1"):
        choose_threads()


def test_problem_work_is_the_largest_training_set():
    problem = quadratic_problem()
    assert problem_work(problem) == float(max(s.X_train.size for s in problem.splits))
    assert problem_work(object()) is None


class ThreadSpy:
    """Wraps a learner's fit to record torch's thread count during each fit."""

    def __init__(self, fit):
        self.fit, self.seen = fit, []

    def __call__(self, *args, **kwargs):
        self.seen.append(torch.get_num_threads())
        return self.fit(*args, **kwargs)


def test_run_search_evaluates_under_the_policy_and_restores_the_setting():
    problem = quadratic_problem()
    spy = ThreadSpy(problem.learner.fit)
    problem.learner.fit = spy
    run_search(problem, RandomSearch(), n_iter=4, seed=0)
    assert spy.seen == [1] * 4
    assert torch.get_num_threads() == 2
    with threads(2):  # the user's setting reaches the trials
        spy.seen.clear()
        run_search(problem, RandomSearch(), n_iter=2, seed=0)
        assert spy.seen == [2, 2]


def test_the_estimator_search_and_refit_run_under_the_policy(monkeypatch):
    from sklearn.datasets import load_iris

    from automl_bilevel import BilevelClassifier
    from automl_bilevel_plugins.learners.torch_learners import TorchLearner

    spy = ThreadSpy(TorchLearner.fit)
    monkeypatch.setattr(TorchLearner, "fit", lambda self, *a, **k: spy(self, *a, **k))
    X, y = load_iris(return_X_y=True)
    BilevelClassifier(
        learner="logistic", optimizer="random", n_iter=2, random_state=0, tracking=False, learner_params={"epochs": 2}
    ).fit(X, y)
    assert spy.seen == [1, 1, 1]  # two trials and the refit
    assert torch.get_num_threads() == 2


# -- devices ---------------------------------------------------------------------------------------


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected
    assert resolve_device().type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 0)])
def test_cuda_without_cuda_is_a_clear_error(device):
    with pytest.raises(ValueError, match=r"requested but CUDA is not available.*use device='cpu' or 'auto'"):
        resolve_device(device)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is present here")
def test_mps_without_mps_is_a_clear_error():
    with pytest.raises(ValueError, match="MPS .* not available"):
        resolve_device("mps")


def test_a_missing_cuda_index_names_the_devices_there_are(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"only 2 CUDA device\(s\) exist \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:-1", "cpu:1", "mps:0", "", "auto:0", 0, None, 1.0])
def test_malformed_devices_are_refused(device):
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda', 'cuda:N'"):
        resolve_device(device)
