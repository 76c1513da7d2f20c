"""Plots of a search, named as Optuna users know them (``optuna.visualization``).

Each function takes a fitted estimator, a list of :class:`~automl_bilevel.Trial` records, a checkpoint
file or an MLflow run id (see :func:`load`) and returns a :class:`matplotlib.figure.Figure` (drawn
without pyplot, so no display is needed):

- :func:`history`: the objective per trial (or per outer step) and the best so far;
- :func:`importances`: how much each hyperparameter explains the objective (a random forest's mean
  decrease in impurity, as Optuna's ``MeanDecreaseImpurityImportanceEvaluator``);
- :func:`parallel_coordinates`: every trial as a line across the hyperparameters, coloured by its value;
- :func:`slice`: the objective against each hyperparameter;
- :func:`contour`: the objective over two hyperparameters;
- :func:`trajectories`: hyperparameters moved by gradients, per outer step; tensors per element (or
  their spread when they have many elements).

:func:`save_all` writes the useful ones as PNG files; the MLflow plugin logs them at the end of a run
and ``automl-bilevel plot SOURCE --out DIR`` writes them from the command line. This package does not
import mlflow (only :func:`load` does, for a run id).
"""

from __future__ import annotations

from automl_bilevel.plot._plots import (
    PLOTS,
    contour,
    history,
    importances,
    parallel_coordinates,
    save_all,
    slice,
    trajectories,
)
from automl_bilevel.plot._source import Trials, load

__all__ = [
    "PLOTS",
    "Trials",
    "contour",
    "history",
    "importances",
    "load",
    "parallel_coordinates",
    "save_all",
    "slice",
    "trajectories",
]
