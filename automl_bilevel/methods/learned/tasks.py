"""Small-data classification tasks: a few labelled training examples and a large validation set."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from automl_bilevel.core.problem import Split


def sample_tasks(
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    n_tasks: int,
    n_train: int | tuple[int, int] = (10, 100),
    n_val: int = 1000,
    seed: int = 0,
) -> list[Split]:
    """``n_tasks`` splits over all classes of (X, y): ``n_train`` training examples (or a size drawn
    from the range, at least one per class) and ``n_val`` validation examples, disjoint."""
    X, y = np.asarray(X), np.asarray(y)
    classes = np.unique(y)
    rng = np.random.default_rng(seed)
    lo, hi = (n_train, n_train) if isinstance(n_train, (int, np.integer)) else n_train
    if lo < len(classes):
        raise ValueError(f"a task needs at least one training example per class ({len(classes)}), got {lo}")
    if hi + n_val > len(y):
        raise ValueError(f"{hi} training + {n_val} validation examples need more than the {len(y)} available")
    out = []
    for _ in range(int(n_tasks)):
        n = int(rng.integers(lo, hi + 1))
        order = rng.permutation(len(y))
        first = np.array([order[y[order] == c][0] for c in classes])  # one of each class first
        rest = order[~np.isin(order, first)]
        train = np.concatenate([first, rest[: n - len(classes)]])
        val = rest[n - len(classes) : n - len(classes) + n_val]
        out.append(Split(X[train], y[train], X[val], y[val]))
    return out
