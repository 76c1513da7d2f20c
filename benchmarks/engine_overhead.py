"""What the one search loop costs a meta-training step: ProtoNet meta-training through the loop (the
``hypergradient`` outer optimizer on an ``EpisodicProblem``, exactly what ``MetaLearnerClassifier``
runs) against a bare PyTorch loop of the same network, the same episodes and Adam at the same
learning rate.

Fashion-MNIST, 5-way 1-shot, 15 queries, the 4-block conv encoder (64 filters), torch single-threaded,
no tracking, no validation. Both sides start from the same weights and draw the same episodes, so
their meta-losses must agree step for step (checked); the seconds per step are compared in
alternating repetitions (bare, loop, bare, loop, ...), reported as mean ± std and as a ratio.

    python benchmarks/engine_overhead.py            # 200 steps x 4 repetitions each
    python benchmarks/engine_overhead.py --quick    # 20 steps x 2 repetitions; under a minute

Writes benchmarks/results/engine_overhead[_quick].json and .md.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine, write  # noqa: E402

from automl_bilevel import run_search  # noqa: E402
from automl_bilevel.frontends.data import load_idx_dataset  # noqa: E402
from automl_bilevel.methods.meta import EpisodeSampler, EpisodicProblem  # noqa: E402
from automl_bilevel.methods.meta.episodes import as_images  # noqa: E402
from automl_bilevel.plugin.registry import get_registry  # noqa: E402

LR, SEED = 1e-3, 0


def bare_loop(model, sampler, steps):
    """The loop meta-training replaced: sample, loss, backward, Adam step."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LR)
    model.train()
    losses = []
    for step in range(steps):
        ep = sampler.sample(rng=np.random.default_rng([SEED, 0, step]))
        ml = model.meta_loss(ep.support_x, ep.support_y, ep.query_x, ep.query_y, ep.n_way)
        opt.zero_grad(set_to_none=True)
        ml.objective.backward()
        opt.step()
        losses.append(ml.value)
    return losses


def through_the_loop(model, sampler, steps):
    problem = EpisodicProblem(model, sampler, None, seed=SEED, n_steps=steps)
    opt, _ = get_registry().make("optimizer", "hypergradient", {"outer_lr": LR, "clip": None})
    res = run_search(problem, opt, n_iter=steps, seed=SEED)
    return [t.value for t in res.trials]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    steps, repeats = (20, 2) if args.quick else (200, 4)
    torch.set_num_threads(1)
    X, y = load_idx_dataset("fashion-mnist", "train")
    keep = np.isin(y, [0, 1, 2, 3, 4, 5])  # the meta-training classes of benchmarks/fewshot.py
    X, y = X[keep][:12000], y[keep][:12000]
    sampler = EpisodeSampler(as_images(X.astype(np.float32) / 255.0), y, 5, 1, 15, seed=SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        start, _ = get_registry().make("meta_learner", "protonet", {"in_channels": 1, "image_size": 28})
    times = {"bare": [], "loop": []}
    losses = {}
    for _ in range(repeats):
        for name, fn in (("bare", bare_loop), ("loop", through_the_loop)):
            model = copy.deepcopy(start)
            t0 = time.perf_counter()
            losses[name] = fn(model, sampler, steps)
            times[name].append((time.perf_counter() - t0) / steps)
    agree = float(np.max(np.abs(np.asarray(losses["bare"]) - np.asarray(losses["loop"]))))
    b, lo = np.asarray(times["bare"]), np.asarray(times["loop"])
    ratios = lo / b
    payload = {
        "machine": machine(),
        "steps": steps,
        "repeats": repeats,
        "seconds_per_step": times,
        "ratio_loop_over_bare": ratios.tolist(),
        "max_abs_loss_difference": agree,
    }
    table = "\n".join(
        [
            "# Meta-training through the one loop vs a bare PyTorch loop",
            "",
            f"ProtoNet (4 conv blocks, 64 filters), Fashion-MNIST 5-way 1-shot, 15 queries, {steps} steps, "
            f"{repeats} alternating repetitions, 1 torch thread. `python benchmarks/engine_overhead.py"
            f"{' --quick' if args.quick else ''}`.",
            "",
            "| | ms per step (mean ± std) |",
            "|---|---:|",
            f"| bare loop | {1e3 * b.mean():.2f} ± {1e3 * b.std():.2f} |",
            "| through the loop (`hypergradient` on `EpisodicProblem`) | "
            f"{1e3 * lo.mean():.2f} ± {1e3 * lo.std():.2f} |",
            f"| ratio loop / bare | {ratios.mean():.3f} ± {ratios.std():.3f} |",
            "",
            f"Largest difference between the two sides' meta-losses over all steps: {agree:.2e} "
            "(same start, same episodes).",
            "",
        ]
    )
    j, m = write("engine_overhead_quick" if args.quick else "engine_overhead", payload, table)
    print(table)
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
