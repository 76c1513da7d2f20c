"""Online hyperparameter optimisation against the alternatives, in units of one plain training run.

Problem: the ``mlp`` learner (one hidden layer of 64, Adam, batch 128) on Fashion-MNIST through the
package's loaders: ``--n-train`` training and ``--n-val`` validation images drawn from the official
training set (per seed), scored on the official test set. Hyperparameters: learning rate and weight
decay (log ranges of the learner's space). Outer objective: validation cross-entropy.

Methods (each ends with a model trained on train + validation, scored on the test set):

- ``default``: the learner's default hyperparameters (one run on train for the validation loss, one
  on train + validation);
- ``online_truncated`` / ``online_forward``: the ``online`` optimizer (one run, an update every K steps,
  truncated-reverse or forward-mode hypergradients), then its refit replaying the schedule;
- ``adam_hd`` / ``sgd_hd``: hypergradient descent (Baydin et al. 2018, written here as the anchor): the
  learning rate moved every step by the hypergradient of the *training* loss, α ← α − β ∇f(θ_t)·∂θ_t/∂α
  with ∂θ_t/∂α the previous update direction (β = 1e-7 for Adam-HD, 1e-3 for SGD-HD as in the paper,
  α₀ the learner's default lr; SGD-HD trains with plain SGD); weight decay at its default;
- ``hypergradient``: our offline ``hypergradient`` optimizer, 20 outer steps (each a training run with a
  truncated-reverse hypergradient through the last tenth of it), then a refit with its values;
- ``random`` and ``smac`` (our optimizers), ``optuna_tpe`` (Optuna's TPESampler, if installed): 50
  trials; the best configuration after 10, 30 and 50 trials is refitted and scored (rows ``@10``...).

Cost: CPU time of search and refit together, divided by the CPU time of one plain run of the learner at
its default hyperparameters on the training split (median of three), measured in the same process at
the start of each seed. Torch runs single-threaded, so CPU time counts this benchmark's work only; on a
shared machine wall-clock would count the neighbours' work too (it is recorded as ``wall``).

    python benchmarks/online.py --quick        # under a minute: small data, 2 epochs, 10 trials
    python benchmarks/online.py --seeds 3      # the default size: 10,000 / 5,000 images, 10 epochs
    python benchmarks/online.py --n-train 10000 --n-val 5000 --epochs 20 --seeds 5

Writes benchmarks/results/online[_quick].json, .md and .png (anytime curves: best validation loss
against cost, and test accuracy against cost). Torch runs single-threaded.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, machine, write  # noqa: E402
from ConfigSpace import ConfigurationSpace, Float  # noqa: E402

from automl_bilevel import BilevelProblem, Split, Task, run_search  # noqa: E402
from automl_bilevel.core.trials import Evaluation  # noqa: E402
from automl_bilevel.frontends.data import load_idx_dataset  # noqa: E402
from automl_bilevel_plugins.learners.torch_learners import MLPLearner  # noqa: E402
from automl_bilevel_plugins.objectives.validation import ValidationLoss  # noqa: E402
from automl_bilevel_plugins.optimizers.hypergradient import HypergradientOptimizer  # noqa: E402
from automl_bilevel_plugins.optimizers.online import OnlineOptimizer  # noqa: E402
from automl_bilevel_plugins.optimizers.random_search import RandomSearch  # noqa: E402
from automl_bilevel_plugins.optimizers.smac_optimizer import SMACOptimizer  # noqa: E402

TASK = Task("classification", 784, 10)


def clock() -> float:
    """The cost clock: this process's CPU time. Torch runs single-threaded, so on a shared machine it
    counts this benchmark's work only, where wall-clock would count the neighbours' too."""
    return time.process_time()


CHECKPOINTS = (10, 30, 50)


def space(seed: int) -> ConfigurationSpace:
    cs = ConfigurationSpace(seed=seed)
    cs.add(
        [
            Float("lr", (1e-4, 1e-1), log=True, default=1e-3),
            Float("weight_decay", (1e-7, 1e-2), log=True, default=1e-4),
        ]
    )
    return cs


def load(seed: int, n_train: int, n_val: int, n_test: int) -> dict[str, np.ndarray]:
    X, y = load_idx_dataset("fashion-mnist", "train")
    Xt, yt = load_idx_dataset("fashion-mnist", "test")
    idx = np.random.default_rng(seed).permutation(len(X))[: n_train + n_val]
    X = X[idx].reshape(len(idx), -1).astype(np.float64) / 255.0
    y = y[idx]
    return {
        "Xtr": X[:n_train],
        "ytr": y[:n_train],
        "Xva": X[n_train:],
        "yva": y[n_train:],
        "Xte": Xt[:n_test].reshape(-1, 784).astype(np.float64) / 255.0,
        "yte": yt[:n_test],
    }


class Timed(BilevelProblem):
    """The problem, with the wall-clock at the end of every evaluation (optimizer overhead included)."""

    def evaluate(self, config: Any, budget: float | None = None) -> Evaluation:
        ev = super().evaluate(config, budget)
        self.__dict__.setdefault("marks", []).append((clock(), ev.value))
        return ev


def test_accuracy(model: Any, d: dict[str, np.ndarray]) -> float:
    return float(np.mean(model.predict(d["Xte"]) == d["yte"]))


def val_loss(model: Any, d: dict[str, np.ndarray]) -> float:
    return float(ValidationLoss()(model, d["Xva"], d["yva"], task=TASK))


def all_data(d: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([d["Xtr"], d["Xva"]]), np.concatenate([d["ytr"], d["yva"]])


# -- methods: each returns records {method, cost (s), val_loss, test_acc, curve [(s, best val)]} -------
def m_default(learner: MLPLearner, d: dict, seed: int) -> list[dict]:
    t0 = clock()
    model = learner.fit(d["Xtr"], d["ytr"], {}, task=TASK, seed=seed)
    v = val_loss(model, d)
    t1 = clock()
    final = learner.fit(*all_data(d), {}, task=TASK, seed=seed)
    t2 = clock()
    return [dict(method="default", cost=t2 - t0, val_loss=v, test_acc=test_accuracy(final, d), curve=[(t1 - t0, v)])]


def m_online(learner: MLPLearner, d: dict, seed: int, name: str, **opt: Any) -> list[dict]:
    problem = BilevelProblem(
        learner, ValidationLoss(), space(seed), TASK, [Split(d["Xtr"], d["ytr"], d["Xva"], d["yva"])], seed
    )
    o = OnlineOptimizer(**opt)
    t0 = clock()
    marks: list[tuple[float, float]] = []

    class Mark:
        def handle(self, event: Any) -> None:
            if hasattr(event, "trial"):
                marks.append((clock() - t0, event.trial.value))

    from automl_bilevel.run.engine import RunSession

    result = run_search(problem, o, n_iter=1000, seed=seed, session=RunSession([("mark", Mark())]))
    t1 = clock()
    Xa, ya = all_data(d)
    final = o.refit(learner, Xa, ya, o.best_config() or {}, task=TASK, seed=seed)
    t2 = clock()
    best = math.inf
    curve = []
    for s, v in marks:
        best = min(best, v) if math.isfinite(v) else best
        curve.append((s, v))  # the online run's own validation loss, not a best-so-far
    v_end = val_loss(o.fitted_attributes()["online_model_"], d)
    return [
        dict(
            method=name,
            cost=t2 - t0,
            search=t1 - t0,
            val_loss=v_end,
            test_acc=test_accuracy(final, d),
            online_test_acc=test_accuracy(o.fitted_attributes()["online_model_"], d),
            curve=curve,
            n_trials=len(result.trials),
            final_lr=float((o.best_config() or {}).get("lr", math.nan)),
            final_weight_decay=float((o.best_config() or {}).get("weight_decay", math.nan)),
        )
    ]


def hd_train(learner: MLPLearner, X: np.ndarray, y: np.ndarray, seed: int, kind: str) -> tuple[Any, float]:
    """Hypergradient descent (Baydin et al. 2018) on the learner's own training (batches, init, loss)."""
    from torch.func import grad

    rule = "adam" if kind == "adam" else "sgd"
    dt = learner.differentiable(X, y, {"optimizer": rule, "momentum": 0.0}, task=TASK, seed=seed)
    dyn, hp = dt.dynamics, dict(dt.constants)
    beta = 1e-7 if kind == "adam" else 1e-3
    alpha = float(hp["lr"])
    w = dyn.weights(dt.z0).detach().clone()
    m, v, u_prev = torch.zeros_like(w), torch.zeros_like(w), torch.zeros_like(w)
    b1, b2, eps = 0.9, 0.999, 1e-8
    with torch.no_grad():
        for t in range(dyn.T):
            g = grad(lambda w_, t=t: dyn.inner_loss(w_, hp, t))(w)
            alpha = alpha - beta * float(g @ u_prev)  # h_t = ∇f(θ_t)·∂θ_t/∂α, ∂θ_t/∂α = u_{t-1}
            if kind == "adam":
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                u = -(m / (1 - b1 ** (t + 1))) / (torch.sqrt(v / (1 - b2 ** (t + 1))) + eps)
            else:
                u = -g
            w = w + alpha * u
            u_prev = u
            if not torch.isfinite(w).all():
                raise FloatingPointError(f"{kind}-HD diverged at step {t} (lr {alpha:.3g})")
    return dt.predictor(w), alpha


def m_hd(learner: MLPLearner, d: dict, seed: int, kind: str) -> list[dict]:
    t0 = clock()
    model, _ = hd_train(learner, d["Xtr"], d["ytr"], seed, kind)
    v = val_loss(model, d)
    t1 = clock()
    final, alpha = hd_train(learner, *all_data(d), seed, kind)
    t2 = clock()
    return [
        dict(
            method=f"{kind}_hd",
            cost=t2 - t0,
            val_loss=v,
            test_acc=test_accuracy(final, d),
            curve=[(t1 - t0, v)],
            final_lr=alpha,
        )
    ]


def m_hypergradient(learner: MLPLearner, d: dict, seed: int, steps: int, T: int) -> list[dict]:
    problem = Timed(learner, ValidationLoss(), space(seed), TASK, [Split(d["Xtr"], d["ytr"], d["Xva"], d["yva"])], seed)
    o = HypergradientOptimizer(mode="truncated", truncate=max(1, T // 10), outer_lr=0.1)
    t0 = clock()
    marks: list[tuple[float, float]] = []

    class Mark:
        def handle(self, event: Any) -> None:
            if hasattr(event, "trial"):
                marks.append((clock() - t0, event.trial.value))

    from automl_bilevel.run.engine import RunSession

    run_search(problem, o, n_iter=steps, seed=seed, session=RunSession([("mark", Mark())]))
    config = o.best_config() or {}
    t1 = clock()
    final = learner.fit(*all_data(d), config, task=TASK, seed=seed)
    t2 = clock()
    curve, best = [], math.inf
    for s, v in marks:
        best = min(best, v) if math.isfinite(v) else best
        curve.append((s, best))
    return [
        dict(
            method="hypergradient",
            cost=t2 - t0,
            search=t1 - t0,
            val_loss=best,
            test_acc=test_accuracy(final, d),
            curve=curve,
        )
    ]


def blackbox_records(
    name: str, trials: list[tuple[float, float, dict]], t0: float, learner: MLPLearner, d: dict, seed: int, n: int
) -> list[dict]:
    """Rows ``name@k`` for k in CHECKPOINTS: the best of the first k trials refitted (refit time added)."""
    out, curve, best, best_cfg = [], [], math.inf, None
    for i, (stamp, value, cfg) in enumerate(trials, start=1):
        if math.isfinite(value) and value < best:
            best, best_cfg = value, cfg
        curve.append((stamp - t0, best))
        if i in CHECKPOINTS and i <= n and best_cfg is not None:
            r0 = clock()
            final = learner.fit(*all_data(d), best_cfg, task=TASK, seed=seed)
            refit = clock() - r0
            out.append(
                dict(
                    method=f"{name}@{i}",
                    cost=stamp - t0 + refit,
                    val_loss=best,
                    test_acc=test_accuracy(final, d),
                    curve=list(curve),
                )
            )
    return out


def m_ours(learner: MLPLearner, d: dict, seed: int, name: str, n: int) -> list[dict]:
    problem = Timed(learner, ValidationLoss(), space(seed), TASK, [Split(d["Xtr"], d["ytr"], d["Xva"], d["yva"])], seed)
    opt = RandomSearch(start_with_default=False) if name == "random" else SMACOptimizer("hpo")
    t0 = clock()
    result = run_search(problem, opt, n_iter=n, seed=seed)
    marks = problem.__dict__.get("marks", [])
    trials = [(stamp, value, dict(t.config)) for (stamp, value), t in zip(marks, result.trials, strict=False)]
    return blackbox_records(name, trials, t0, learner, d, seed, n)


def m_optuna(learner: MLPLearner, d: dict, seed: int, n: int) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = BilevelProblem(
        learner, ValidationLoss(), space(seed), TASK, [Split(d["Xtr"], d["ytr"], d["Xva"], d["yva"])], seed
    )
    trials: list[tuple[float, float, dict]] = []

    def objective(trial: Any) -> float:
        cfg = {
            "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-2, log=True),
        }
        value = problem.evaluate(cfg).value
        trials.append((clock(), value, cfg))
        return value

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    t0 = clock()
    study.optimize(objective, n_trials=n)
    return blackbox_records("optuna_tpe", trials, t0, learner, d, seed, n)


def m_estimator(d: dict, seed: int, epochs: int, name: str, **opt: Any) -> list[dict]:
    """The issue's measure: ``BilevelClassifier("mlp", "val_loss", "online")``'s whole fit on train +
    validation (its own 80/20 split, search and refit) over one plain fit of the same learner there."""
    from automl_bilevel import BilevelClassifier

    X, y = all_data(d)
    t0 = clock()
    MLPLearner(epochs=epochs).fit(X, y, {}, task=TASK, seed=seed)
    plain = clock() - t0
    t0 = clock()
    est = BilevelClassifier(
        "mlp",
        "val_loss",
        "online",
        n_iter=50,
        tracking=False,
        random_state=seed,
        learner_params={"epochs": epochs},
        optimizer_params=opt,
    ).fit(X, y)
    fit = clock() - t0
    return [
        dict(
            method=name,
            cost=fit,
            plain_same_data=plain,
            fit_ratio=fit / plain,
            val_loss=float(est.history_["value"][-1]),
            test_acc=float(np.mean(est.predict(d["Xte"]) == d["yte"])),
            curve=[(fit, float(est.history_["value"][-1]))],
        )
    ]


# -- driver -----------------------------------------------------------------------------------------
def run_seed(args: argparse.Namespace, seed: int) -> tuple[float, list[dict]]:
    d = load(seed, args.n_train, args.n_val, args.n_test)
    learner = MLPLearner(epochs=args.epochs)
    times = []
    for _ in range(3):  # the unit: one plain run at the defaults (CPU time, the median of three)
        t0 = clock()
        learner.fit(d["Xtr"], d["ytr"], {}, task=TASK, seed=seed)
        times.append(clock() - t0)
    unit = float(np.median(times))
    T = learner.differentiable(d["Xtr"], d["ytr"], {}, task=TASK, seed=seed).dynamics.T
    recs: list[dict] = []
    methods = args.methods
    for method in methods:
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        if method == "default":
            out = m_default(learner, d, seed)
        elif method == "online_truncated":
            out = m_online(learner, d, seed, method, mode="truncated")
        elif method == "online_truncated_full":  # unroll the whole segment
            out = m_online(learner, d, seed, method, mode="truncated", truncate=math.ceil(T / 50))
        elif method == "online_truncated_1":  # unroll one step per segment
            out = m_online(learner, d, seed, method, mode="truncated", truncate=1)
        elif method == "online_forward":
            out = m_online(learner, d, seed, method, mode="forward")
        elif method == "estimator":
            out = m_estimator(d, seed, args.epochs, method)
        elif method == "estimator_forward":
            out = m_estimator(d, seed, args.epochs, method, mode="forward")
        elif method in ("adam_hd", "sgd_hd"):
            out = m_hd(learner, d, seed, method.split("_")[0])
        elif method == "hypergradient":
            out = m_hypergradient(learner, d, seed, args.hg_steps, T)
        elif method in ("random", "smac"):
            out = m_ours(learner, d, seed, method, args.trials)
        elif method == "optuna_tpe":
            try:
                import optuna  # noqa: F401
            except ImportError:
                print("optuna is not installed: optuna_tpe skipped", flush=True)
                continue
            out = m_optuna(learner, d, seed, args.trials)
        else:
            raise SystemExit(f"unknown method {method!r}")
        for r in out:
            r.update(
                seed=seed, unit_s=unit, cost_units=r["cost"] / unit, load=load_before, wall=time.perf_counter() - t0
            )
            r["curve"] = [(s / unit, v) for s, v in r["curve"]]
            print(
                f"seed {seed} {r['method']:<22} cost {r['cost_units']:6.2f} x  val {r['val_loss']:.4f}  "
                f"test {r['test_acc']:.4f}  ({time.perf_counter() - t0:.1f} s, load {load_before:.1f})",
                flush=True,
            )
        recs += out
    return unit, recs


def summarise(recs: list[dict]) -> list[dict]:
    rows = []
    for method in dict.fromkeys(r["method"] for r in recs):
        rs = [r for r in recs if r["method"] == method]

        def ms(key: str, rs: list[dict] = rs) -> tuple[float, float]:
            xs = np.array([r[key] for r in rs if key in r], dtype=float)
            return (float(np.mean(xs)), float(np.std(xs))) if len(xs) else (math.nan, math.nan)

        rows.append(
            dict(
                method=method,
                seeds=len(rs),
                cost=ms("cost_units"),
                val_loss=ms("val_loss"),
                test_acc=ms("test_acc"),
                online_test_acc=ms("online_test_acc"),
                fit_ratio=ms("fit_ratio"),
                wall=ms("cost"),
            )
        )
    return rows


def table(
    rows: list[dict], args: argparse.Namespace, units: list[float], loads: list[float], command: str | None = None
) -> str:
    command = command or " ".join(sys.argv[1:])
    lines = [
        f"# Online HO on Fashion-MNIST ({args.n_train} train / {args.n_val} validation / {args.n_test} test images, "
        f"MLP 784-64-10, Adam, {args.epochs} epochs)",
        "",
        f"Command: `python benchmarks/online.py {command}`. Seeds: {args.seeds}. One plain run "
        f"(the cost unit) took {np.mean(units):.2f} ± {np.std(units):.2f} s. Torch single-threaded; the machine "
        f"was shared with other jobs (load average {min(loads):.1f}-{max(loads):.1f} at method starts on 2 cores), "
        "so wall-clock is noisy; ratios were measured in one process per seed.",
        "",
        "Cost = search + refit on train + validation, in plain runs. Validation loss: of the configuration "
        "chosen (black box: best of the first k trials, trained on train), for `online` of the online run's own "
        "final model. Test accuracy: the refitted model, official test set. mean ± std over seeds.",
        "",
        *(
            [
                "**--quick checks that everything runs; its costs mean nothing**: a plain run takes hundredths of a "
                "second there, so fixed start-up and per-update costs "
                "dominate every ratio.",
                "",
            ]
            if getattr(args, "quick", False)
            else []
        ),
        "| method | cost (plain runs) | validation loss | test accuracy | online run's own model, test |",
        "|---|---|---|---|---|",
    ]

    def pm(pair: tuple[float, float], digits: int) -> str:
        return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}" if math.isfinite(pair[0]) else ""

    for r in rows:
        if r["method"].startswith("estimator"):
            continue
        cells = [r["method"], pm(r["cost"], 2), pm(r["val_loss"], 4), pm(r["test_acc"], 4), pm(r["online_test_acc"], 4)]
        lines.append("| " + " | ".join(cells) + " |")
    est = [r for r in rows if r["method"].startswith("estimator")]
    if est:
        lines += [
            "",
            '`BilevelClassifier("mlp", "val_loss", "online", n_iter=50)`: the whole fit (its own 80/20 split of '
            "train + validation, the online run and the refit replaying the schedule) over one plain fit of the "
            "same learner on the same data at its default hyperparameters (CPU time, same process):",
            "",
            "| estimator | whole fit / plain fit | test accuracy |",
            "|---|---|---|",
        ]
        for r in est:
            lines.append(f"| {r['method']} | {pm(r['fit_ratio'], 2)} | {pm(r['test_acc'], 4)} |")
    return "\n".join(lines) + "\n"


def plot(recs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors: dict[str, Any] = {}
    for method in dict.fromkeys(r["method"].split("@")[0] for r in recs):
        rs = [r for r in recs if r["method"].split("@")[0] == method]
        longest = max(rs, key=lambda r: len(r["curve"]))
        c = np.array(longest["curve"], dtype=float)
        (line,) = a.plot(c[:, 0], c[:, 1], marker="." if len(c) < 3 else None, label=method)
        colors[method] = line.get_color()
        rows = []  # (mean cost, mean test accuracy, std) per row of this method (black box: @10, @30, @50)
        for row in dict.fromkeys(r["method"] for r in rs):
            sel = [r for r in rs if r["method"] == row]
            acc = [r["test_acc"] for r in sel]
            rows.append((float(np.mean([r["cost_units"] for r in sel])), float(np.mean(acc)), float(np.std(acc))))
        pts = np.array(rows)
        b.errorbar(
            pts[:, 0], pts[:, 1], yerr=pts[:, 2], color=colors[method], label=method, marker="o", ms=4, capsize=2
        )
    a.set_xscale("log")
    a.set_xlabel("cost (plain training runs)")
    a.set_ylabel("validation loss (black box: best so far; online: its run)")
    a.set_ylim(top=min(1.5, a.get_ylim()[1]))
    b.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax in (a, b):
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    b.set_xlabel("cost incl. refit (plain training runs)")
    b.set_ylabel("test accuracy after refit")
    b.legend(fontsize=7, loc="lower right")
    a.set_title("validation loss against cost (seed 0)")
    b.set_title("test accuracy against cost (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


ALL = [
    "default",
    "online_truncated",
    "online_forward",
    "adam_hd",
    "sgd_hd",
    "hypergradient",
    "random",
    "smac",
    "optuna_tpe",
]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small data, 2 epochs, 10 trials: under a minute")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    p.add_argument("--n-train", type=int, default=10_000)
    p.add_argument("--n-val", type=int, default=5_000)
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--hg-steps", type=int, default=20)
    p.add_argument("--methods", nargs="+", default=ALL)
    p.add_argument("--out", default=None)
    p.add_argument("--rerender", default=None, help="a results JSON: write its table and PNG again")
    args = p.parse_args(argv)
    if args.rerender:
        import json

        saved = json.loads(Path(args.rerender).read_text())
        for k, v in saved["args"].items():
            if k not in ("rerender", "out"):
                setattr(args, k, v)
        recs = saved["runs"]
        name = Path(args.rerender).stem
        png = RESULTS / f"{name}.png"
        plot(recs, png)
        md = table(summarise(recs), args, saved["units_s"], [r["load"] for r in recs], saved.get("command"))
        md += f"\n![anytime curves]({png.name})\n"
        write(name, saved, md)
        print(md)
        return
    if args.quick:
        args.seeds, args.n_train, args.n_val, args.n_test, args.epochs = 1, 1500, 500, 2000, 2
        args.trials, args.hg_steps = 10, 3
    torch.set_num_threads(1)
    units, recs = [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        unit, out = run_seed(args, seed)
        units.append(unit)
        recs += out
    rows = summarise(recs)
    name = args.out or ("online_quick" if args.quick else "online")
    md = table(rows, args, units, [r["load"] for r in recs])
    png = RESULTS / f"{name}.png"
    plot(recs, png)
    md += f"\n![anytime curves]({png.name})\n"
    payload = {"args": vars(args), "command": " ".join(sys.argv[1:]), "machine": machine(), "units_s": units}
    write(name, {**payload, "rows": rows, "runs": recs}, md)
    print(md)


if __name__ == "__main__":
    main()
