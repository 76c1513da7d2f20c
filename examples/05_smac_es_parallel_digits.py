"""05 - Black-box outer optimizers on two Dask workers: SMAC3 and CMA-ES tune an MLP on digits.

Each optimizer evaluates two trials at a time on a local Dask cluster (started and closed by
``fit``) and appends its trials to a checkpoint file: interrupt it with Ctrl-C, run it again, and
the search continues where it stopped. Scripts that start a cluster need the ``__main__`` guard.
"""

import os
import tempfile
from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from automl_bilevel import BilevelClassifier

if __name__ == "__main__":
    quick = os.environ.get("AUTOML_BILEVEL_EXAMPLE_QUICK") == "1"
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    checkpoints = Path(os.environ.get("AUTOML_BILEVEL_CHECKPOINTS", tempfile.mkdtemp()))
    for optimizer, params in [("smac", {"facade": "hpo"}), ("es", {"strategy": "cma", "population_size": 6})]:
        est = BilevelClassifier(
            learner="mlp",
            learner_params={"epochs": 5 if quick else 30},
            objective="val_error",
            optimizer=optimizer,
            optimizer_params=params,
            n_iter=6 if quick else 40,
            n_workers=2,
            checkpoint=checkpoints / f"digits_mlp_{optimizer}.jsonl",
            random_state=0,
        ).fit(X_train, y_train)
        print(
            f"{optimizer}: {est.n_trials_} trials, validation error {est.best_value_:.4f}, "
            f"test accuracy {est.score(X_test, y_test):.4f}, best {est.best_params_}"
        )
