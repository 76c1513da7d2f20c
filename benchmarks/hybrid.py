"""Hybrid search against black-box and gradient-only outer optimizers, at equal wall-clock, on
Fashion-MNIST.

Problem: a torch MLP (``mlp`` learner) on a few thousand Fashion-MNIST training and validation images,
scored on the official test set. Space: number of hidden layers (0-2), hidden units, activation,
inner optimizer (SGD / momentum / Adam), learning rate, weight decay, and one L2 weight per input
pixel (784, ``l2_per_feature``). Validation cross-entropy is the outer objective.

Methods, each given the same wall-clock budget per seed:

- ``hybrid``: SMAC (HPO facade) over the discrete part, ``--steps`` (3) reverse-mode hypergradient steps
  per trial over lr, weight decay, momentum and the 784 pixel weights (warm-started from the best
  trial's tuned values);
- ``hypergradient``: lr, weight decay and the 784 pixel weights by hypergradients, the architecture
  fixed at the learner's defaults (it cannot choose it);
- ``smac``, ``random``, ``es`` (ours), ``smac3_direct`` (SMAC3's own ``optimize()`` loop) and
  ``optuna_tpe`` (Optuna's TPESampler): on the space without the 784 pixel weights, which black-box
  methods cannot search in this budget.

After the budget, each method's best configuration is refitted on train + validation and scored on
the test set.

    python benchmarks/hybrid.py            # 5 seeds, 60 s per method and seed: about 35 minutes
    python benchmarks/hybrid.py --quick    # 1 seed, 5 s per method, small data: under a minute

Writes benchmarks/results/hybrid[_quick].json, .md and an anytime-curve PNG. Torch runs
single-threaded; SMAC spends about 0.25 s of its own per trial on these machines, which dominates
on cheap trials (random search has none).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, machine, write  # noqa: E402
from blackbox import anytime_curve, optuna_tpe, smac3_direct  # noqa: E402
from ConfigSpace import Categorical, ConfigurationSpace, EqualsCondition, Float, Integer  # noqa: E402

from automl_bilevel import BilevelProblem, Split, Task, run_search  # noqa: E402
from automl_bilevel.data import load_idx_dataset  # noqa: E402
from automl_bilevel_plugins.learners.torch_learners import MLPLearner  # noqa: E402
from automl_bilevel_plugins.objectives.validation import ValidationLoss  # noqa: E402
from automl_bilevel_plugins.optimizers.evolution import EvolutionStrategy  # noqa: E402
from automl_bilevel_plugins.optimizers.hybrid import HybridOptimizer  # noqa: E402
from automl_bilevel_plugins.optimizers.hypergradient import HypergradientOptimizer  # noqa: E402
from automl_bilevel_plugins.optimizers.random_search import RandomSearch  # noqa: E402
from automl_bilevel_plugins.optimizers.smac_optimizer import SMACOptimizer  # noqa: E402

N_TRIALS_HINT = 200
TASK = Task("classification", 784, 10)


def space() -> ConfigurationSpace:
    s = ConfigurationSpace(
        space=[
            Integer("n_layers", (0, 2), default=1),
            Integer("hidden_units", (16, 128), log=True, default=64),
            Categorical("activation", ["relu", "tanh"], default="relu"),
            Categorical("optimizer", ["sgd", "momentum", "adam"], default="adam"),
            Float("lr", (1e-4, 0.3), log=True, default=1e-2),
            Float("weight_decay", (1e-7, 1e-1), log=True, default=1e-4),
            Float("momentum", (0.0, 0.99), default=0.9),
        ]
    )
    s.add(EqualsCondition(s["momentum"], s["optimizer"], "momentum"))
    return s


def problem_for(seed: int, quick: bool):
    X, y = load_idx_dataset("fashion-mnist", "train")
    Xt, yt = load_idx_dataset("fashion-mnist", "test")
    X, Xt = X.reshape(len(X), -1) / 255.0, Xt.reshape(len(Xt), -1) / 255.0
    n = 500 if quick else 2000
    idx = np.random.default_rng(seed).permutation(len(X))[: 2 * n]
    split = Split(X[idx[:n]], y[idx[:n]], X[idx[n:]], y[idx[n:]])
    test = (Xt[:2000], yt[:2000]) if quick else (Xt, yt)
    learner = MLPLearner(epochs=30 if quick else 60, batch_size=n, standardize=False)
    return learner, split, test


# -- methods --------------------------------------------------------------------------------------
def ours(factory, with_pixels=False):
    def run(problem, seconds, seed):
        opt = factory()
        res = run_search(problem, opt, n_iter=10**6, seed=seed, timeout=seconds)
        best = opt.best_config() or (res.best.config if res.best else None)
        return res.trials, best, res.duration

    return run


def hypergradient_fixed_architecture(problem, seconds, seed):
    problem.space = ConfigurationSpace([problem.space["lr"], problem.space["weight_decay"]])
    return ours(lambda: HypergradientOptimizer(outer_lr=0.1, tensor_hyperparameters=("l2_per_feature",)))(
        problem, seconds, seed
    )


#: the learner's default architecture and inner optimizer: the first configuration of hybrid, smac and random
DEFAULT = {"n_layers": 1, "hidden_units": 64, "activation": "relu", "optimizer": "adam"}


def methods(steps: int):
    return {
        "hybrid": ours(
            lambda: HybridOptimizer(
                "smac",
                {"n_trials": N_TRIALS_HINT, "initial_design": [DEFAULT]},
                steps=steps,
                warm_start=True,
                tensor_hyperparameters=["l2_per_feature"],
            )
        ),
        "hypergradient": hypergradient_fixed_architecture,
        "smac": ours(
            lambda: SMACOptimizer(
                n_trials=N_TRIALS_HINT, initial_design=[{**DEFAULT, "lr": 1e-2, "weight_decay": 1e-4}]
            )
        ),
        "random": ours(lambda: RandomSearch(start_with_default=True)),
        "es": ours(EvolutionStrategy),
        "smac3_direct": smac3_direct,
        "optuna_tpe": optuna_tpe,
    }


def run_one(method, seed, seconds, quick, steps):
    learner, split, (Xte, yte) = problem_for(seed, quick)
    problem = BilevelProblem(learner, ValidationLoss(), space(), TASK, [split], seed)
    trials, best_cfg, wall = methods(steps)[method](problem, seconds, seed)
    curve = anytime_curve(trials)
    best = curve[-1][1] if curve else math.inf
    test, refit_error = math.nan, None
    if best_cfg is not None:
        X, y = np.concatenate([split.X_train, split.X_val]), np.concatenate([split.y_train, split.y_val])
        try:
            model = learner.fit(X, y, dict(best_cfg), task=TASK, seed=seed)
            test = float(np.mean(model.predict(Xte) == yte))
        except Exception as exc:  # recorded, the benchmark goes on
            refit_error = f"{type(exc).__name__}: {exc}"
    return {
        "method": method,
        "seed": seed,
        "n_trials": len(trials),
        "n_failed": sum(not t.ok for t in trials),
        "best_val": best,
        "test_accuracy": test,
        "wall": wall,
        "refit_error": refit_error,
        "curve": curve,
        "best_config": {
            k: (v if np.ndim(v) == 0 else f"array{np.shape(v)} mean {np.mean(v):.3g}")
            for k, v in (best_cfg or {}).items()
        },
    }


def plot(runs, suffix):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == method]
        grid = np.linspace(0, max(r["wall"] for r in rs), 100)
        ys = []
        for r in rs:
            c = np.array(r["curve"]) if r["curve"] else np.array([[0.0, np.nan]])
            i = np.searchsorted(c[:, 0], grid, side="right") - 1
            ys.append(np.where(i >= 0, c[np.clip(i, 0, None), 1], np.nan))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ax.plot(grid, np.nanmean(ys, axis=0), label=method)
    ax.set_xlabel("evaluation time (s)")
    ax.set_ylabel("best validation cross-entropy")
    ax.set_title("Fashion-MNIST MLP, mixed space")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / f"hybrid{suffix}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="budget per method and seed (default 60; quick 5)")
    ap.add_argument("--steps", type=int, default=3, help="hypergradient steps per hybrid trial")
    ap.add_argument("--methods", nargs="*", default=list(methods(1)))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    seeds = list(range(args.seeds or (1 if args.quick else 5)))
    seconds = args.seconds or (5.0 if args.quick else 60.0)
    runs = []
    for seed in seeds:
        for method in args.methods:
            r = run_one(method, seed, seconds, args.quick, args.steps)
            runs.append(r)
            print(
                f"{method:14s} seed {seed}: best val {r['best_val']:.4f} test {r['test_accuracy']:.4f} "
                f"trials {r['n_trials']:4d} ({r['n_failed']} failed) wall {r['wall']:.1f} s",
                flush=True,
            )
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = plot(runs, suffix)
    rows = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == method]
        v, a = np.array([r["best_val"] for r in rs], float), np.array([r["test_accuracy"] for r in rs], float)
        rows[method] = {
            "best_val": (float(np.nanmean(v)), float(np.nanstd(v))),
            "test_accuracy": (float(np.nanmean(a)), float(np.nanstd(a))),
            "n_trials": float(np.mean([r["n_trials"] for r in rs])),
            "seeds": len(rs),
        }
    cmd = " ".join(["python benchmarks/hybrid.py"] + (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# Hybrid search on a mixed space (Fashion-MNIST MLP)",
        "",
        f"`{cmd}`: {len(seeds)} seed(s), {seconds:g} s per method and seed, torch single-threaded; "
        f"{'500' if args.quick else '2000'} training and as many validation images; test accuracy after "
        "refitting the best configuration on train + validation. Black-box methods search the space "
        "without the 784 pixel weights; `hypergradient` keeps the architecture at its defaults. "
        "Mean ± std over seeds.",
        "",
        "| method | best validation cross-entropy | test accuracy | trials |",
        "|---|---:|---:|---:|",
    ]
    for method, row in rows.items():
        lines.append(
            f"| {method} | {row['best_val'][0]:.4f} ± {row['best_val'][1]:.4f} | "
            f"{row['test_accuracy'][0]:.4f} ± {row['test_accuracy'][1]:.4f} | {row['n_trials']:.0f} |"
        )
    lines += ["", f"Anytime curve: [{png}]({png})", ""]
    payload = {
        "machine": machine(),
        "command": cmd,
        "seeds": seeds,
        "seconds": seconds,
        "steps": args.steps,
        "runs": runs,
        "summary": rows,
    }
    j, m = write(f"hybrid{suffix}", payload, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.1f} s")
