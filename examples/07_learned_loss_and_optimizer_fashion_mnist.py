"""07 - Learned inner components on Fashion-MNIST, each tracked in MLflow with the learned network
stored as an artifact of its run:

1. a meta-loss network evolved by (μ+λ)-ES through the host (one child run per candidate);
2. the same network trained by hypergradients through the inner SGD steps (ML3);
3. an L2O-DM learned optimizer meta-trained with the local-entropy flatness regularizer;

all three through the package's one search loop; then each is used inside an ordinary torch learner
on unseen tasks. Needs the Fashion-MNIST IDX files
(docs/guide/data.md). AUTOML_BILEVEL_EXAMPLE_QUICK=1: a tiny run of a few seconds.

Expected run time: about 7 minutes on one free CPU core, as benchmarks/learned.py measured the
same outer loops (benchmarks/results/learned.md): the ES about 2 minutes (400 evaluations), ML3
about half a minute (60 steps and 13 held-out checks), meta-training the learned optimizer with the
local-entropy regularizer about 3.5 minutes (200 meta-iterations), the evaluations on unseen tasks
the rest. On a busy machine it takes several times longer. Each outer loop shows a progress bar
(stderr) with its steps, the best value and the time left for your machine.
"""

import os
import sys

import numpy as np
import torch

from automl_bilevel import Run
from automl_bilevel.frontends.data import DatasetNotFoundError, load_idx_dataset
from automl_bilevel.methods.learned import (
    LearnedOptimizer,
    LSTMOptimizer,
    MLPOptimizee,
    meta_train_optimizer,
    sample_tasks,
    train_optimizee,
)
from automl_bilevel.methods.recipes.metaloss import evaluate_loss, evolve_loss_network, train_loss_network_ml3

if __name__ == "__main__":
    quick = os.environ.get("AUTOML_BILEVEL_EXAMPLE_QUICK") == "1"
    # small operations (at most 100 training examples per task): one thread is faster than several
    # spinning against each other and against other processes; the benchmark times above use one too
    torch.set_num_threads(1)
    try:
        X, y = load_idx_dataset("fashion-mnist", "train")
    except DatasetNotFoundError as exc:
        sys.exit(str(exc))
    X = X.reshape(len(X), -1) / 255.0
    train_X, train_y, test_X, test_y = X[:50000], y[:50000], X[50000:], y[50000:]
    n_val = 300 if quick else 1000
    train = sample_tasks(train_X, train_y, 2 if quick else 8, n_train=(10, 100), n_val=n_val, seed=0)
    held = sample_tasks(train_X, train_y, 2 if quick else 8, n_train=(10, 100), n_val=n_val, seed=1)
    unseen = sample_tasks(test_X, test_y, 3 if quick else 20, n_train=(10, 100), n_val=n_val, seed=2)

    # 1. (μ+λ)-ES: each candidate loss network is a trial (a child run)
    n_eval = 20 if quick else 400
    with Run.tracked(
        "metaloss-es",
        learner="mlp",
        objective="val_error",
        optimizer="es",
        n_iter=n_eval,
        trials_are_steps=False,
        verbose=True,
    ) as run:
        es_net, search = evolve_loss_network(
            train, n_classes=10, n_evaluations=n_eval, population_size=10, sigma0=0.003, run=run
        )
        run.finish(artifacts={"loss_network": es_net})
    print(
        f"ES: best training-task error {search.best.value:.3f} after {len(search.trials)} candidates; "
        f"MLflow run {run.info.get('mlflow_run_id')}"
    )

    # 2. ML3: outer steps are metric steps; held-out accuracy chooses the state to keep
    steps = 4 if quick else 60
    with Run.tracked(
        "metaloss-ml3",
        learner="mlp",
        objective="val_cross_entropy",
        optimizer="hypergradient",
        n_iter=steps,
        params={"outer_lr": 3e-4, "tasks_per_step": 4},
        verbose=True,
    ) as run:
        ml3_net, res = train_loss_network_ml3(
            train, n_classes=10, outer_steps=steps, outer_lr=3e-4, held_out=held, eval_every=2 if quick else 5, run=run
        )
        run.finish(artifacts={"loss_network": ml3_net})

    print(f"evaluating three losses on {len(unseen)} unseen tasks ...", file=sys.stderr, flush=True)
    for name, loss in {"cross-entropy": "default", "ES loss": es_net, "ML3 loss": ml3_net}.items():
        accs = evaluate_loss(loss, unseen, n_classes=10)
        print(f"{name:14s} unseen-task accuracy {np.mean(accs):.3f} ± {np.std(accs):.3f}")

    # 3. a learned optimizer with the local-entropy regularizer
    iters = 5 if quick else 200
    net = LSTMOptimizer()
    n = 3000 if quick else 20000
    with Run.tracked(
        "l2o-entropy",
        learner="mlp_784_20_10",
        objective="meta_loss",
        optimizer="hypergradient",
        n_iter=iters,
        params={"regularizer": "entropy", "alpha": 1e-2},
        verbose=True,
    ) as run:
        history = meta_train_optimizer(
            net,
            lambda seed: MLPOptimizee(train_X[:n], train_y[:n], seed=seed),
            meta_iters=iters,
            regularizer="entropy",
            alpha=1e-2,
            meta_lr=3e-3,
            run=run,
        )
        run.finish(artifacts={"learned_optimizer": net})
    task = MLPOptimizee(train_X[n : 2 * n], train_y[n : 2 * n], hidden=(40,), seed=7)  # a wider MLP than in training
    w, losses = train_optimizee(LearnedOptimizer(net), task, 40 if quick else 200)
    print(
        f"learned optimizer on a 784-40-10 MLP: test accuracy {task.accuracy(w, test_X, test_y):.3f}; "
        f"best meta-loss {min(history['meta_loss']):.3f}"
    )
