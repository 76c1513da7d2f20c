"""02 - Any scikit-learn estimator as the inner learner: an SVC pipeline, 5-fold CV objective.

The search space names are the pipeline's set_params names; hyperparameters are found by random
search on cross-validated error, then the pipeline is refitted on all training data.
"""

import os

from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from automl_bilevel import BilevelClassifier

quick = os.environ.get("AUTOML_BILEVEL_EXAMPLE_QUICK") == "1"
X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)

est = BilevelClassifier(
    learner="sklearn",
    learner_params={"estimator": make_pipeline(StandardScaler(), SVC())},
    objective="val_error",
    search_space={"svc__C": (1e-2, 1e3, "log"), "svc__gamma": (1e-5, 1.0, "log"), "svc__kernel": ["rbf", "sigmoid"]},
    cv=5,
    n_iter=4 if quick else 30,
    random_state=0,
).fit(X_train, y_train)
print("best params:", est.best_params_)
print(f"5-fold CV error {est.best_value_:.4f}; test accuracy {est.score(X_test, y_test):.4f}")
