"""Learned inner components on real data.

A. Meta-loss network: evolved by the ``es`` optimizer ((μ+λ)-ES and OpenAI-ES) and trained by
   hypergradients (ML3), all from its cross-entropy start, on small-data Fashion-MNIST training tasks;
   then cross-entropy, MSE and both learned losses
   train a 784-100-100-10 MLP for 20 SGD steps on unseen Fashion-MNIST tasks (test-set images) and
   on MNIST tasks: validation accuracy mean ± std over the tasks.
B. Learned optimizer (L2O-DM) meta-trained on MNIST 784-20-10 sigmoid MLPs, without and with each
   flatness regularizer, against Adam and SGD: test accuracy and final training loss after N steps
   on MNIST MLPs of unseen width (40) and depth (two hidden layers) and on Fashion-MNIST, 5 seeds.

    python benchmarks/learned.py            # about an hour and a half
    python benchmarks/learned.py --part A   # part A alone (kept: part B's results in the results file)
    python benchmarks/learned.py --quick    # under a minute

Writes benchmarks/results/learned[_quick].json and .md. Torch single-threaded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, machine, write  # noqa: E402

from automl_bilevel.frontends.data import load_idx_dataset  # noqa: E402
from automl_bilevel.gradient import SGD, Adam  # noqa: E402
from automl_bilevel.methods.learned import (  # noqa: E402
    LearnedOptimizer,
    LossNetwork,
    LSTMOptimizer,
    MLPOptimizee,
    meta_train_optimizer,
    sample_tasks,
    train_optimizee,
)
from automl_bilevel.methods.recipes.metaloss import evaluate_loss, evolve_loss_network, train_loss_network_ml3  # noqa: E402


def flat(name, split):
    X, y = load_idx_dataset(name, split)
    return X.reshape(len(X), -1) / 255.0, y


def ms(values):
    v = np.asarray(values, dtype=float)
    return float(np.nanmean(v)), float(np.nanstd(v))


LR_GRID = (0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def accuracies(loss, tasks, lr):
    """Validation accuracy per task of an MLP trained with ``loss`` at inner step size ``lr``; NaN
    where the inner training diverges."""
    try:
        return evaluate_loss(loss, tasks, n_classes=10, lr=lr)
    except FloatingPointError:
        return [math.nan] * len(tasks)


def paired(a, b):
    """Per-task differences a - b: mean, std, wins of a, losses of a."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return float(np.mean(d)), float(np.std(d)), int(np.sum(d > 0)), int(np.sum(d < 0))


def part_losses(q, out, args):
    fx, fy = flat("fashion-mnist", "train")
    tx, ty = flat("fashion-mnist", "test")
    mx, my = flat("mnist", "test")
    n_val = 300 if q else 1000
    train = sample_tasks(fx, fy, 3 if q else 8, n_train=(10, 100), n_val=n_val, seed=0)
    held = sample_tasks(fx, fy, 2 if q else 8, n_train=(10, 100), n_val=n_val, seed=5)
    n_test = 4 if q else 20
    tests = {
        "fashion_mnist": sample_tasks(tx, ty, n_test, n_train=(10, 100), n_val=n_val, seed=1),
        "mnist": sample_tasks(mx, my, n_test, n_train=(10, 100), n_val=n_val, seed=2),
    }
    # the ES fitness: es_tasks further Fashion-MNIST training tasks of es_size training examples and es_val
    # validation examples (small, so that 8000 evaluations per variant fit on a shared CPU)
    es_tasks = (
        train if q else sample_tasks(fx, fy, args.es_tasks, n_train=tuple(args.es_size), n_val=args.es_val, seed=3)
    )
    n_eval = 40 if q else args.es_evals
    pop = 10 if q else args.es_population
    searches, learned = {}, {}
    variants = {"mln_es": ("mu_plus_lambda", {}), "mln_es_openai": ("openai", {"lr": 1e-3})}
    for name, (strategy, options) in variants.items():
        t0 = time.perf_counter()
        learned[name], res = evolve_loss_network(
            es_tasks,
            n_classes=10,
            n_evaluations=n_eval,
            population_size=pop,
            sigma0=0.003,
            strategy=strategy,
            strategy_options=options,
            timeout=None if q else args.es_timeout,
        )
        seconds = time.perf_counter() - t0
        searches[name] = {
            "strategy": strategy,
            "seconds": seconds,
            "evaluations": len(res.trials),
            "evals_per_s": len(res.trials) / seconds,
            "population": pop,
            "generations": len(res.trials) // pop,
            "batched_trials": sum(t.ok and t.metrics.get("batched") == 1.0 for t in res.trials),
            "failed": sum(not t.ok for t in res.trials),
            "start_error": res.trials[0].value,
            "best_error": res.best.value,
            "best_trial": res.best.number,
        }
        print(f"{name}: {searches[name]}", flush=True)
    t0 = time.perf_counter()
    learned["mln_ml3"], ml3 = train_loss_network_ml3(
        train,
        n_classes=10,
        outer_steps=6 if q else 60,
        outer_lr=3e-4,
        tasks_per_step=4,
        held_out=held,
        eval_every=2 if q else 5,
    )
    searches["mln_ml3"] = {
        "seconds": time.perf_counter() - t0,
        "steps": len(ml3.values),
        "rejected": ml3.rejected,
        "held_out": ml3.held_out,
        "best_step": ml3.best_step,
    }
    # baselines: each fixed loss at its best inner step size on the training tasks
    grid, best_lr = {}, {}
    for loss in ("cross_entropy", "mse"):
        key = "default" if loss == "cross_entropy" else loss
        grid[loss] = {str(lr): ms(accuracies(key, train, lr)) for lr in LR_GRID}
        best_lr[loss] = max(LR_GRID, key=lambda lr, g=grid[loss]: -np.inf if np.isnan(g[str(lr)][0]) else g[str(lr)][0])
        print(f"{loss} lr grid on the training tasks: {grid[loss]} -> {best_lr[loss]}", flush=True)
    losses = {
        "cross_entropy": ("default", best_lr["cross_entropy"]),
        "mse": ("mse", best_lr["mse"]),
        "cross_entropy_lr0.1": ("default", 0.1),
        "mse_lr0.1": ("mse", 0.1),
        "mln_start": (LossNetwork(10), 0.1),
        **{k: (v, 0.1) for k, v in learned.items()},
    }
    rows, per_task = [], {}
    for name, (loss, lr) in losses.items():
        row = {"loss": name, "lr": lr}
        per_task[name] = {}
        for domain, tasks in tests.items():
            per_task[name][domain] = accuracies(loss, tasks, lr)
            row[domain] = ms(per_task[name][domain])
        rows.append(row)
        print(
            f"loss {name:20s} lr {lr:<5g} "
            + "  ".join(f"{d} {m:.3f} ± {s:.3f}" for d, (m, s) in ((d, row[d]) for d in tests)),
            flush=True,
        )
    comparisons = []
    for name in ("mln_start", *learned):
        for base in ("cross_entropy", "mse"):
            for domain in tests:
                m, s, w, loss_ = paired(per_task[name][domain], per_task[base][domain])
                comparisons.append(
                    {"loss": name, "baseline": base, "domain": domain, "mean": m, "std": s, "wins": w, "losses": loss_}
                )
    out["losses"] = {
        "rows": rows,
        "per_task": per_task,
        "comparisons": comparisons,
        "lr_grid": grid,
        "best_lr": best_lr,
        "outer": searches,
        "n_train_tasks": len(train),
        "n_es_tasks": len(es_tasks),
        "n_es_val": len(es_tasks[0].X_val),
        "es_size": "10–100" if q else "–".join(map(str, args.es_size)),
        "es_train_examples": [len(t.X_train) for t in es_tasks],
        "n_test_tasks": n_test,
        "n_val": n_val,
    }
    return losses_lines(out["losses"])


def losses_lines(r):
    """Part A's markdown from its results."""
    s = r["outer"]
    es, eo, ml = s["mln_es"], s["mln_es_openai"], s["mln_ml3"]
    n_es = r.get("n_es_tasks", r["n_train_tasks"])
    domains = ("fashion_mnist", "mnist")
    lines = [
        "## A. Meta-loss network (20 SGD steps, 784-100-100-10 MLP, 10–100 training examples)",
        "",
        f"`{r['command']}`" if "command" in r else "",
        "",
        f"Outer loops on Fashion-MNIST training tasks: (μ+λ)-ES and OpenAI-ES (lr 1e-3) with fitness = mean "
        f"validation error on {n_es} tasks of {r.get('es_size', '10–100')} training and "
        f"{r.get('n_es_val', r.get('n_val', 1000))} validation examples, {es['evaluations']} and "
        f"{eo['evaluations']} evaluations in populations of {es.get('population', 20)}, σ0 = 0.003 "
        f"({es['seconds']:.0f} s and {eo['seconds']:.0f} s, {es.get('evals_per_s', 0):.2f} and "
        f"{eo.get('evals_per_s', 0):.2f} evaluations/s; {es.get('batched_trials', '?')} and "
        f"{eo.get('batched_trials', '?')} of them evaluated in batched generations, {es['failed']} and "
        f"{eo['failed']} failed; fitness from {es['start_error']:.3f} at the start to {es['best_error']:.3f} and "
        f"{eo['best_error']:.3f}). ML3: {ml['steps']} outer steps of 4 tasks cycling through "
        f"{r['n_train_tasks']} training tasks of 10–100 training and {r.get('n_val', 1000)} validation examples "
        f"({ml['seconds']:.0f} s, {len(ml['rejected'])} rejected), best of {len(ml['held_out'])} checks on "
        f"held-out tasks (step {ml['best_step']}). All learned losses start from `mln_start`, the network's "
        "cross-entropy start, and train at inner lr 0.1 (the recipe's).",
        "",
    ]
    if "best_lr" in r:
        lines += [
            f"Baselines `cross_entropy` and `mse` at their best inner lr on the {r['n_train_tasks']} training "
            "tasks (those of ML3), from the grid "
            + ", ".join(f"{lr:g}" for lr in LR_GRID)
            + " (mean training-task accuracy: "
            + "; ".join(
                f"{loss} " + ", ".join(f"{lr} {v[0]:.3f}" for lr, v in g.items()) for loss, g in r["lr_grid"].items()
            )
            + f"): cross-entropy lr {r['best_lr']['cross_entropy']:g}, MSE lr {r['best_lr']['mse']:g}. "
            "The `_lr0.1` rows are both at the recipe's lr.",
            "",
        ]
    lines += [
        f"Validation accuracy ({r.get('n_val', 1000)} examples per task), mean ± std over {r['n_test_tasks']} "
        "unseen tasks per domain (Fashion-MNIST test-set images, MNIST). The source paper reports 0.646 (MLN) "
        "vs 0.592 (CE) vs 0.481 (MSE) on Fashion-MNIST.",
        "",
        "| loss | inner lr | Fashion-MNIST tasks | MNIST tasks |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {x['loss']} | {x.get('lr', 0.1):g} | "
        + " | ".join(f"{x[d][0]:.3f} ± {x[d][1]:.3f}" for d in domains)
        + " |"
        for x in r["rows"]
    ]
    if "comparisons" in r:
        lines += [
            "",
            "Paired per-task differences (learned loss − baseline at its best lr, the same tasks and seeds): "
            "mean ± std, wins/losses out of the tasks; **bold** where |mean| exceeds the std of the differences.",
            "",
            "| loss | vs | Fashion-MNIST | MNIST |",
            "|---|---|---:|---:|",
        ]
        for name in dict.fromkeys(c["loss"] for c in r["comparisons"]):
            for base in ("cross_entropy", "mse"):
                cells = []
                for d in domains:
                    c = next(
                        c for c in r["comparisons"] if c["loss"] == name and c["baseline"] == base and c["domain"] == d
                    )
                    txt = f"{c['mean']:+.3f} ± {c['std']:.3f}"
                    if abs(c["mean"]) > c["std"]:
                        txt = f"**{txt}**"
                    cells.append(f"{txt} ({c['wins']}/{c['losses']})")
                lines.append(f"| {name} | {base} | " + " | ".join(cells) + " |")
    return lines


def part_optimizers(q, out):
    mx, my = flat("mnist", "train")
    mtx, mty = flat("mnist", "test")
    fx, fy = flat("fashion-mnist", "train")
    ftx, fty = flat("fashion-mnist", "test")
    n = 3000 if q else 20000

    def make(seed):
        return MLPOptimizee(mx[:n], my[:n], hidden=(20,), activation="sigmoid", seed=seed)

    variants = {
        "l2o": (None, 0.0),
        "l2o+trace": ("trace", 1e-3),
        "l2o+eigenvalue": ("eigenvalue", 1e-3),
        "l2o+entropy": ("entropy", 1e-2),
    }
    opts, meta = {}, {}
    for name, (reg, alpha) in variants.items():
        net, t0 = LSTMOptimizer(seed=0), time.perf_counter()
        hist = meta_train_optimizer(
            net,
            make,
            meta_iters=6 if q else 200,
            unroll=20,
            horizon=100,
            meta_lr=3e-3,
            regularizer=reg,
            alpha=alpha,
            reg_options={"iters": 3} if reg == "eigenvalue" else ({"samples": 1} if reg == "trace" else None),
        )
        meta[name] = {
            "seconds": time.perf_counter() - t0,
            "rejected": hist["rejected"],
            "final_meta_loss": hist["meta_loss"][-1] if hist["meta_loss"] else None,
        }
        opts[name] = LearnedOptimizer(net)
    opts["adam"], opts["sgd"] = Adam(lr=0.01), SGD(lr=0.5)
    settings = {
        "mnist_width40": (mx[n : n + n], my[n : n + n], mtx, mty, (40,)),
        "mnist_depth2": (mx[n : n + n], my[n : n + n], mtx, mty, (20, 20)),
        "fashion_mnist": (fx[:n], fy[:n], ftx, fty, (20,)),
    }
    steps, seeds = (40 if q else 200), range(2 if q else 5)
    rows = []
    for setting, (Xtr, ytr, Xte, yte, hidden) in settings.items():
        for name, opt in opts.items():
            accs, losses = [], []
            for seed in seeds:
                task = MLPOptimizee(Xtr, ytr, hidden=hidden, activation="sigmoid", seed=100 + seed)
                try:
                    w, ls = train_optimizee(opt, task, steps)
                    accs.append(task.accuracy(w, Xte, yte))
                    losses.append(float(np.mean(ls[-10:])))
                except FloatingPointError:
                    accs.append(np.nan)
                    losses.append(np.nan)
            rows.append({"setting": setting, "optimizer": name, "test_accuracy": ms(accs), "train_loss": ms(losses)})
            print(
                f"{setting:14s} {name:15s} acc {rows[-1]['test_accuracy'][0]:.3f} loss {rows[-1]['train_loss'][0]:.3f}",
                flush=True,
            )
    out["optimizers"] = {"rows": rows, "meta_training": meta, "steps": steps, "seeds": len(seeds)}
    return optimizers_lines(out["optimizers"])


def optimizers_lines(r):
    """Part B's markdown from its results."""
    meta, rows = r["meta_training"], r["rows"]
    lines = [
        "",
        f"## B. Learned optimizer (meta-trained on MNIST 784-20-10 sigmoid; {r['steps']} steps, "
        f"{r['seeds']} seeds, batch 128)",
        "",
    ]
    if "command" in r:
        lines += [f"`{r['command']}`", ""]
    lines += [
        "Meta-training: " + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in meta.items()) + ".",
        "",
        "| setting | optimizer | test accuracy | training loss (last 10 steps) |",
        "|---|---|---:|---:|",
    ]
    lines += [
        f"| {x['setting']} | {x['optimizer']} | {x['test_accuracy'][0]:.3f} ± {x['test_accuracy'][1]:.3f} | "
        f"{x['train_loss'][0]:.3f} ± {x['train_loss'][1]:.3f} |"
        for x in rows
    ]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--part",
        choices=("A", "B", "all"),
        default="all",
        help="run part A (loss networks) or B (optimizers) alone; the other part's results are kept from the "
        "existing results file",
    )
    ap.add_argument("--es-evals", type=int, default=8000, help="evaluations per ES variant (part A)")
    ap.add_argument("--es-population", type=int, default=20, help="ES population size (part A)")
    ap.add_argument("--es-tasks", type=int, default=4, help="training tasks in the ES fitness (part A)")
    ap.add_argument(
        "--es-size", type=int, nargs=2, default=(10, 40), help="training examples of the ES-fitness tasks (part A)"
    )
    ap.add_argument("--es-val", type=int, default=300, help="validation examples per ES-fitness task (part A)")
    ap.add_argument(
        "--es-timeout", type=float, default=None, help="stop each ES variant after this many seconds (part A)"
    )
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    name = f"learned{'_quick' if args.quick else ''}"
    cmd = " ".join(["python benchmarks/learned.py"] + (argv if argv is not None else sys.argv[1:]))
    previous = RESULTS / f"{name}.json"
    out: dict = json.loads(previous.read_text()) if args.part != "all" and previous.exists() else {}
    old_cmd = out.get("command")
    out["machine"] = machine()
    if args.part in ("A", "all"):
        part_losses(args.quick, out, args)
        out["losses"]["command"] = cmd
    if args.part in ("B", "all"):
        part_optimizers(args.quick, out)
        out["optimizers"]["command"] = cmd
    for part in ("losses", "optimizers"):  # results kept from an earlier run name the command that made them
        if part in out and "command" not in out[part] and old_cmd:
            out[part]["command"] = old_cmd
    lines = ["# Learned losses and optimizers", ""]
    if "losses" in out:
        lines += losses_lines(out["losses"])
    if "optimizers" in out:
        lines += optimizers_lines(out["optimizers"])
    out["command"] = cmd
    j, m = write(name, out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
