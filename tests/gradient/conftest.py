"""These tests call the hypergradient library directly, outside the search loop and its thread
policy: run them under the policy's choice for small work (one intra-op thread), or torch's spinning
threads make each tiny Hessian-vector product cost milliseconds on a shared machine (measured 60x)."""

from __future__ import annotations

import pytest

from automl_bilevel.run.runtime import threads


@pytest.fixture(autouse=True)
def one_thread():
    with threads(1):
        yield
