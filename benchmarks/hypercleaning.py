"""Data hyper-cleaning benchmark (Franceschi et al. 2017) on MNIST against its simple baselines.

Protocol of ``automl_bilevel.methods.recipes.hypercleaning.mnist_experiment``: 5,000 train (half the labels
flipped) / 5,000 validation / 10,000 test from the first 20,000 MNIST training images; softmax
regression with the same inner optimizer and steps for every method. Test accuracy mean ± std over
seeds, and precision / recall / F1 of the examples flagged as noisy (weight < 0.5).

    python benchmarks/hypercleaning.py             # 3 seeds, full size (about 10 minutes)
    python benchmarks/hypercleaning.py --quick     # 1,000 / 1,000 / 2,000, 15 outer steps, 2 seeds

Writes benchmarks/results/hypercleaning[_quick].json and .md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine, write  # noqa: E402

from automl_bilevel.methods.recipes.hypercleaning import mnist_experiment  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--outer-steps", type=int, default=None)
    args = ap.parse_args(argv)
    kw = dict(n_train=1000, n_val=1000, n_test=2000, outer_steps=15) if args.quick else {}
    if args.outer_steps:
        kw["outer_steps"] = args.outer_steps
    seeds = list(range(args.seeds or (2 if args.quick else 3)))
    runs = []
    for seed in seeds:
        accs, flags, res = mnist_experiment(seed=seed, verbose=False, **kw)
        runs.append({"seed": seed, "test_accuracy": accs, "flags": flags, "seconds": res.seconds})
        print(
            f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in accs.items()) + f"; F1 {flags['f1']:.3f}",
            flush=True,
        )
    methods = list(runs[0]["test_accuracy"])
    summary = {
        m: (float(np.mean([r["test_accuracy"][m] for r in runs])), float(np.std([r["test_accuracy"][m] for r in runs])))
        for m in methods
    }
    flag_summary = {
        k: (float(np.mean([r["flags"][k] for r in runs])), float(np.std([r["flags"][k] for r in runs])))
        for k in ("precision", "recall", "f1")
    }
    steps = kw.get("outer_steps", 100)
    size = ("1,000 / 1,000 / 2,000" if args.quick else "5,000 / 5,000 / 10,000") + f", {steps} outer steps"
    cmd = " ".join(["python benchmarks/hypercleaning.py"] + (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# Data hyper-cleaning on MNIST",
        "",
        f"`{cmd}` — train / val / test {size}; "
        f"half the training labels flipped; softmax regression, full-batch SGD with momentum 0.9, lr 0.1, "
        f"100 inner steps for every method; {len(seeds)} seeds (mean ± std).",
        "",
        "| method | test accuracy |",
        "|---|---:|",
    ]
    lines += [f"| {m} | {mu:.4f} ± {sd:.4f} |" for m, (mu, sd) in summary.items()]
    lines += ["", "| flagged as noisy (weight < 0.5) | mean ± std |", "|---|---:|"]
    lines += [f"| {k} | {mu:.3f} ± {sd:.3f} |" for k, (mu, sd) in flag_summary.items()]
    best_base = max(("validation only", "noisy train + val", "no cleaning"), key=lambda m: summary[m][0])
    gap = summary["hyper-cleaning"][0] - summary[best_base][0]
    spread = summary["hyper-cleaning"][1] + summary[best_base][1]
    verdict = "beats" if gap > spread else "does not clearly beat" if gap > 0 else "does not beat"
    lines += [
        "",
        f"Hyper-cleaning {verdict} the strongest simple baseline ({best_base}): "
        f"{gap:+.4f} accuracy (spread {spread:.4f}).",
    ]
    j, m = write(
        "hypercleaning" + ("_quick" if args.quick else ""),
        {
            "machine": machine(),
            "quick": args.quick,
            "outer_steps": steps,
            "runs": runs,
            "summary": summary,
            "flags": flag_summary,
        },
        "\n".join(lines) + "\n",
    )
    print("\n".join(lines))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
