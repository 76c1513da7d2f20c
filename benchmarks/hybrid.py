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

    python benchmarks/hybrid.py            # 5 seeds, 60 s per method and seed: about 41 minutes
    python benchmarks/hybrid.py --quick    # 1 seed, 5 s per method, small data: under a minute
    python benchmarks/hybrid.py --seconds 120 --jobs 2   # 2 runs side by side, one core each: about 40 minutes
    python benchmarks/hybrid.py --methods hybrid_tuned hybrid hypergradient smac --out hybrid_tuned
    python benchmarks/hybrid.py --rerender benchmarks/results/hybrid.json   # tables and PNG again
    python benchmarks/hybrid.py --trace hybrid_mf 0 --seconds 120   # every trial of one run, and the kept
                                                                    # configuration's validation and test scores

The methods of a seed run in a rotating order, single-threaded, with the load average recorded per
run: on a shared machine, load changes then hit every method alike on average.

Writes benchmarks/results/hybrid[_quick].json, .md and an anytime-curve PNG. Torch runs
single-threaded; SMAC spends about 0.25 s of its own per trial on these machines, which dominates
on cheap trials (random search has none).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path

# single-threaded everywhere (torch, numpy's BLAS, SMAC's random forest): each method takes one core at
# most, so the load of other jobs on the shared machine hits every method alike (set before the imports)
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, machine, write  # noqa: E402
from blackbox import anytime_curve, optuna_tpe, smac3_direct  # noqa: E402
from ConfigSpace import Categorical, ConfigurationSpace, EqualsCondition, Float, Integer  # noqa: E402

from automl_bilevel import BilevelProblem, Split, Task, run_search  # noqa: E402
from automl_bilevel.frontends.data import load_idx_dataset  # noqa: E402
from automl_bilevel_plugins.learners.torch_learners import MLPLearner  # noqa: E402
from automl_bilevel_plugins.objectives.validation import ValidationLoss  # noqa: E402
from automl_bilevel_plugins.optimizers.evolution import EvolutionStrategy  # noqa: E402
from automl_bilevel_plugins.optimizers.hybrid import HybridOptimizer  # noqa: E402
from automl_bilevel_plugins.optimizers.hypergradient import HypergradientOptimizer  # noqa: E402
from automl_bilevel_plugins.optimizers.random_search import RandomSearch  # noqa: E402
from automl_bilevel_plugins.optimizers.smac_optimizer import SMACOptimizer  # noqa: E402

N_TRIALS_HINT = 200


def hybrid_hint(steps: int) -> int:
    """SMAC's trial hint for hybrid's black-box part. SMAC sizes its initial design by the hint (10 per
    hyperparameter, at most a quarter of the hint); a hybrid trial costs about ``steps + 1`` plain fits, so
    it makes that many times fewer trials than ``smac`` in the same time and gets that many times smaller a
    hint. With the plain hint its 40-point Sobol design outlasted the whole budget (the first full run)."""
    return max(8, N_TRIALS_HINT // (steps + 1))


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


#: the learner's default architecture and inner optimizer, given to hybrid, smac (as an extra configuration of
#: SMAC's initial design, which SMAC evaluates *after* its Sobol points: 12 for hybrid's 4-dimensional black-box
#: space with its hint of 50, 50 for smac's with the 200-trial hint) and random (its first configuration)
DEFAULT = {"n_layers": 1, "hidden_units": 64, "activation": "relu", "optimizer": "adam"}


def methods(steps: int):
    return {
        "hybrid": ours(
            lambda: HybridOptimizer(
                "smac",
                {"n_trials": hybrid_hint(steps), "initial_design": [DEFAULT]},
                steps=steps,
                warm_start=True,
                tensor_hyperparameters=["l2_per_feature"],
            )
        ),
        # not in the default list: hybrid with its black-box part's design reduced to the default configuration
        # (evaluated first; SMAC's model proposes from the second trial on) and outer steps 3x as large (a
        # trial has only `steps` of them); run with --methods hybrid_tuned ... --out NAME
        "hybrid_tuned": ours(
            lambda: HybridOptimizer(
                "smac",
                {"n_trials": hybrid_hint(steps), "n_initial": 0, "initial_design": [DEFAULT]},
                steps=steps,
                warm_start=True,
                tensor_hyperparameters=["l2_per_feature"],
                outer_lr=0.3,
            )
        ),
        # not in the default list either: multi-fidelity (SMAC's successive halving at eta 3 from a third of
        # the budget: a low-fidelity trial is 1 hypergradient step through 20 epochs, a full one 3 through 60)
        "hybrid_mf": ours(
            lambda: HybridOptimizer(
                "smac",
                {"facade": "mf", "min_budget": 1 / 3, "eta": 3, "n_trials": hybrid_hint(steps)},
                steps=steps,
                warm_start=True,
                tensor_hyperparameters=["l2_per_feature"],
            )
        ),
        # nor this: hybrid without the 784 pixel weights (its gradient part tunes lr, weight decay and momentum
        # only), to see what the pixel weights, tuned on the validation images, do to the test accuracy
        "hybrid_scalar": ours(
            lambda: HybridOptimizer(
                "smac", {"n_trials": hybrid_hint(steps), "initial_design": [DEFAULT]}, steps=steps, warm_start=True
            )
        ),
        "hypergradient": hypergradient_fixed_architecture,
        # the black-box baseline with the same multi-fidelity schedule (a low-fidelity trial: 20 epochs)
        "smac_mf": ours(lambda: SMACOptimizer("mf", min_budget=1 / 3, eta=3, n_trials=N_TRIALS_HINT)),
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


DEFAULT_METHODS = ["hybrid", "hypergradient", "smac", "random", "es", "smac3_direct", "optuna_tpe"]


def trace(method, seed, seconds, quick, steps) -> str:
    """One method on one seed, every trial listed (budget, value, each outer step's value, tuned values,
    the discrete choices), then the kept configuration trained on the training images alone: its
    validation and test cross-entropy and accuracy, i.e. how much of the validation gain carries over."""
    learner, split, (Xte, yte) = problem_for(seed, quick)
    problem = BilevelProblem(learner, ValidationLoss(), space(), TASK, [split], seed)
    trials, best_cfg, wall = methods(steps)[method](problem, seconds, seed)
    discrete = ("n_layers", "hidden_units", "activation", "optimizer")
    lines = [
        f"# Trace: {method}, seed {seed}, {seconds:g} s (`python benchmarks/hybrid.py --trace {method} {seed}"
        f"{' --quick' if quick else ''} --seconds {seconds:g}`)",
        "",
        "| trial | budget | value | outer steps | tuned | discrete |",
        "|---:|---:|---:|---|---|---|",
    ]
    for t in trials:
        steps_ = ", ".join(f"{v:.4f}" for k, v in sorted(t.metrics.items()) if k.startswith("outer_value."))
        tuned = ", ".join(f"{k[6:]} {v:.4g}" for k, v in t.metrics.items() if k.startswith("tuned."))
        disc = ", ".join(f"{k} {t.config[k]}" for k in discrete if k in t.config)
        lines.append(f"| {t.number} | {t.budget or 1:.3g} | {t.value:.4f} | {steps_} | {tuned} | {disc} |")
    if best_cfg is not None:
        obj = ValidationLoss()
        model = learner.fit(split.X_train, split.y_train, dict(best_cfg), task=TASK, seed=seed)
        ce_val, ce_test = obj(model, split.X_val, split.y_val, task=TASK), obj(model, Xte, yte, task=TASK)
        acc_val = float(np.mean(model.predict(split.X_val) == split.y_val))
        acc_test = float(np.mean(model.predict(Xte) == yte))
        shown = {
            k: (
                v
                if np.ndim(v) == 0
                else f"array{np.shape(v)} min {np.min(v):.3g} mean {np.mean(v):.3g} max {np.max(v):.3g}"
            )
            for k, v in best_cfg.items()
        }
        lines += [
            "",
            f"Kept configuration: {shown}",
            "",
            "Trained on the training images alone (the model the search scored):",
            "",
            "| | cross-entropy | accuracy |",
            "|---|---:|---:|",
            f"| validation | {ce_val:.4f} | {acc_val:.4f} |",
            f"| test | {ce_test:.4f} | {acc_test:.4f} |",
            f"| test − validation | {ce_test - ce_val:+.4f} | {acc_test - acc_val:+.4f} |",
        ]
    return "\n".join(lines) + "\n"


def run_one(method, seed, seconds, quick, steps):
    load_start = os.getloadavg()
    learner, split, (Xte, yte) = problem_for(seed, quick)
    problem = BilevelProblem(learner, ValidationLoss(), space(), TASK, [split], seed)
    trials, best_cfg, wall = methods(steps)[method](problem, seconds, seed)
    curve = anytime_curve(trials)
    best = curve[-1][1] if curve else math.inf
    test, test_train_fit, refit_error = math.nan, math.nan, None
    if best_cfg is not None:
        X, y = np.concatenate([split.X_train, split.X_val]), np.concatenate([split.y_train, split.y_val])
        try:
            model = learner.fit(X, y, dict(best_cfg), task=TASK, seed=seed)
            test = float(np.mean(model.predict(Xte) == yte))
            # the model the search scored: trained on the training images alone, as in every trial (the refit
            # on train + validation takes twice the inner steps per epoch, which shifts what lr is best)
            model = learner.fit(split.X_train, split.y_train, dict(best_cfg), task=TASK, seed=seed)
            test_train_fit = float(np.mean(model.predict(Xte) == yte))
        except Exception as exc:  # recorded, the benchmark goes on
            refit_error = f"{type(exc).__name__}: {exc}"
    within = [v for t, v in curve if t <= seconds]
    return {
        "method": method,
        "seed": seed,
        "n_trials": len(trials),
        "n_failed": sum(not t.ok for t in trials),
        "best_val": best,
        # the best value among trials whose evaluations ended within the budget (the engine checks its
        # timeout between trials, so a long last trial may run past the budget)
        "best_val_at_budget": within[-1] if within else math.inf,
        "test_accuracy": test,
        "test_accuracy_train_fit": test_train_fit,
        "wall": wall,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "refit_error": refit_error,
        "curve": curve,
        "best_config": {
            k: (v if np.ndim(v) == 0 else f"array{np.shape(v)} mean {np.mean(v):.3g}")
            for k, v in (best_cfg or {}).items()
        },
    }


def plot(runs, name, seconds):
    """Anytime curves: the mean over seeds of the best validation value so far, drawn from the time every
    seed has a finished trial (before, a mean over fewer seeds would jump), with the seeds' min-max band;
    left all of it, right zoomed on the last stretch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    finals = []
    for method in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == method]
        grid = np.linspace(0, max(r["wall"] for r in rs), 200)
        ys = []
        for r in rs:
            c = np.array(r["curve"]) if r["curve"] else np.array([[0.0, np.nan]])
            i = np.searchsorted(c[:, 0], grid, side="right") - 1
            ys.append(np.where(i >= 0, c[np.clip(i, 0, None), 1], np.nan))
        ys = np.array(ys)
        ok = np.all(np.isfinite(ys), axis=0)
        if not ok.any():
            continue
        filled = np.where(ok, ys, 0.0)  # columns where a seed has no value yet are not drawn
        mean, lo, hi = (np.where(ok, f(filled, axis=0), np.nan) for f in (np.mean, np.min, np.max))
        finals.append(mean[ok][-1])
        for ax in axes:
            (line,) = ax.plot(grid, mean, label=method)
            if ax is axes[1]:
                ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.08)
    for ax in axes:
        ax.axvline(seconds, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("evaluation time (s); dotted: the budget")
        ax.set_ylabel("best validation cross-entropy (mean over seeds)")
    if finals:
        axes[1].set_ylim(min(finals) - 0.03, max(finals) + 0.04)
        axes[1].set_xlim(seconds / 4, None)
    axes[0].set_title("Fashion-MNIST MLP, mixed space")
    axes[1].set_title("zoomed; band: min-max over seeds")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / f"{name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def single_threaded() -> None:
    """torch single-threaded (BLAS and OpenMP are, from the environment set at import); warnings off."""
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    warnings.filterwarnings("ignore")


def worker_init(parent: int) -> None:
    """A pool worker: single-threaded, and gone within a second once the benchmark's process is (a killed
    benchmark would otherwise leave its workers running their queued methods on the machine)."""
    import threading

    single_threaded()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def rotated(names: list[str], seed: int) -> list[str]:
    """The methods of one seed in a rotating order: each method runs at a different position in each seed,
    so a change of the machine's load during a seed does not hit the same method every time."""
    k = seed % len(names)
    return names[k:] + names[:k]


def _mean_std(xs) -> tuple[float, float]:
    a = np.array(list(xs), float)
    a = a[np.isfinite(a)]
    return (float(a.mean()), float(a.std())) if len(a) else (math.nan, math.nan)


def compare(runs, reference: str, key: str, lower_is_better: bool) -> dict[str, dict]:
    """``reference`` against every other method on ``key``: means ± std, ratio ours/theirs, whether the
    mean ± std intervals are apart ("beyond the spread"), and the per-seed paired difference."""
    by = {m: {r["seed"]: r[key] for r in runs if r["method"] == m} for m in dict.fromkeys(r["method"] for r in runs)}
    ours_ = by.get(reference, {})
    out = {}
    for m, theirs in by.items():
        if m == reference:
            continue
        (a, sa), (b, sb) = _mean_std(ours_.values()), _mean_std(theirs.values())
        seeds = sorted(set(ours_) & set(theirs))
        diff = [ours_[s] - theirs[s] for s in seeds if math.isfinite(ours_[s]) and math.isfinite(theirs[s])]
        better = (lambda x: x < 0) if lower_is_better else (lambda x: x > 0)
        if min(len(ours_), len(theirs)) < 2:
            verdict = "n/a (one seed)"
        elif a - sa > b + sb or b - sb > a + sa:
            verdict = f"{reference} better" if better(a - b) else f"{m} better"
        else:
            verdict = "within the spread"
        out[m] = {
            "ratio": a / b if b else math.nan,
            "verdict": verdict,
            "paired_diff": _mean_std(diff),
            "seeds_reference_better": int(sum(better(d) for d in diff)),
            "seeds": len(diff),
        }
    return out


def best_at(curve, t: float) -> float:
    """The best value among trials whose evaluations ended by evaluation time ``t``."""
    within = [v for s, v in curve if s <= t]
    return within[-1] if within else math.inf


def last_improvement(curve, seconds: float) -> float:
    """Evaluation time of the last improvement within the budget."""
    prev = [math.inf] + [v for _, v in curve[:-1]]
    times = [t for (t, v), p in zip(curve, prev, strict=True) if v < p and t <= seconds]
    return times[-1] if times else math.nan


def report(runs, cmd, name, quick, n_methods, seeds, seconds, steps, load, reference=None) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = plot(runs, name, seconds)
    rows = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == method]
        rows[method] = {
            "best_val": _mean_std([r["best_val"] for r in rs]),
            "best_val_at_budget": _mean_std([r["best_val_at_budget"] for r in rs]),
            "seeds_with_a_trial_within_budget": sum(math.isfinite(r["best_val_at_budget"]) for r in rs),
            "test_accuracy": _mean_std([r["test_accuracy"] for r in rs]),
            "test_accuracy_train_fit": _mean_std([r.get("test_accuracy_train_fit", math.nan) for r in rs]),
            "n_trials": float(np.mean([r["n_trials"] for r in rs])),
            "wall": _mean_std([r["wall"] for r in rs]),
            # has the method flattened? its gain over the second half of the budget, and when it last improved
            "gain_second_half": _mean_std(
                [best_at(r["curve"], seconds / 2) - best_at(r["curve"], seconds) for r in rs]
            ),
            "last_improvement": _mean_std([last_improvement(r["curve"], seconds) for r in rs]),
            "seeds": len(rs),
        }
    ref = reference or next((m for m in ("hybrid_tuned", "hybrid") if m in rows), "hybrid")
    cmp = {
        "best_val": compare(runs, ref, "best_val", True),
        "best_val_at_budget": compare(runs, ref, "best_val_at_budget", True),
        "test_accuracy": compare(runs, ref, "test_accuracy", False),
        "test_accuracy_train_fit": compare(
            [{**r, "test_accuracy_train_fit": r.get("test_accuracy_train_fit", math.nan)} for r in runs],
            ref,
            "test_accuracy_train_fit",
            False,
        ),
    }
    done_seeds = sorted({r["seed"] for r in runs})
    jobs = int(m.group(1)) if (m := re.search(r"--jobs[ =](\d+)", cmd)) else 1
    lines = [
        "# Hybrid search on a mixed space (Fashion-MNIST MLP)",
        "",
        f"`{cmd}`: {len(done_seeds)} of {len(seeds)} seed(s), {seconds:g} s per method and seed, torch, BLAS "
        f"and OpenMP single-threaded; {'500' if quick else '2000'} training and as many validation "
        "images; test accuracy after refitting the best configuration on train + validation. Black-box "
        "methods search the space without the 784 pixel weights; `hypergradient` keeps the architecture at "
        "its defaults. The runs start seed by seed, the methods of one seed in a rotating order (seed s starts "
        f"with the (s mod {n_methods})-th method)"
        + (
            f"; {jobs} run side by side, each in its own single-threaded process on its own core. "
            if jobs > 1
            else ", one after the other. "
        )
        + "Mean ± std over seeds. "
        f"Load average (1/5/15 min) at start {load['start']}, at end {load.get('end', 'n/a')}.",
        "",
        "The budget is checked between trials (the engine's `timeout`; SMAC3's `walltime_limit`, Optuna's "
        "`timeout` alike): a trial started before the budget ends is counted. *at budget* counts only "
        "trials whose evaluations ended within the budget (cumulative evaluation time); *wall* is the time "
        "each method really took.",
        "",
        "*test accuracy* is the model refitted with the best configuration on train + validation (what the "
        "estimators do); *train-only fit* is the model the search scored, trained on the training images alone.",
        "",
        "| method | best validation cross-entropy | at budget | test accuracy | train-only fit | trials | wall (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, row in rows.items():
        lines.append(
            f"| {method} | {row['best_val'][0]:.4f} ± {row['best_val'][1]:.4f} | "
            f"{row['best_val_at_budget'][0]:.4f} ± {row['best_val_at_budget'][1]:.4f}"
            + (
                f" ({row['seeds_with_a_trial_within_budget']} of {row['seeds']} seeds)"
                if row["seeds_with_a_trial_within_budget"] < row["seeds"]
                else ""
            )
            + " | "
            f"{row['test_accuracy'][0]:.4f} ± {row['test_accuracy'][1]:.4f} | "
            f"{row['test_accuracy_train_fit'][0]:.4f} ± {row['test_accuracy_train_fit'][1]:.4f} | "
            f"{row['n_trials']:.0f} | "
            f"{row['wall'][0]:.1f} ± {row['wall'][1]:.1f} |"
        )
    if ref in rows and len(rows) > 1:
        lines += [
            "",
            f"`{ref}` against each method: ratio of means {ref}/theirs; verdict: *better* only when the "
            f"mean ± std intervals do not overlap; paired: mean ± std over seeds of {ref} − theirs (same "
            f"data split per seed), and in how many seeds {ref} is better.",
            "",
            "| vs | val ratio | val verdict | val paired diff (seeds) | test ratio | test verdict | "
            "test paired diff (seeds) | train-only fit: test verdict | paired diff (seeds) |",
            "|---|---:|---|---:|---:|---|---:|---|---:|",
        ]
        for m in cmp["best_val"]:
            v, t, f = cmp["best_val"][m], cmp["test_accuracy"][m], cmp["test_accuracy_train_fit"][m]
            lines.append(
                f"| {m} | {v['ratio']:.3f} | {v['verdict']} | {v['paired_diff'][0]:+.4f} ± {v['paired_diff'][1]:.4f}"
                f" ({v['seeds_reference_better']}/{v['seeds']}) | {t['ratio']:.4f} | {t['verdict']} | "
                f"{t['paired_diff'][0]:+.4f} ± {t['paired_diff'][1]:.4f} "
                f"({t['seeds_reference_better']}/{t['seeds']}) | {f['verdict']} | "
                f"{f['paired_diff'][0]:+.4f} ± {f['paired_diff'][1]:.4f} "
                f"({f['seeds_reference_better']}/{f['seeds']}) |"
            )
    lines += [
        "",
        f"Have the methods flattened by {seconds:g} s? Gain in validation cross-entropy over the second half of "
        "the budget (best at half the budget − best at the budget, evaluation time) and the evaluation time "
        "of the last improvement within the budget, mean ± std over seeds:",
        "",
        "| method | gain in the second half | last improvement (s) |",
        "|---|---:|---:|",
    ]
    for method, row in rows.items():
        g, li = row["gain_second_half"], row["last_improvement"]
        lines.append(f"| {method} | {g[0]:.4f} ± {g[1]:.4f} | {li[0]:.1f} ± {li[1]:.1f} |")
    lines += ["", f"![anytime curves]({png})", ""]
    payload = {
        "machine": machine(),
        "command": cmd,
        "seeds": seeds,
        "seeds_done": done_seeds,
        "seconds": seconds,
        "steps": steps,
        "n_methods": n_methods,
        "order": "rotating: seed s runs methods[s % n:] + methods[:s % n]",
        "load_average": load,
        "runs": runs,
        "summary": rows,
        "reference": ref,
        "reference_vs": cmp,
    }
    j, m = write(name, payload, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {j} and {m}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="budget per method and seed (default 60; quick 5)")
    ap.add_argument("--steps", type=int, default=3, help="hypergradient steps per hybrid trial")
    ap.add_argument("--methods", nargs="*", default=DEFAULT_METHODS, choices=list(methods(1)))
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs side by side, one process and one core each (default 1; at most the machine's cores)",
    )
    ap.add_argument(
        "--reference",
        default=None,
        help="the method compared against each other one (default hybrid_tuned if it ran, else hybrid)",
    )
    ap.add_argument(
        "--trace",
        nargs=2,
        metavar=("METHOD", "SEED"),
        help="run one method on one seed and write every trial and the kept configuration's validation and "
        "test scores (hybrid_trace_METHOD_SEED.md)",
    )
    ap.add_argument("--out", default=None, help="results name (default hybrid, or hybrid_quick with --quick)")
    ap.add_argument("--rerender", metavar="JSON", help="re-make the markdown and PNG of a results JSON, run nothing")
    args = ap.parse_args(argv)
    name = args.out or ("hybrid_quick" if args.quick else "hybrid")
    if args.trace:
        single_threaded()
        method, seed = args.trace[0], int(args.trace[1])
        if method not in methods(1):
            ap.error(f"--trace: unknown method {method!r} (one of {sorted(methods(1))})")
        text = trace(method, seed, args.seconds or (5.0 if args.quick else 60.0), args.quick, args.steps)
        out = RESULTS / f"{args.out or f'hybrid_trace_{method}_{seed}'}.md"
        out.write_text(text)
        print(text, f"wrote {out}", sep="\n")
        return
    if args.rerender:
        import json

        p = json.loads(Path(args.rerender).read_text())
        report(
            p["runs"],
            p["command"],
            args.out or Path(args.rerender).stem,
            "--quick" in p["command"],
            p.get("n_methods") or len({r["method"] for r in p["runs"]}),
            p["seeds"],
            p["seconds"],
            p["steps"],
            p["load_average"],
            args.reference or p.get("reference"),
        )
        return
    cmd = " ".join(["python benchmarks/hybrid.py"] + (argv if argv is not None else sys.argv[1:]))
    if not 1 <= args.jobs <= (os.cpu_count() or 1):
        ap.error(f"--jobs must be between 1 and the machine's {os.cpu_count()} cores, got {args.jobs}")
    single_threaded()
    seeds = list(range(args.seeds or (1 if args.quick else 5)))
    seconds = args.seconds or (5.0 if args.quick else 60.0)
    load = {"start": [round(x, 2) for x in os.getloadavg()]}
    jobs = [(method, seed) for seed in seeds for method in rotated(list(args.methods), seed)]
    runs: list[dict] = []

    def done(r: dict) -> None:
        runs.append(r)
        print(
            f"{r['method']:14s} seed {r['seed']}: best val {r['best_val']:.4f} (at budget "
            f"{r['best_val_at_budget']:.4f}) test {r['test_accuracy']:.4f} trials {r['n_trials']:4d} "
            f"({r['n_failed']} failed) wall {r['wall']:.1f} s load {r['load_start'][0]:.2f}->{r['load_end'][0]:.2f}",
            flush=True,
        )
        if sum(x["seed"] == r["seed"] for x in runs) == len(args.methods) and len(runs) < len(jobs):
            # partial results after each seed, in case the run is cut short
            runs.sort(key=lambda x: jobs.index((x["method"], x["seed"])))
            report(runs, cmd, name, args.quick, len(args.methods), seeds, seconds, args.steps, load, args.reference)

    if args.jobs == 1:
        for method, seed in jobs:
            done(run_one(method, seed, seconds, args.quick, args.steps))
    else:  # the same runs, in the same order of submission, args.jobs at a time in single-threaded processes
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=worker_init, initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(run_one, m, s, seconds, args.quick, args.steps) for m, s in jobs]
            for f in as_completed(futures):
                done(f.result())
    runs.sort(key=lambda x: jobs.index((x["method"], x["seed"])))
    load["end"] = [round(x, 2) for x in os.getloadavg()]
    report(runs, cmd, name, args.quick, len(args.methods), seeds, seconds, args.steps, load, args.reference)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.1f} s")
