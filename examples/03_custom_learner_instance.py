"""03 - Bring your own inner learner without packaging a plugin: pass an instance.

A closed-form ridge classifier (one-hot least squares) whose L2 weight is the hyperparameter.
To share it with others, register it from a package (see examples/thirdparty_plugin/).
"""

import os

import numpy as np
from ConfigSpace import ConfigurationSpace, Float
from sklearn.datasets import load_wine

from automl_bilevel import BilevelClassifier, InnerLearner
from automl_bilevel.testing import check_learner


class RidgeOneHot(InnerLearner):
    def config_space(self, task):
        return ConfigurationSpace(space=[Float("alpha", (1e-4, 1e3), log=True, default=1.0)])

    def fit(self, X, y, config, *, task, seed, budget=None):
        mu, sd = X.mean(0), X.std(0) + 1e-12
        Z = np.c_[(X - mu) / sd, np.ones(len(X))]
        Y = np.eye(task.n_outputs)[y]
        W = np.linalg.solve(Z.T @ Z + config["alpha"] * np.eye(Z.shape[1]), Z.T @ Y)
        return Model(W, mu, sd)

    def missing_predict_proba(self, task):  # so objective="val_loss" is refused before any trial
        return "RidgeOneHot predicts labels only (least-squares scores are no probabilities); use objective='val_error'"


class Model:
    def __init__(self, W, mu, sd):
        self.W, self.mu, self.sd = W, mu, sd

    def predict(self, X):
        return (np.c_[(X - self.mu) / self.sd, np.ones(len(X))] @ self.W).argmax(1)


check_learner(RidgeOneHot())  # the contract checks every plugin author can run
X, y = load_wine(return_X_y=True)
quick = os.environ.get("AUTOML_BILEVEL_EXAMPLE_QUICK") == "1"
est = BilevelClassifier(
    RidgeOneHot(), objective="val_error", n_iter=5 if quick else 25, cv=3, random_state=0, tracking=False
).fit(X, y)
print("best alpha:", est.best_params_["alpha"], "CV error:", round(est.best_value_, 4))
