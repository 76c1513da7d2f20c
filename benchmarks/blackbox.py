"""Outer optimizers side by side at equal wall-clock budget, against Optuna (TPE) and SMAC3 used
directly, on real data; and the trial throughput of 2 Dask workers against 1.

Problems (each method gets the same ``BilevelProblem``: same learner, objective and split):

- ``digits_mlp``: the ``mlp`` learner on digits (lr, weight decay, width, depth, activation),
  validation error;
- ``cancer_svc``: StandardScaler + SVC on breast_cancer (kernel, C, and gamma only for rbf),
  validation error;
- ``mnist_l2``: softmax regression on MNIST with one L2 weight per pixel (784 hyperparameters),
  validation cross-entropy (the hypergradient optimizer's objective).

Methods: ours ``random``, ``smac`` (HPO facade), ``smac_mf`` (Hyperband; the budget is epochs
for the torch learners and a training-data fraction for the SVC), ``es_cma`` (CMA-ES),
``hypergradient`` (``mnist_l2`` only); peers ``optuna_tpe`` (Optuna's TPESampler) and
``smac3_direct`` (SMAC3's HPO facade running its own ``optimize()`` loop). After the budget each
method's best configuration is refitted on train + validation and scored on the test split.

    python benchmarks/blackbox.py            # 5 seeds; about 25 minutes
    python benchmarks/blackbox.py --quick    # 1 seed, 1 s per method, small MNIST; under a minute

Writes benchmarks/results/blackbox[_quick].json, .md and anytime-curve PNGs. Torch runs
single-threaded in every method; times on shared machines are noisy, compare ratios.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, machine, write  # noqa: E402
from ConfigSpace import Categorical, ConfigurationSpace, EqualsCondition, Float  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from automl_bilevel import BilevelProblem, Split, Task, run_search  # noqa: E402
from automl_bilevel.core.trials import Trial  # noqa: E402
from automl_bilevel.frontends.data import load_idx_dataset  # noqa: E402
from automl_bilevel.run.parallel import DaskExecutor  # noqa: E402
from automl_bilevel_plugins.learners.sklearn_learner import SklearnLearner  # noqa: E402
from automl_bilevel_plugins.learners.torch_learners import LogisticLearner, MLPLearner  # noqa: E402
from automl_bilevel_plugins.objectives.validation import ValidationError, ValidationLoss  # noqa: E402
from automl_bilevel_plugins.optimizers.evolution import EvolutionStrategy  # noqa: E402
from automl_bilevel_plugins.optimizers.hypergradient import HypergradientOptimizer  # noqa: E402
from automl_bilevel_plugins.optimizers.random_search import RandomSearch  # noqa: E402
from automl_bilevel_plugins.optimizers.smac_optimizer import SMACOptimizer  # noqa: E402

N_TRIALS_HINT = 200  # SMAC sizes its initial design by n_trials: the same hint for ours and SMAC3 direct


# -- problems -----------------------------------------------------------------------------------
class PixelL2Logistic(LogisticLearner):
    """Softmax regression whose per-pixel L2 weights come as 784 scalar hyperparameters ``l2_000``..."""

    def param_names(self, task):
        return None

    def resolve(self, config):
        pixel = sorted(k for k in config if k.startswith("l2_") and k[3:].isdigit())
        l2 = [config[k] for k in pixel]
        rest = {k: v for k, v in config.items() if k not in pixel}
        if l2:
            rest["l2_per_feature"] = np.asarray(l2, dtype=np.float64)
        return super().resolve(rest)


def _split(X, y, seed, n_test):
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=n_test, random_state=seed, stratify=y)
    Xa, Xv, ya, yv = train_test_split(Xtr, ytr, test_size=0.25, random_state=seed, stratify=ytr)
    return Split(Xa, ya, Xv, yv), (Xte, yte)


def digits_mlp(seed, quick):
    X, y = load_digits(return_X_y=True)
    split, test = _split(X, y, seed, 0.3)
    learner = MLPLearner(epochs=10 if quick else 30, batch_size=128)
    space = learner.config_space(Task("classification", 64, 10))
    return learner, ValidationError(), space, Task("classification", 64, 10), split, test


def cancer_svc(seed, quick):
    X, y = load_breast_cancer(return_X_y=True)
    split, test = _split(X, y, seed, 0.3)
    cs = ConfigurationSpace()
    kernel, gamma = Categorical("svc__kernel", ["rbf", "linear", "poly"]), Float("svc__gamma", (1e-5, 1.0), log=True)
    cs.add([kernel, gamma, Float("svc__C", (1e-3, 1e3), log=True), EqualsCondition(gamma, kernel, "rbf")])
    learner = SklearnLearner(make_pipeline(StandardScaler(), SVC()))
    return learner, ValidationError(), cs, Task("classification", X.shape[1], 2), split, test


@functools.lru_cache(maxsize=1)
def _mnist():
    X, y = load_idx_dataset("mnist", "train")
    return X.reshape(len(X), -1).astype(np.float64) / 255.0, y


def mnist_l2(seed, quick):
    X, y = _mnist()
    rng = np.random.default_rng(seed)
    n = 400 if quick else 1500
    idx = rng.permutation(len(X))[: 2 * n + 2000]
    Xa, ya, Xv, yv = X[idx[:n]], y[idx[:n]], X[idx[n : 2 * n]], y[idx[n : 2 * n]]
    test = (X[idx[2 * n :]], y[idx[2 * n :]])
    learner = PixelL2Logistic(
        optimizer="sgd", momentum=0.9, lr=0.1, weight_decay=0.0, epochs=60, batch_size=n, standardize=False
    )
    cs = ConfigurationSpace([Float(f"l2_{i:03d}", (1e-6, 1.0), log=True, default=1e-4) for i in range(784)])
    return learner, ValidationLoss(), cs, Task("classification", 784, 10), Split(Xa, ya, Xv, yv), test


PROBLEMS = {"digits_mlp": digits_mlp, "cancer_svc": cancer_svc, "mnist_l2": mnist_l2}


# -- methods: ours through run_search, peers through their own loops ----------------------------
def ours(factory):
    def run(problem, seconds, seed):
        res = run_search(problem, factory(), n_iter=10**6, seed=seed, timeout=seconds)
        return res.trials, (res.best.config if res.best else None), res.duration

    return run


def hypergradient_method(problem, seconds, seed):
    problem.space = ConfigurationSpace()  # the 784 weights as one tensor hyperparameter
    opt = HypergradientOptimizer(outer_lr=0.2, tensor_hyperparameters=("l2_per_feature",))
    res = run_search(problem, opt, n_iter=10**6, seed=seed, timeout=seconds)
    cfg = opt.best_config()
    return res.trials, cfg, res.duration


def _to_optuna(trial, space):
    cfg = {}
    for hp in space.values():
        conds = space.parent_conditions_of[hp.name]  # EqualsCondition / InCondition on a parent
        if any(cfg.get(c.parent.name) not in getattr(c, "values", [getattr(c, "value", None)]) for c in conds):
            continue
        kind = type(hp).__name__
        if kind == "UniformFloatHyperparameter":
            cfg[hp.name] = trial.suggest_float(hp.name, hp.lower, hp.upper, log=hp.log)
        elif kind == "UniformIntegerHyperparameter":
            cfg[hp.name] = trial.suggest_int(hp.name, hp.lower, hp.upper, log=hp.log)
        else:
            cfg[hp.name] = trial.suggest_categorical(hp.name, list(hp.choices))
    return cfg


def optuna_tpe(problem, seconds, seed):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = []

    def objective(trial):
        cfg = _to_optuna(trial, problem.space)
        t0 = time.perf_counter()
        try:
            value = problem.evaluate(cfg).value
        except Exception as exc:  # same as ours: a failed trial is recorded, the study goes on
            trials.append(Trial(len(trials), cfg, math.nan, "FAILED", time.perf_counter() - t0, error=str(exc)))
            raise optuna.TrialPruned() from None
        trials.append(Trial(len(trials), cfg, value, "COMPLETE", time.perf_counter() - t0))
        return value

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    t0 = time.perf_counter()
    study.optimize(objective, timeout=seconds)
    ok = [t for t in trials if t.ok]
    return trials, (min(ok, key=lambda t: t.value).config if ok else None), time.perf_counter() - t0


def smac3_direct(problem, seconds, seed):
    import tempfile

    from smac import HyperparameterOptimizationFacade as HPO
    from smac import Scenario

    trials = []

    def target(config, seed: int = 0):
        cfg = dict(config)
        t0 = time.perf_counter()
        value = problem.evaluate(cfg).value
        trials.append(Trial(len(trials), cfg, value, "COMPLETE", time.perf_counter() - t0))
        return value

    t0 = time.perf_counter()  # like ours, the budget includes building the optimizer
    with tempfile.TemporaryDirectory() as d:
        sc = Scenario(
            problem.space,
            output_directory=Path(d) / "smac",
            deterministic=True,
            n_trials=N_TRIALS_HINT * 50,
            walltime_limit=seconds,
            seed=seed,
        )
        # SMAC sizes the initial design by n_trials: the same size as ours gets from its hint
        n_design = int(max(1, min(10 * len(problem.space), 0.25 * N_TRIALS_HINT)))
        smac = HPO(
            sc,
            target,
            overwrite=True,
            logging_level=40,
            initial_design=HPO.get_initial_design(sc, n_configs=n_design),
            intensifier=HPO.get_intensifier(sc, max_config_calls=1),
        )
        inc = smac.optimize()
        return trials, dict(inc), time.perf_counter() - t0


def method_table(problem_name):
    m = {
        "random": ours(RandomSearch),
        "smac": ours(lambda: SMACOptimizer(n_trials=N_TRIALS_HINT)),
        "smac_mf": ours(lambda: SMACOptimizer("mf", n_trials=N_TRIALS_HINT)),
        "es_cma": ours(EvolutionStrategy),
        "optuna_tpe": optuna_tpe,
        "smac3_direct": smac3_direct,
    }
    if problem_name == "mnist_l2":
        m["hypergradient"] = hypergradient_method
    return m


def anytime_curve(trials) -> list[list[float]]:
    """(evaluation time, best full-budget value so far) at each improvement and at the last trial."""
    curve, best, t = [], math.inf, 0.0
    for tr in trials:
        t += tr.duration
        if tr.ok and tr.budget in (None, 1.0) and tr.value < best:
            best = tr.value
            curve.append([t, best])
    if trials:
        curve.append([t, best])
    return curve


def run_one(problem_name, method_name, seed, seconds, quick):
    learner, objective, space, task, split, (Xte, yte) = PROBLEMS[problem_name](seed, quick)
    problem = BilevelProblem(learner, objective, space, task, [split], seed)
    trials, best_cfg, wall = method_table(problem_name)[method_name](problem, seconds, seed)
    curve = anytime_curve(trials)
    best = curve[-1][1] if curve else math.inf
    test, refit_error = math.nan, None
    if best_cfg is not None:
        X = np.concatenate([split.X_train, split.X_val])
        y = np.concatenate([split.y_train, split.y_val])
        try:
            model = learner.fit(X, y, best_cfg, task=task, seed=seed)
            test = float(np.mean(model.predict(Xte) == yte))
        except Exception as exc:  # recorded, the benchmark goes on
            refit_error = f"{type(exc).__name__}: {exc}"
    eval_time = sum(tr.duration for tr in trials)
    return {
        "problem": problem_name,
        "method": method_name,
        "seed": seed,
        "n_trials": len(trials),
        "n_failed": sum(not tr.ok for tr in trials),
        "best_val": best,
        "test_accuracy": test,
        "wall": wall,
        "eval_time": eval_time,
        "refit_error": refit_error,
        "overhead_per_trial": (wall - eval_time) / max(len(trials), 1),
        "curve": curve,
    }


# -- Dask throughput -----------------------------------------------------------------------------
def dask_throughput(quick):
    X, y = load_digits(return_X_y=True)
    split, _ = _split(X, y, 0, 0.3)
    learner = MLPLearner(epochs=40 if quick else 120, batch_size=64, hidden_units=128)
    task = Task("classification", 64, 10)
    problem = BilevelProblem(learner, ValidationError(), learner.config_space(task), task, [split], 0)
    n = 4 if quick else 16
    out = {}
    for workers in (1, 2):
        with DaskExecutor(workers) as ex:
            run_search(problem, RandomSearch(), n_iter=workers, seed=99, executor=ex)  # warm-up imports
            t0 = time.perf_counter()
            res = run_search(problem, RandomSearch(), n_iter=n, seed=0, executor=ex)
            wall = time.perf_counter() - t0
        out[workers] = {
            "trials": len(res.trials),
            "wall": wall,
            "trials_per_s": len(res.trials) / wall,
            "mean_trial_s": float(np.mean([t.duration for t in res.trials])),
        }
        print(f"dask {workers} worker(s): {out[workers]}", flush=True)
    out["speedup"] = out[2]["trials_per_s"] / out[1]["trials_per_s"]
    return out


# -- report ----------------------------------------------------------------------------------------
def summarise(runs):
    table = {}
    for r in runs:
        table.setdefault((r["problem"], r["method"]), []).append(r)
    rows = {}
    for key, rs in table.items():

        def ms(k, rs=rs):
            v = np.array([r[k] for r in rs], dtype=float)
            return float(np.nanmean(v)), float(np.nanstd(v))

        rows[key] = {
            "best_val": ms("best_val"),
            "test_accuracy": ms("test_accuracy"),
            "n_trials": ms("n_trials"),
            "overhead_per_trial": ms("overhead_per_trial"),
            "seeds": len(rs),
        }
    return rows


def plot_curves(runs, suffix):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for problem in sorted({r["problem"] for r in runs}):
        fig, ax = plt.subplots(figsize=(6, 4))
        for method in sorted({r["method"] for r in runs if r["problem"] == problem}):
            rs = [r for r in runs if r["problem"] == problem and r["method"] == method]
            grid = np.linspace(0, max(r["wall"] for r in rs), 100)
            ys = []
            for r in rs:
                c = np.array(r["curve"]) if r["curve"] else np.array([[0.0, np.nan]])
                idx = np.searchsorted(c[:, 0], grid, side="right") - 1
                ys.append(np.where(idx >= 0, c[np.clip(idx, 0, None), 1], np.nan))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ax.plot(grid, np.nanmean(np.where(np.isfinite(ys), ys, np.nan), axis=0), label=method)
        ax.set_xlabel("evaluation time (s)")
        ax.set_ylabel("best validation objective")
        ax.set_title(problem)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = RESULTS / f"blackbox_{problem}{suffix}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path.name)
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="budget per method and run (default 10; MNIST 2.5x)")
    ap.add_argument("--problems", nargs="*", default=list(PROBLEMS))
    ap.add_argument("--no-dask", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    seeds = list(range(args.seeds or (1 if args.quick else 5)))
    base = args.seconds or (1.0 if args.quick else 10.0)
    runs = []
    for problem in args.problems:
        seconds = base * (1.0 if args.quick else 2.5) if problem == "mnist_l2" else base
        for seed in seeds:
            for method in method_table(problem):
                r = run_one(problem, method, seed, seconds, args.quick)
                runs.append(r)
                print(
                    f"{problem:11s} {method:13s} seed {seed}: best val {r['best_val']:.4f} test "
                    f"{r['test_accuracy']:.4f} trials {r['n_trials']:4d} overhead/trial "
                    f"{1000 * r['overhead_per_trial']:.1f} ms",
                    flush=True,
                )
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    pngs = plot_curves(runs, suffix)
    rows = summarise(runs)
    dask = None if args.no_dask else dask_throughput(args.quick)
    cmd = " ".join(["python benchmarks/blackbox.py"] + (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# Black-box outer optimizers at equal wall-clock budget",
        "",
        f"`{cmd}`: {len(seeds)} seed(s); {base:g} s per method and run "
        f"({base * (1.0 if args.quick else 2.5):g} s on mnist_l2), torch single-threaded. "
        "Validation objective: error (digits, cancer) or cross-entropy (MNIST); test accuracy after "
        "refitting the best configuration on train + validation. Mean ± std over seeds.",
        "",
        "| problem | method | best validation | test accuracy | trials | overhead / trial (ms) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (problem, method), row in rows.items():
        lines.append(
            f"| {problem} | {method} | {row['best_val'][0]:.4f} ± {row['best_val'][1]:.4f} | "
            f"{row['test_accuracy'][0]:.4f} ± {row['test_accuracy'][1]:.4f} | {row['n_trials'][0]:.0f} | "
            f"{1000 * row['overhead_per_trial'][0]:.1f} |"
        )
    ratios = {}
    for problem in {p for p, _ in rows}:
        if (problem, "smac") in rows and (problem, "smac3_direct") in rows:
            ours_, theirs = rows[(problem, "smac")], rows[(problem, "smac3_direct")]
            ratios[problem] = {
                "best_val_ours_minus_theirs": ours_["best_val"][0] - theirs["best_val"][0],
                "theirs_std": theirs["best_val"][1],
                "trials_ratio": ours_["n_trials"][0] / max(theirs["n_trials"][0], 1e-9),
            }
    lines += [
        "",
        "SMAC plugin vs SMAC3 direct (ours − theirs in best validation; trials in the same time, ours / theirs):",
        "",
        "| problem | Δ best validation | SMAC3 std | trials ratio |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {p} | {r['best_val_ours_minus_theirs']:+.4f} | {r['theirs_std']:.4f} | {r['trials_ratio']:.2f} |"
        for p, r in sorted(ratios.items())
    ]
    if dask:
        lines += [
            "",
            f"Dask throughput (digits MLP, {dask[1]['mean_trial_s']:.2f} s mean trial, single-threaded "
            f"workers): 1 worker {dask[1]['trials_per_s']:.3f} trials/s, 2 workers "
            f"{dask[2]['trials_per_s']:.3f} trials/s: **{dask['speedup']:.2f}×**.",
        ]
    lines += ["", "Anytime curves: " + ", ".join(f"[{p}]({p})" for p in pngs), ""]
    payload = {
        "machine": machine(),
        "command": cmd,
        "seeds": seeds,
        "seconds": base,
        "runs": runs,
        "summary": {f"{p}/{m}": row for (p, m), row in rows.items()},
        "smac_vs_direct": ratios,
        "dask": dask,
    }
    j, m = write(f"blackbox{suffix}", payload, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
