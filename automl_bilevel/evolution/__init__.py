"""Library: evolution strategies over flat vectors ((μ+λ)-ES, CMA-ES, OpenAI-ES) and the mapping of
torch modules to and from flat vectors. The ``es`` plugin drives them through the one search loop."""

from __future__ import annotations

from automl_bilevel.evolution.strategies import (
    CMAES,
    STRATEGIES,
    MuPlusLambda,
    OpenAIES,
    Strategy,
    make_strategy,
    module_to_vector,
    vector_to_module,
)

__all__ = [
    "CMAES",
    "STRATEGIES",
    "MuPlusLambda",
    "OpenAIES",
    "Strategy",
    "make_strategy",
    "module_to_vector",
    "vector_to_module",
]
