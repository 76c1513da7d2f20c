"""Implicit differentiation, measured against the exact implicit hypergradient at a converged optimum.

The inner problem is strongly convex: softmax regression on digits (float64, standardized features)
with one L2 weight per input feature (64 hyperparameters, the outer variables) plus a small weight
decay on every weight. It is solved to a tiny gradient norm (L-BFGS, then checked), so the implicit
function theorem holds at w*. The exact hypergradient of the validation cross-entropy is

    dE/dλ = ∂E/∂λ − (∂²L/∂λ∂w)ᵀ H⁻¹ ∂E/∂w,     H = ∂²L/∂w² (dense, 650 × 650, ``torch.linalg.solve``)

and every approximation is compared with it at the same w*: this package's ``implicit`` mode with
conjugate gradient, a Neumann series and fixed-point iteration of the gradient-descent step, each
at several iteration counts, and torchopt's implicit differentiation (``custom_root`` with its
conjugate-gradient solve) in the same run. Times are for the hypergradient alone (w* given to all),
best of ``--repeats``, torch single-threaded. float32 rows show what the learners' precision costs.

    python benchmarks/implicit.py           # 1000 training examples
    python benchmarks/implicit.py --quick   # 300 training examples, fewer settings (under a minute)

torchopt is optional (``pip install --no-deps torchopt optree graphviz``; --no-deps keeps the pinned
torch); without it its rows are absent. Writes benchmarks/results/implicit[_quick].json and .md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import grad, hessian, jacrev

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import best_of, machine, write  # noqa: E402

from automl_bilevel.gradient import SGD, InnerDynamics  # noqa: E402
from automl_bilevel.gradient.modes import implicit  # noqa: E402

try:
    import torchopt  # noqa: F401

    HAVE_TORCHOPT = True
except ImportError:  # optional: see the module docstring
    HAVE_TORCHOPT = False

WEIGHT_DECAY = 1e-2


class Problem:
    def __init__(self, n_train: int, dtype=torch.float64, seed: int = 0):
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(y))
        tr, va = order[:n_train], order[n_train : n_train + 500]
        mean, std = X[tr].mean(0), X[tr].std(0)
        std = np.where(std > 1e-12, std, 1.0)
        self.dtype = dtype
        self.Xt = torch.as_tensor((X[tr] - mean) / std, dtype=dtype)
        self.yt = torch.as_tensor(y[tr])
        self.Xv = torch.as_tensor((X[va] - mean) / std, dtype=dtype)
        self.yv = torch.as_tensor(y[va])
        self.d, self.k = X.shape[1], 10
        self.n = (self.d + 1) * self.k
        self.hp = {
            "l2_per_feature": torch.full((self.d,), 1e-2, dtype=dtype)
            * torch.as_tensor(rng.uniform(0.5, 2.0, self.d), dtype=dtype)
        }

    def logits(self, w, X):
        W, b = w[: self.d * self.k].view(self.k, self.d), w[self.d * self.k :]
        return X @ W.T + b

    def inner_loss(self, w, hp, t=None):
        W = w[: self.d * self.k].view(self.k, self.d)
        reg = 0.5 * (hp["l2_per_feature"][None, :] * W * W).sum() + 0.5 * WEIGHT_DECAY * (w * w).sum()
        return F.cross_entropy(self.logits(w, self.Xt), self.yt) + reg

    def outer_loss(self, w, hp):
        return F.cross_entropy(self.logits(w, self.Xv), self.yv)

    def solve(self) -> tuple[torch.Tensor, float]:
        """w* by L-BFGS to a tiny gradient norm (returned too)."""
        w = torch.zeros(self.n, dtype=self.dtype, requires_grad=True)
        opt = torch.optim.LBFGS(
            [w],
            lr=1,
            max_iter=2000,
            tolerance_grad=1e-14,
            tolerance_change=0,
            history_size=50,
            line_search_fn="strong_wolfe",
        )
        hp = self.hp

        def closure():
            opt.zero_grad()
            loss = self.inner_loss(w, hp)
            loss.backward()
            return loss

        for _ in range(5):
            opt.step(closure)
        w = w.detach()
        gnorm = float(torch.linalg.vector_norm(grad(lambda v: self.inner_loss(v, hp))(w)))
        return w, gnorm

    def exact(self, w) -> torch.Tensor:
        hp = self.hp
        H = hessian(lambda v: self.inner_loss(v, hp))(w)
        mixed = jacrev(lambda h: grad(lambda v: self.inner_loss(v, h))(w))(hp)["l2_per_feature"]  # (n, d)
        gw = grad(lambda v: self.outer_loss(v, hp))(w)
        return -(mixed.T @ torch.linalg.solve(H, gw))

    def lipschitz(self, w) -> float:
        H = hessian(lambda v: self.inner_loss(v, self.hp))(w)
        return float(torch.linalg.eigvalsh(H).max())


def ours(prob: Problem, w, solver, iters, alpha):
    dyn = InnerDynamics(prob.inner_loss, SGD(lr=alpha), prob.n, 1)
    res = implicit(
        dyn,
        prob.outer_loss,
        dyn.init(w),
        prob.hp,
        solver=solver,
        iters=iters,
        tol=1e-12,
        alpha=alpha,
        warm_z=dyn.init(w),
    )
    return res.grads["l2_per_feature"]


def with_torchopt(prob: Problem, w, iters):
    from torchopt.diff.implicit import custom_root
    from torchopt.linear_solve import solve_cg

    def optimality(params, l2):
        return grad(lambda v: prob.inner_loss(v, {"l2_per_feature": l2}))(params)

    @custom_root(optimality, argnums=1, solve=solve_cg(maxiter=iters, rtol=1e-12))
    def solver(params, l2):
        return w  # w* is given to every method: only the hypergradient is timed

    l2 = prob.hp["l2_per_feature"].clone().requires_grad_(True)
    w_opt = solver(torch.zeros_like(w), l2)
    (g,) = torch.autograd.grad(prob.outer_loss(w_opt, None), l2)
    return g


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    n_train = 300 if args.quick else 1000
    repeats = args.repeats or (2 if args.quick else 5)
    iters_list = (20, 100) if args.quick else (10, 20, 50, 100, 200)
    rows, info = [], {}
    prob64 = Problem(n_train)
    w64, gnorm = prob64.solve()
    exact = prob64.exact(w64)
    L = prob64.lipschitz(w64)
    alpha = 1.0 / L  # Neumann / fixed-point step: below 2/L
    for dtype in (torch.float64, torch.float32):
        prob = prob64 if dtype == torch.float64 else Problem(n_train, dtype=torch.float32)
        w = w64.to(dtype)
        name = str(dtype).replace("torch.", "")
        info[name] = {
            "grad_norm_at_w_star": gnorm,
            "lipschitz": L,
            "alpha": alpha,
            "n_weights": prob.n,
            "n_hyperparameters": prob.d,
            "exact_norm": float(exact.norm()),
        }
        methods = []
        for it in iters_list:
            methods.append(("ours: cg", it, lambda it=it, prob=prob, w=w: ours(prob, w, "cg", it, alpha)))
            if HAVE_TORCHOPT:
                methods.append(
                    ("torchopt: custom_root + cg", it, lambda it=it, prob=prob, w=w: with_torchopt(prob, w, it))
                )
        if dtype == torch.float64:
            for it in iters_list:
                methods.append(("ours: neumann", it, lambda it=it, prob=prob, w=w: ours(prob, w, "neumann", it, alpha)))
                methods.append(
                    ("ours: fixed_point", it, lambda it=it, prob=prob, w=w: ours(prob, w, "fixed_point", it, alpha))
                )
        for method, it, fn in methods:
            fn()  # warm-up
            seconds, g = best_of(fn, repeats)
            err = float((g.double() - exact).norm() / exact.norm())
            rows.append({"dtype": name, "method": method, "iters": it, "seconds": seconds, "rel_error": err})
            print(f"{name} {method:28s} iters {it:4d}: rel error {err:.2e}, {seconds * 1e3:.1f} ms", flush=True)
    out_name = "implicit_quick" if args.quick else "implicit"
    lines = [
        "# Implicit hypergradients vs the exact implicit hypergradient at a converged optimum",
        "",
        f"`python benchmarks/implicit.py{' --quick' if args.quick else ''}`: softmax regression on digits, "
        f"{n_train} training and 500 validation examples, {info['float64']['n_weights']} weights, "
        f"{info['float64']['n_hyperparameters']} per-feature L2 weights (+ weight decay {WEIGHT_DECAY}); "
        f"w* by L-BFGS in float64 (gradient norm {info['float64']['grad_norm_at_w_star']:.1e}); the exact "
        "hypergradient by a dense Hessian solve. Neumann and fixed-point use the step 1/L "
        f"(L = {info['float64']['lipschitz']:.2f}, the Hessian's largest eigenvalue). Times: the "
        f"hypergradient alone, w* given, best of {repeats}, one thread."
        + ("" if HAVE_TORCHOPT else " torchopt is not installed: its rows are missing."),
        "",
        "| dtype | method | iterations | relative error | ms |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['dtype']} | {r['method']} | {r['iters']} | {r['rel_error']:.2e} | {r['seconds'] * 1e3:.1f} |"
        for r in rows
    ]
    # the goal: CG relative error <= 3e-4 at a time <= torchopt's (float64, same iteration cap)
    summary = []
    for it in iters_list:
        cg = next(r for r in rows if r["dtype"] == "float64" and r["method"] == "ours: cg" and r["iters"] == it)
        to = next(
            (r for r in rows if r["dtype"] == "float64" and r["method"].startswith("torchopt") and r["iters"] == it),
            None,
        )
        summary.append(
            {
                "iters": it,
                "cg_rel_error": cg["rel_error"],
                "time_vs_torchopt": cg["seconds"] / to["seconds"] if to else None,
            }
        )
    lines += ["", "Goal: CG relative error at most 3e-4 at a time at most torchopt's (float64):", ""]
    lines += [
        f"- {s['iters']} iterations: error {s['cg_rel_error']:.1e}"
        + (f", time {s['time_vs_torchopt']:.2f}x torchopt's" if s["time_vs_torchopt"] else "")
        for s in summary
    ]
    payload = {
        "machine": machine(),
        "n_train": n_train,
        "repeats": repeats,
        "info": info,
        "rows": rows,
        "summary": summary,
        "torchopt": HAVE_TORCHOPT,
    }
    j, m = write(out_name, payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
