"""Hypergradient benchmark: every mode of automl_bilevel.gradient against plain training, a plain
``torch.autograd.grad`` unrolled loop and the ``higher`` library, side by side in one run.

Problems (real data):
  digits-logreg  softmax regression on scikit-learn's digits (1347 train / 450 val), one log-L2
                 weight per feature (64 hyperparameters), full-batch SGD, lr 0.1
  mnist-mlp      MLP 784-64-10 (sigmoid) on 2000 MNIST train / 1000 val images, log weight decay
                 and log learning rate (2 hyperparameters), full-batch SGD

For T in (10, 100, 1000): seconds and peak memory per hypergradient, and relative error
‖g − g64‖/‖g64‖ against reverse mode in float64. truncated uses K = T/10; implicit uses CG (50
iterations) at w_T, so both approximate the T-step hypergradient by design.

    python benchmarks/hypergradient.py            # full (several minutes)
    python benchmarks/hypergradient.py --quick    # T in (10, 50), about a minute

Writes benchmarks/results/hypergradient.json and hypergradient.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine, measure, write  # noqa: E402

from automl_bilevel.frontends.data import DatasetNotFoundError, load_idx_dataset  # noqa: E402
from automl_bilevel.gradient import SGD, InnerDynamics, hypergradient  # noqa: E402

try:
    import higher  # noqa: F401

    HAVE_HIGHER = True
except ImportError:  # the benchmark environment installs it: pip install --no-deps higher
    HAVE_HIGHER = False


class Problem:
    """One bilevel problem, written once and used by every method (same data, init, lr, steps)."""

    def __init__(self, name, module, X, y, Xv, yv, hp_log, lr, dtype=torch.float32):
        self.name, self.lr, self.dtype = name, lr, dtype
        self.module = module.to(dtype)
        self.X, self.y, self.Xv, self.yv = X.to(dtype), y, Xv.to(dtype), yv
        self.hp_log = {k: v.to(dtype) for k, v in hp_log.items()}
        named = list(self.module.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.w0 = torch.cat([p.detach().reshape(-1) for _, p in named])

    def params(self, w):
        return {n: v.view(s) for n, v, s in zip(self.names, torch.split(w, self.sizes), self.shapes, strict=True)}

    def reg(self, params, hp):
        W = params[self.names[0]]  # first-layer weight: (out, in)
        if "l2" in hp:  # one weight per input feature
            return (0.5 * hp["l2"][None, :] * W * W).sum()
        return sum((0.5 * p * p).sum() for p in params.values()) * hp["wd"]

    def inner_loss(self, w, hp, t=None):
        p = self.params(w)
        return torch.nn.functional.cross_entropy(functional_call(self.module, p, (self.X,)), self.y) + self.reg(p, hp)

    def outer_loss(self, w, hp):
        return torch.nn.functional.cross_entropy(functional_call(self.module, self.params(w), (self.Xv,)), self.yv)

    def hp_values(self):
        return {k: torch.exp(v) for k, v in self.hp_log.items()}

    def dynamics(self, T):
        lr = "lr" if "lr" in self.hp_log else self.lr
        return InnerDynamics(self.inner_loss, SGD(lr), self.w0.numel(), T)

    def to(self, dtype):
        import copy

        return Problem(
            self.name, copy.deepcopy(self.module), self.X, self.y, self.Xv, self.yv, self.hp_log, self.lr, dtype
        )


def digits_problem():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-8

    def t(a):
        return torch.as_tensor((a - mu) / sd, dtype=torch.float64)

    torch.manual_seed(0)
    module = torch.nn.Linear(64, 10)
    return Problem(
        "digits-logreg",
        module,
        t(Xtr),
        torch.as_tensor(ytr),
        t(Xva),
        torch.as_tensor(yva),
        {"l2": torch.full((64,), math.log(1e-3), dtype=torch.float64)},
        lr=0.1,
    )


def mnist_problem():
    X, y = load_idx_dataset("mnist", "train")
    X = torch.as_tensor(X[:3000].reshape(3000, -1) / 255.0, dtype=torch.float64)
    y = torch.as_tensor(y[:3000])
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(784, 64), torch.nn.Sigmoid(), torch.nn.Linear(64, 10))
    return Problem(
        "mnist-mlp",
        module,
        X[:2000],
        y[:2000],
        X[2000:],
        y[2000:],
        {
            "wd": torch.tensor(math.log(1e-4), dtype=torch.float64),
            "lr": torch.tensor(math.log(0.5), dtype=torch.float64),
        },
        lr=0.5,
    )


# -- methods: each returns {name: gradient w.r.t. log-hyperparameters} ------------------------------


def ours(prob: Problem, T: int, mode: str):
    dyn = prob.dynamics(T)
    hp_log = {k: v.clone().requires_grad_(True) for k, v in prob.hp_log.items()}
    values = {k: torch.exp(v) for k, v in hp_log.items()}
    opts = {"truncate": max(1, T // 10)} if mode == "truncated" else {}
    if mode == "implicit":
        opts = {"solver": "cg", "iters": 50}
    res = hypergradient(
        dyn, prob.outer_loss, dyn.init(prob.w0), {k: v.detach() for k, v in values.items()}, mode=mode, **opts
    )
    g = torch.autograd.grad(list(values.values()), list(hp_log.values()), list(res.grads.values()))
    return {k: gi.detach().double().numpy() for k, gi in zip(hp_log, g, strict=True)}


def plain_training(prob: Problem, T: int):
    dyn = prob.dynamics(T)
    dyn.run(dyn.init(prob.w0), prob.hp_values())
    return None


def autograd_unrolled(prob: Problem, T: int):
    hp_log = {k: v.clone().requires_grad_(True) for k, v in prob.hp_log.items()}
    hp = {k: torch.exp(v) for k, v in hp_log.items()}
    lr = hp.get("lr", prob.lr)
    w = prob.w0.clone().requires_grad_(True)
    for _ in range(T):
        (g,) = torch.autograd.grad(prob.inner_loss(w, hp), w, create_graph=True)
        w = w - lr * g
    E = prob.outer_loss(w, hp)
    g = torch.autograd.grad(E, list(hp_log.values()))
    return {k: gi.detach().double().numpy() for k, gi in zip(hp_log, g, strict=True)}


def with_higher(prob: Problem, T: int):
    import higher

    hp_log = {k: v.clone().requires_grad_(True) for k, v in prob.hp_log.items()}
    hp = {k: torch.exp(v) for k, v in hp_log.items()}
    model = __import__("copy").deepcopy(prob.module)
    with torch.no_grad():
        for p, v in zip(model.parameters(), torch.split(prob.w0, prob.sizes), strict=True):
            p.copy_(v.view(p.shape))
    opt = torch.optim.SGD(model.parameters(), lr=prob.lr)
    override = {"lr": [hp["lr"]]} if "lr" in hp else None
    with higher.innerloop_ctx(model, opt, copy_initial_weights=True, override=override) as (fmodel, diffopt):
        for _ in range(T):
            params = dict(zip(prob.names, fmodel.parameters(), strict=True))
            loss = torch.nn.functional.cross_entropy(fmodel(prob.X), prob.y) + prob.reg(params, hp)
            diffopt.step(loss)
        E = torch.nn.functional.cross_entropy(fmodel(prob.Xv), prob.yv)
        g = torch.autograd.grad(E, list(hp_log.values()))
    return {k: gi.detach().double().numpy() for k, gi in zip(hp_log, g, strict=True)}


MODES = ["reverse", "checkpoint", "truncated", "forward", "implicit"]


def rel_err(g, ref):
    a = np.concatenate([np.ravel(g[k]) for k in ref])
    b = np.concatenate([np.ravel(ref[k]) for k in ref])
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="T in (10, 50), one timed run each")
    ap.add_argument("--steps", type=int, nargs="*", help="override the list of T")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    Ts = args.steps or ([10, 50] if args.quick else [10, 100, 1000])
    problems = [digits_problem()]
    try:
        problems.append(mnist_problem())
    except DatasetNotFoundError as exc:
        print(f"skipping mnist-mlp: {exc}", file=sys.stderr)
    rows, t_start = [], time.perf_counter()
    for prob in problems:  # warm up lazy initialisation (torch.func, higher) outside the measurements
        for mode in MODES:
            ours(prob, 2, mode)
        autograd_unrolled(prob, 2)
        if HAVE_HIGHER:
            with_higher(prob, 2)
    for prob in problems:
        for T in Ts:
            ref = ours(prob.to(torch.float64), T, "reverse")
            methods = {
                "plain training": lambda prob=prob, T=T: plain_training(prob, T),
                "autograd unrolled": lambda prob=prob, T=T: autograd_unrolled(prob, T),
            }
            if HAVE_HIGHER:
                methods["higher"] = lambda prob=prob, T=T: with_higher(prob, T)
            for mode in MODES:
                methods[mode] = lambda prob=prob, T=T, mode=mode: ours(prob, T, mode)
            for name, fn in methods.items():
                m = measure(fn, repeats=1 if (T >= 1000 or args.quick) else 3)
                row = {
                    "problem": prob.name,
                    "T": T,
                    "method": name,
                    "seconds": m.get("seconds"),
                    "peak_mb": m.get("peak_mb"),
                    "error": m.get("error"),
                }
                if m.get("result") is not None:
                    row["rel_err_vs_float64"] = rel_err(m["result"], ref)
                rows.append(row)
                print(
                    f"{prob.name:14s} T={T:5d} {name:18s} {row['seconds'] or float('nan'):8.3f}s "
                    f"{row['peak_mb'] or 0:8.1f}MB err={row.get('rel_err_vs_float64', float('nan')):.1e}"
                    + (f"  ERROR {row['error']}" if row["error"] else ""),
                    flush=True,
                )
    # ratios against plain training and higher, per (problem, T)
    for r in rows:
        same = {x["method"]: x for x in rows if x["problem"] == r["problem"] and x["T"] == r["T"]}
        if r["seconds"] and same.get("plain training", {}).get("seconds"):
            r["time_vs_plain"] = r["seconds"] / same["plain training"]["seconds"]
        if r["seconds"] and same.get("higher", {}).get("seconds"):
            r["time_vs_higher"] = r["seconds"] / same["higher"]["seconds"]
            if same["higher"]["peak_mb"]:
                r["memory_vs_higher"] = (r["peak_mb"] or 0) / same["higher"]["peak_mb"]
    lines = [
        "# Hypergradient benchmark",
        "",
        f"`python benchmarks/hypergradient.py{' --quick' if args.quick else ''}` — one process per measurement, "
        "torch single-threaded; time is best of 3 (1 at T=1000 and in --quick); memory is the peak RSS increase "
        "of the first call in a fresh process. "
        "truncated: K = T/10; implicit: CG, 50 iterations, at w_T (both approximate by design). "
        "Ratios are ours / theirs.",
        "",
        "| problem | T | method | seconds | × plain | × higher | peak MB | mem × higher | rel. error vs float64 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]

    def f(v, fmt):
        return fmt.format(v) if isinstance(v, (int, float)) and v is not None else "—"

    for r in rows:
        lines.append(
            f"| {r['problem']} | {r['T']} | {r['method']} | {f(r['seconds'], '{:.3f}')} | "
            f"{f(r.get('time_vs_plain'), '{:.2f}')} | {f(r.get('time_vs_higher'), '{:.2f}')} | "
            f"{f(r['peak_mb'], '{:.1f}')} | {f(r.get('memory_vs_higher'), '{:.2f}')} | "
            f"{f(r.get('rel_err_vs_float64'), '{:.1e}')} |" + (f" {r['error']}" if r["error"] else "")
        )
    lines.append("")
    lines.append(f"Machine: {machine()}. Total benchmark time {time.perf_counter() - t_start:.0f} s.")
    j, m = write(
        "hypergradient" + ("_quick" if args.quick else ""),
        {"machine": machine(), "quick": args.quick, "steps": Ts, "rows": rows},
        "\n".join(lines) + "\n",
    )
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
