"""Few-shot classification on unseen classes: ProtoNet, ProtoNet + L2G, RelationNet, RelationNet +
L2G and hyper-representation at equal meta-training wall-clock on CPU.

Within-domain: Fashion-MNIST base classes split 6 / 2 / 2 (meta-train / meta-validation /
meta-test), each split then rotated ×4 (0/90/180/270° as new classes): 24 / 8 / 8 classes.
Cross-domain: the same meta-trained models tested on MNIST (its 10 test-set classes, unrotated).
5-way 1-shot and 5-way 5-shot, 15 queries per class, accuracy with a 95% confidence interval over
the test episodes. Every model is the 4-block conv encoder of the papers (64 filters).

    python benchmarks/fewshot.py            # 45 s of meta-training per model, 600 test episodes
    python benchmarks/fewshot.py --quick    # 2 s per model, 40 episodes, 1-shot only; under a minute

Writes benchmarks/results/fewshot[_quick].json and .md. Torch single-threaded.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine, write  # noqa: E402

from automl_bilevel.data import load_idx_dataset  # noqa: E402
from automl_bilevel.meta import EpisodeSampler, MetaLearnerClassifier, class_split, rotate_classes  # noqa: E402
from automl_bilevel.meta.episodes import as_images  # noqa: E402
from automl_bilevel.meta.training import evaluate_episodes  # noqa: E402

METHODS = {
    "protonet": ("protonet", False),
    "protonet+l2g": ("protonet", True),
    "relationnet": ("relationnet", False),
    "relationnet+l2g": ("relationnet", True),
    "hyperrep": ("hyperrep", False),
}


def split_fashion(per_class: int, seed: int):
    X, y = load_idx_dataset("fashion-mnist", "train")
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(10)])
    X, y = X[keep], y[keep]
    train_c, val_c, test_c = class_split(y, (6, 2, 2), seed=seed)
    parts = {}
    for name, classes in (("train", np.concatenate([train_c, val_c])), ("test", test_c)):
        m = np.isin(y, classes)
        parts[name] = (X[m], y[m])
    return parts, (train_c, val_c, test_c)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--episodes", type=int, default=None)
    ap.add_argument("--shots", type=int, nargs="*", default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    seconds = args.seconds or (2.0 if args.quick else 45.0)
    episodes = args.episodes or (40 if args.quick else 600)
    shots = args.shots or ([1] if args.quick else [1, 5])
    per_class = 300 if args.quick else 2000
    parts, (train_c, val_c, test_c) = split_fashion(per_class, seed=0)
    Xte, yte = rotate_classes(as_images(parts["test"][0]), parts["test"][1])
    Xm, ym = load_idx_dataset("mnist", "test")
    Xm, ym = Xm[: 3000 if args.quick else 10000], ym[: 3000 if args.quick else 10000]
    rows = []
    for k in shots:
        for label, (method, l2g) in METHODS.items():
            est = MetaLearnerClassifier(
                method,
                l2g=l2g,
                n_way=5,
                k_shot=k,
                q_queries=15 if not args.quick else 5,
                meta_iters=10**6,
                timeout=seconds,
                val_fraction=0.25,
                rotations=True,
                val_every=10**6 if args.quick else 100,
                val_episodes=30,
                tracking=False,
                random_state=0,
                method_params={"inner_steps": 10} if method == "hyperrep" else None,
            )
            t0 = time.perf_counter()
            est.fit(*parts["train"])  # meta-train (6 classes) + meta-val (2 classes), rotated after the split
            train_s = time.perf_counter() - t0
            res = {}
            for domain, (X, y) in (("fashion_mnist", (Xte, yte)), ("mnist", (as_images(Xm), ym))):
                sampler = EpisodeSampler(X, y, 5, k, 15, seed=1234)
                res[domain] = evaluate_episodes(est.model_, sampler, episodes)
            row = {
                "method": label,
                "k_shot": k,
                "meta_iters": est.n_iter_,
                "train_seconds": train_s,
                "best_val_iteration": est.best_iteration_,
                **{f"{d}_acc": a for d, (a, _) in res.items()},
                **{f"{d}_ci95": c for d, (_, c) in res.items()},
            }
            rows.append(row)
            print(
                f"5-way {k}-shot {label:16s} iters {est.n_iter_:5d}  FMNIST {res['fashion_mnist'][0]:.4f} ± "
                f"{res['fashion_mnist'][1]:.4f}  MNIST {res['mnist'][0]:.4f} ± {res['mnist'][1]:.4f}",
                flush=True,
            )
    cmd = " ".join(["python benchmarks/fewshot.py"] + (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# Few-shot classification on unseen classes",
        "",
        f"`{cmd}`: {seconds:g} s of meta-training per model (CPU, one thread), {episodes} test episodes, "
        "5-way, 15 queries per class; accuracy ± 95% CI half-width. Fashion-MNIST base classes split "
        f"6 / 2 / 2 (test classes {test_c.tolist()}), each split rotated ×4 after the split; cross-domain: "
        "the same models tested on MNIST.",
        "",
        "| shots | method | meta-iterations | Fashion-MNIST (unseen classes) | MNIST (cross-domain) |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['k_shot']} | {r['method']} | {r['meta_iters']} | {r['fashion_mnist_acc']:.4f} ± "
            f"{r['fashion_mnist_ci95']:.4f} | {r['mnist_acc']:.4f} ± {r['mnist_ci95']:.4f} |"
        )
    lines += [
        "",
        "Does L2G help (L2G − plain; significant when beyond both CIs combined)?",
        "",
        "| shots | base | Δ Fashion-MNIST | Δ MNIST |",
        "|---:|---|---:|---:|",
    ]
    verdict = {}
    for k in shots:
        for base in ("protonet", "relationnet"):
            a = next(r for r in rows if r["k_shot"] == k and r["method"] == base)
            b = next(r for r in rows if r["k_shot"] == k and r["method"] == f"{base}+l2g")
            cells = []
            for d in ("fashion_mnist", "mnist"):
                delta = b[f"{d}_acc"] - a[f"{d}_acc"]
                ci = float(np.hypot(a[f"{d}_ci95"], b[f"{d}_ci95"]))
                verdict[f"{k}shot/{base}/{d}"] = {"delta": delta, "ci95": ci, "significant": abs(delta) > ci}
                cells.append(f"{delta:+.4f} (± {ci:.4f})")
            lines.append(f"| {k} | {base} | {cells[0]} | {cells[1]} |")
    lines.append("")
    payload = {
        "machine": machine(),
        "command": cmd,
        "seconds": seconds,
        "episodes": episodes,
        "classes": {"meta_train_and_val": sorted(train_c.tolist() + val_c.tolist()), "test": test_c.tolist()},
        "rows": rows,
        "l2g_effect": verdict,
    }
    j, m = write(f"fewshot{'_quick' if args.quick else ''}", payload, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
