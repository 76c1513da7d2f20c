"""Per-trial overhead of the ``smac`` plugin against SMAC3 used directly, at an equal number of trials.

The same seeded problem (an MLP on digits, ~0.1-0.3 s per trial) is optimised for ``--trials``
trials by SMAC3's HPO facade twice: through our ask/tell plugin and the host's search loop, and by
SMAC3's own ``optimize()`` loop. Both see the same configurations (checked); the difference in wall
time per trial is what the host adds.

    python benchmarks/smac_overhead.py           # 60 trials, 3 seeds
    python benchmarks/smac_overhead.py --quick   # 20 trials, 1 seed

Writes benchmarks/results/smac_overhead[_quick].json and .md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine, write  # noqa: E402
from blackbox import digits_mlp  # noqa: E402

from automl_bilevel import BilevelProblem, run_search  # noqa: E402
from automl_bilevel_plugins.optimizers.smac_optimizer import SMACOptimizer  # noqa: E402


def ours(problem, n, seed):
    t0 = time.perf_counter()
    res = run_search(problem, SMACOptimizer(n_trials=n), n_iter=n, seed=seed)
    return time.perf_counter() - t0, [t.value for t in res.trials], sum(t.duration for t in res.trials)


def direct(problem, n, seed):
    from smac import HyperparameterOptimizationFacade as HPO
    from smac import Scenario

    values, durations = [], []

    def target(config, seed: int = 0):
        t = time.perf_counter()
        v = problem.evaluate(dict(config)).value
        durations.append(time.perf_counter() - t)
        values.append(v)
        return v

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        sc = Scenario(
            problem.space, output_directory=Path(d) / "smac", deterministic=True, n_trials=n, seed=seed % (2**31 - 1)
        )
        HPO(
            sc, target, overwrite=True, logging_level=40, intensifier=HPO.get_intensifier(sc, max_config_calls=1)
        ).optimize()
    return time.perf_counter() - t0, values, sum(durations)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    n = args.trials or (20 if args.quick else 60)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    rows = []
    for seed in seeds:
        learner, objective, space, task, split, _ = digits_mlp(seed, quick=True)
        for name, fn in (("smac3_direct", direct), ("ours", ours)):
            wall, values, evals = fn(BilevelProblem(learner, objective, space, task, [split], seed), n, seed)
            rows.append({"seed": seed, "method": name, "wall": wall, "eval_time": evals, "values": values})
            print(
                f"seed {seed} {name:12s} wall {wall:.2f} s, evaluation {evals:.2f} s, {len(values)} trials", flush=True
            )
    same = all(a["values"] == b["values"] for a, b in zip(rows[0::2], rows[1::2], strict=True))
    per_trial = {m: float(np.mean([r["wall"] / n for r in rows if r["method"] == m])) for m in ("ours", "smac3_direct")}
    outside = {
        m: float(np.mean([(r["wall"] - r["eval_time"]) / n for r in rows if r["method"] == m]))
        for m in ("ours", "smac3_direct")
    }
    ratio = per_trial["ours"] / per_trial["smac3_direct"]
    cmd = " ".join(["python benchmarks/smac_overhead.py"] + (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# SMAC plugin overhead vs SMAC3 direct",
        "",
        f"`{cmd}`: {n} trials of an MLP on digits, {len(seeds)} seed(s), HPO facade, torch single-threaded. "
        f"Same configurations in both: **{same}**.",
        "",
        "| | ours (plugin + host loop) | SMAC3 direct | ours / direct |",
        "|---|---:|---:|---:|",
        f"| wall per trial (ms) | {1000 * per_trial['ours']:.1f} | {1000 * per_trial['smac3_direct']:.1f} | "
        f"{ratio:.3f} |",
        f"| outside evaluation per trial (ms) | {1000 * outside['ours']:.1f} | "
        f"{1000 * outside['smac3_direct']:.1f} | {outside['ours'] / outside['smac3_direct']:.3f} |",
        "",
    ]
    payload = {
        "machine": machine(),
        "command": cmd,
        "trials": n,
        "seeds": seeds,
        "rows": rows,
        "same_configurations": same,
        "wall_per_trial": per_trial,
        "outside_evaluation_per_trial": outside,
        "ratio": ratio,
    }
    j, m = write(f"smac_overhead{'_quick' if args.quick else ''}", payload, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
