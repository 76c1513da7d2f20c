"""01 - Tune an MLP on scikit-learn's digits with random search, tracked in MLflow.

    python examples/01_quickstart_digits.py
    mlflow ui --backend-store-uri sqlite:///mlflow.db      # then open http://127.0.0.1:5000

Set AUTOML_BILEVEL_EXAMPLE_QUICK=1 for a few-second run.
"""

import os

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from automl_bilevel import BilevelClassifier

quick = os.environ.get("AUTOML_BILEVEL_EXAMPLE_QUICK") == "1"
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)

est = BilevelClassifier(
    learner="mlp",  # torch MLP; its default space: lr, weight_decay, hidden_units, n_layers, activation
    objective="val_loss",  # validation cross-entropy on a 20 % hold-out
    optimizer="random",  # the baseline every other optimizer is compared with
    n_iter=3 if quick else 20,
    learner_params={"epochs": 10} if quick else None,
    random_state=0,
    verbose=1,  # progress bar with the best value so far
)
est.fit(X_train, y_train)
print("best params:", est.best_params_)
print(f"best val_loss {est.best_value_:.4f}, test accuracy {est.score(X_test, y_test):.4f}")
print("MLflow run:", est.mlflow_run_id_, "in", est.run_info_.get("mlflow_tracking_uri"))
