"""Few-shot classification on unseen classes at real meta-training budgets: ProtoNet, ProtoNet + L2G,
RelationNet and RelationNet + L2G, each meta-trained for the same number of episodes, and compared
again at equal meta-training wall-clock (the time the plain ProtoNet needed for its episodes).

Within-domain: Fashion-MNIST base classes split 6 / 2 / 2 (meta-train / meta-validation /
meta-test), each split then rotated ×4 (0/90/180/270° as new classes): 24 / 8 / 8 classes.
Cross-domain: the same meta-trained models tested on MNIST (its 10 test-set classes, unrotated).
5-way 1-shot, 15 queries per class, accuracy with a 95% confidence interval over the test episodes.
Every model is the 4-block conv encoder of the papers (64 filters).

Equal episodes: every method meta-trains for ``--train-episodes`` episodes (one episode per step; an
L2G step also samples a second, disjoint-class episode), meta-validated every ``--val-every`` steps on
``--val-episodes`` fixed episodes; the best meta-validation state is kept (the estimator's rule).

Equal wall-clock: during that same run the benchmark keeps a snapshot of the outer variables at every
meta-validation and every ``--snapshot-every`` steps, with the wall-clock since the first step. T is
the plain ProtoNet's wall-clock for all its episodes; each other method is evaluated with the state a
fit with ``timeout=T`` would have returned: the best meta-validated point among the checks finished
by T, or, when none had finished, the last snapshot before T. (One run per method, so the
equal-wall-clock model is a prefix of the equal-episodes run, as a timeout fit with the same seed
would be; the methods run in parallel processes, so they share the machine's load.)

    python benchmarks/fewshot.py            # 3,000 episodes per method, 600 test episodes, 2 processes
    python benchmarks/fewshot.py --quick    # 10 episodes per method, 40 test episodes; under a minute
    python benchmarks/fewshot.py --protonet-only 8000   # the plain ProtoNet alone, longer: its plateau

Writes benchmarks/results/fewshot[_quick].json and .md. Torch single-threaded in every process.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import sys
import time
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine, write  # noqa: E402

from automl_bilevel import MetaLearnerClassifier  # noqa: E402
from automl_bilevel.frontends import meta_estimator as estimator_module  # noqa: E402
from automl_bilevel.frontends.data import load_idx_dataset  # noqa: E402
from automl_bilevel.methods.meta import EpisodeSampler, class_split, rotate_classes  # noqa: E402
from automl_bilevel.methods.meta.episodes import as_images  # noqa: E402
from automl_bilevel.methods.meta.problem import EpisodicProblem  # noqa: E402
from automl_bilevel.methods.meta.training import evaluate_episodes  # noqa: E402

METHODS = {  # slowest first: the process pool hands them out in this order
    "relationnet+l2g": ("relationnet", True),
    "protonet+l2g": ("protonet", True),
    "relationnet": ("relationnet", False),
    "protonet": ("protonet", False),
}
DOMAINS = ("fashion_mnist", "mnist")


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


class _Recording(EpisodicProblem):
    """The estimator's episodic problem, keeping snapshots of the point evaluated at each
    meta-validation step and every ``every`` steps, with the wall-clock since the first step."""

    every = 50
    label = ""
    verbose = False
    snapshots: list[dict[str, Any]] = []

    def value_and_grad(self, outer, *, step):
        if step == 0 or not hasattr(self, "_t0"):
            self._t0 = time.perf_counter()
        res = super().value_and_grad(outer, step=step)
        val = res.metrics.get("meta_val_accuracy")
        if val is not None and self.verbose:
            print(
                f"  [{self.label}] step {step + 1}: meta-val {val:.4f} at {time.perf_counter() - self._t0:.0f} s",
                flush=True,
            )
        if val is not None or step % self.every == 0 or step == (self.n_steps or 0) - 1:
            type(self).snapshots.append(
                {
                    "step": step,
                    "seconds": time.perf_counter() - self._t0,
                    "meta_val_accuracy": val,
                    "state": {k: v.detach().cpu().numpy().copy() for k, v in outer.items()},
                }
            )
        return res


_DATA: dict[str, Any] = {}  # filled in the parent before the pool forks


def _test(model, k: int, n_episodes: int, q: int) -> dict[str, tuple[float, float]]:
    out = {}
    for domain in DOMAINS:
        X, y = _DATA[domain]
        out[domain] = evaluate_episodes(model, EpisodeSampler(X, y, 5, k, q, seed=1234), n_episodes)
    return out


def _train(job: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """Meta-train one method for the given episodes; test its kept model; return its snapshots."""
    label, cfg = job
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    method, l2g = METHODS[label]
    est = MetaLearnerClassifier(
        method,
        l2g=l2g,
        n_way=5,
        k_shot=cfg["k"],
        q_queries=cfg["q"],
        meta_iters=cfg["train_episodes"],
        val_fraction=0.25,
        rotations=True,
        val_every=cfg["val_every"],
        val_episodes=cfg["val_episodes"],
        tracking=False,
        random_state=0,
    )
    _Recording.every, _Recording.snapshots = cfg["snapshot_every"], []
    _Recording.label, _Recording.verbose = label, not cfg["quick"]
    t0 = time.perf_counter()
    with mock.patch.object(estimator_module, "EpisodicProblem", _Recording):
        est.fit(*_DATA["train"])  # meta-train (6 classes) + meta-val (2 classes), rotated after the split
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    res = _test(est.model_, cfg["k"], cfg["test_episodes"], cfg["q"])
    test_s = time.perf_counter() - t1
    snaps = _Recording.snapshots
    print(
        f"{label:16s} {est.n_iter_} episodes in {snaps[-1]['seconds']:.0f} s (fit {fit_s:.0f} s, test {test_s:.0f} s)"
        f"  FMNIST {res['fashion_mnist'][0]:.4f} ± {res['fashion_mnist'][1]:.4f}"
        f"  MNIST {res['mnist'][0]:.4f} ± {res['mnist'][1]:.4f}",
        flush=True,
    )
    return {
        "method": label,
        "meta_iters": est.n_iter_,
        "train_seconds": snaps[-1]["seconds"],
        "fit_seconds": fit_s,
        "best_val_iteration": est.best_iteration_,
        "best_val_accuracy": est.best_val_accuracy_,
        "result": res,
        "curve": [(s["step"] + 1, s["meta_val_accuracy"], s["seconds"]) for s in snaps if s["meta_val_accuracy"]],
        "snapshots": snaps,
    }


def _state_at(snaps: list[dict[str, Any]], seconds: float) -> dict[str, Any] | None:
    """What a fit with ``timeout=seconds`` would return: the best meta-validated point among the checks
    finished by then (the first of equals, as the optimizer keeps it), else the last snapshot before."""
    done = [s for s in snaps if s["seconds"] <= seconds]
    if not done:
        return None
    checked = [s for s in done if s["meta_val_accuracy"] is not None]
    if checked:
        return max(checked, key=lambda s: (s["meta_val_accuracy"], -s["step"]))
    return done[-1]


def _test_state(job: tuple[str, dict[str, np.ndarray], dict[str, Any]]) -> dict[str, tuple[float, float]]:
    import torch

    from automl_bilevel.plugin.registry import get_registry

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    label, state, cfg = job
    method, _ = METHODS[label]
    with torch.random.fork_rng(devices=[]):
        model, _ = get_registry().make("meta_learner", method, {"in_channels": 1, "image_size": 28})
    problem = EpisodicProblem(model, None)  # type: ignore[arg-type]
    problem.load({k: torch.as_tensor(v) for k, v in state.items()}).eval()
    return _test(model, cfg["k"], cfg["test_episodes"], cfg["q"])


def _plateau(curve: list[tuple[int, float, float]], cfg: dict[str, Any]) -> tuple[float, list[float], bool, bool]:
    """(95% half-width of one check, the last three checks, stopped rising?, last check the highest?)"""
    half = 1.96 * np.sqrt(np.mean([c[1] * (1 - c[1]) for c in curve[-3:]]) / (cfg["val_episodes"] * 5 * cfg["q"]))
    last3 = [c[1] for c in curve[-3:]]
    plateau = len(curve) >= 3 and max(last3) - min(last3) <= 2 * half and last3[-1] <= last3[0] + 2 * half
    rising = len(curve) >= 2 and curve[-1][1] >= max(c[1] for c in curve[:-1])
    return float(half), last3, bool(plateau), bool(rising)


def _long_protonet(cfg: dict[str, Any], episodes: int) -> None:
    """The plain ProtoNet alone for ``episodes`` episodes: where does its meta-validation accuracy stop
    rising? (The four-method comparison stops at ``--train-episodes``.)"""
    t0 = time.perf_counter()
    r = _train(("protonet", {**cfg, "train_episodes": episodes}))
    curve = r["curve"]
    half, last3, plateau, rising = _plateau(curve, cfg)
    best = max(curve, key=lambda c: c[1])
    lines = [
        "# Plain ProtoNet, meta-trained longer: where its meta-validation accuracy stops rising",
        "",
        f"`python benchmarks/fewshot.py{' --quick' if cfg['quick'] else ''} --protonet-only {episodes}`: "
        "the plain ProtoNet of fewshot.md (same data, "
        f"split, seed and settings: 5-way {cfg['k']}-shot, {cfg['q']} queries, Adam 1e-3, one torch thread), "
        f"meta-trained for {episodes} episodes, meta-validated every {cfg['val_every']} on {cfg['val_episodes']} "
        f"fixed episodes; the kept state tested on {cfg['test_episodes']} episodes. Whole run "
        f"{(time.perf_counter() - t0) / 60:.1f} min.",
        "",
        f"Kept step {r['best_val_iteration']} (meta-val {r['best_val_accuracy']:.4f}); Fashion-MNIST (unseen "
        f"classes) {_cell(*r['result']['fashion_mnist'])}, MNIST (cross-domain) {_cell(*r['result']['mnist'])}.",
        "",
        f"Best check: {best[1]:.4f} at {best[0]} episodes. Last three checks: "
        + ", ".join(f"{a:.4f}" for a in last3)
        + f"; one check's binomial 95% half-width ±{half:.4f}. "
        + (
            "They lie within 2× that of each other: stopped rising."
            if plateau
            else "They are not all within 2× that of each other: not clearly flat"
            + (" (the last check is the highest so far)." if rising else ".")
        ),
        "",
        "| episodes | meta-val accuracy | wall-clock s |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {n} | {a:.4f} | {s:.0f} |" for n, a, s in curve]
    payload = {
        "machine": machine(),
        "config": {**cfg, "train_episodes": episodes},
        "curve": [{"episodes": n, "accuracy": a, "seconds": s} for n, a, s in curve],
        "kept_step": r["best_val_iteration"],
        "kept_val_accuracy": r["best_val_accuracy"],
        "result": r["result"],
        "plateau": {"stopped_rising": plateau, "check_ci95": half, "last_three": last3, "last_is_highest": rising},
        "load_average_end": os.getloadavg()[0],
    }
    j, m = write("fewshot_protonet_long" + ("_quick" if cfg["quick"] else ""), payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {j} and {m}")


def _cell(acc: float, ci: float) -> str:
    return f"{acc:.4f} ± {ci:.4f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--train-episodes", type=int, default=None, help="meta-training episodes per method")
    ap.add_argument("--test-episodes", type=int, default=None)
    ap.add_argument("--val-every", type=int, default=None)
    ap.add_argument("--val-episodes", type=int, default=None)
    ap.add_argument("--snapshot-every", type=int, default=None)
    ap.add_argument("--save-runs", default=None, help="pickle the trained runs here (a path outside the repo)")
    ap.add_argument("--from-runs", default=None, help="report the runs pickled by --save-runs")
    ap.add_argument("--note", default="", help="a sentence for the report (e.g. why the budget is lower)")
    ap.add_argument("--jobs", type=int, default=None, help="parallel processes (one torch thread each)")
    ap.add_argument(
        "--protonet-only",
        type=int,
        default=None,
        metavar="EPISODES",
        help="meta-train only the plain ProtoNet for EPISODES episodes (where does it stop rising?)",
    )
    args = ap.parse_args(argv)
    q = args.quick
    cfg = {
        "quick": q,
        "k": 1,
        "q": 5 if q else 15,
        "train_episodes": args.train_episodes or (10 if q else 3000),
        "test_episodes": args.test_episodes or (40 if q else 600),
        "val_every": args.val_every or (5 if q else 250),
        "val_episodes": args.val_episodes or (10 if q else 100),
        "snapshot_every": args.snapshot_every or (2 if q else 25),
    }
    jobs = args.jobs or (1 if q else 2)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    per_class = 300 if q else 2000
    parts, (train_c, val_c, test_c) = split_fashion(per_class, seed=0)
    _DATA["train"] = parts["train"]
    _DATA["fashion_mnist"] = rotate_classes(as_images(parts["test"][0]), parts["test"][1])
    Xm, ym = load_idx_dataset("mnist", "test")
    n_m = 3000 if q else 10000
    _DATA["mnist"] = (as_images(Xm[:n_m]), ym[:n_m])

    if args.protonet_only:
        _long_protonet(cfg, args.protonet_only)
        return
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    job_list = [(label, cfg) for label in METHODS]
    if args.from_runs:  # report runs saved by --save-runs (same settings) without training again
        with open(args.from_runs, "rb") as fh:
            runs = pickle.load(fh)
    elif jobs > 1:
        with mp.get_context("fork").Pool(jobs, maxtasksperchild=1) as pool:
            runs = {r["method"]: r for r in pool.imap_unordered(_train, job_list, chunksize=1)}
    else:
        runs = {r["method"]: r for r in map(_train, job_list)}
    if (
        args.save_runs and not args.from_runs
    ):  # the trained runs (snapshots included), so a failed report loses no training
        with open(args.save_runs, "wb") as fh:
            pickle.dump(runs, fh)

    # equal wall-clock: every method at the plain ProtoNet's meta-training time
    T = runs["protonet"]["train_seconds"]
    at_T: dict[str, dict[str, Any]] = {}
    todo = []
    for label, r in runs.items():
        snap = _state_at(r["snapshots"], T)
        if snap is None:
            at_T[label] = {"episodes": 0, "source": "no step finished"}
            continue
        last = r["snapshots"][-1]["step"] + 1
        reached = max(s["step"] + 1 for s in r["snapshots"] if s["seconds"] <= T)
        at_T[label] = {"episodes": reached if reached < last else last, "kept_step": snap["step"]}
        if reached >= last:  # finished within T: the equal-episodes model
            at_T[label]["result"] = r["result"]
        else:
            todo.append((label, snap["state"], cfg))
    if todo:
        if jobs > 1:
            with mp.get_context("fork").Pool(min(jobs, len(todo)), maxtasksperchild=1) as pool:
                outs = pool.map(_test_state, todo, chunksize=1)
        else:
            outs = list(map(_test_state, todo))
        for (label, _, _), res in zip(todo, outs, strict=True):
            at_T[label]["result"] = res
    total_s = time.perf_counter() - t_start

    order = ["protonet", "protonet+l2g", "relationnet", "relationnet+l2g"]
    rows = []
    for label in order:
        r = runs[label]
        rows.append(
            {
                "method": label,
                "budget": "equal_episodes",
                "meta_iters": r["meta_iters"],
                "train_seconds": r["train_seconds"],
                "episodes_per_second": r["meta_iters"] / r["train_seconds"],
                "best_val_iteration": r["best_val_iteration"],
                "best_val_accuracy": r["best_val_accuracy"],
                **{f"{d}_acc": r["result"][d][0] for d in DOMAINS},
                **{f"{d}_ci95": r["result"][d][1] for d in DOMAINS},
            }
        )
    for label in order:
        a = at_T[label]
        rows.append(
            {
                "method": label,
                "budget": "equal_wallclock",
                "meta_iters": a["episodes"],
                "train_seconds": T,
                "best_val_iteration": a.get("kept_step"),
                **{f"{d}_acc": a["result"][d][0] for d in DOMAINS if "result" in a},
                **{f"{d}_ci95": a["result"][d][1] for d in DOMAINS if "result" in a},
            }
        )

    def row(label: str, budget: str) -> dict[str, Any]:
        return next(r for r in rows if r["method"] == label and r["budget"] == budget)

    verdict: dict[str, Any] = {}
    for budget in ("equal_episodes", "equal_wallclock"):
        for base in ("protonet", "relationnet"):
            a, b = row(base, budget), row(f"{base}+l2g", budget)
            for d in DOMAINS:
                if f"{d}_acc" not in a or f"{d}_acc" not in b:
                    continue
                delta = b[f"{d}_acc"] - a[f"{d}_acc"]
                ci = float(np.hypot(a[f"{d}_ci95"], b[f"{d}_ci95"]))
                verdict[f"{budget}/{base}/{d}"] = {
                    "delta": delta,
                    "ci95": ci,
                    "significant": abs(delta) > ci,
                    "ratio": b[f"{d}_acc"] / a[f"{d}_acc"],
                }

    # did the plain ProtoNet's meta-validation accuracy stop rising?
    curve = runs["protonet"]["curve"]
    half, last3, plateau, rising = _plateau(curve, cfg)

    given = list(argv if argv is not None else sys.argv[1:])
    if "--note" in given:  # the note is printed below the command, not inside it
        i = given.index("--note")
        del given[i : i + 2]
    given = [a for a in given if not a.startswith("--from-runs") and a != args.from_runs]
    cmd = " ".join(["python benchmarks/fewshot.py", *given])
    E = cfg["train_episodes"]
    lines = [
        "# Few-shot classification on unseen classes: equal episodes and equal wall-clock",
        "",
        f"`{cmd}`: 5-way {cfg['k']}-shot, {cfg['q']} queries per class; every method meta-trained for {E} "
        f"episodes (Adam 1e-3, CPU, one torch thread per process, {jobs} process(es) in parallel), "
        f"meta-validated every {cfg['val_every']} episodes on {cfg['val_episodes']} fixed episodes "
        "(best state kept); tested on "
        f"{cfg['test_episodes']} episodes; accuracy ± 95% CI half-width. Fashion-MNIST base classes split "
        f"6 / 2 / 2 (test classes {test_c.tolist()}), each split rotated ×4 after the split; cross-domain: "
        f"the same models tested on MNIST. Whole run {total_s / 60:.1f} min.",
        "",
        f"Machine load (1-min load average, 2 cores) at the start: {load_start[0]:.1f}, at the end: "
        f"{os.getloadavg()[0]:.1f}; the seconds below are wall-clock under that shared load.",
        "",
    ]
    if E < 3000 and not q:
        lines += [f"**Budget below the issue's 3,000 episodes: {E} episodes per method.** {args.note}", ""]
    lines += [
        "## Equal episodes",
        "",
        "| method | episodes | meta-train s | episodes/s | kept step (val acc) | Fashion-MNIST (unseen classes) "
        "| MNIST (cross-domain) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in order:
        r = row(label, "equal_episodes")
        lines.append(
            f"| {label} | {r['meta_iters']} | {r['train_seconds']:.0f} | {r['episodes_per_second']:.2f} | "
            f"{r['best_val_iteration']} ({r['best_val_accuracy']:.3f}) | "
            f"{_cell(r['fashion_mnist_acc'], r['fashion_mnist_ci95'])} | {_cell(r['mnist_acc'], r['mnist_ci95'])} |"
        )
    lines += [
        "",
        f"## Equal wall-clock: {T:.0f} s (the plain ProtoNet's {E} episodes)",
        "",
        "Each method's state at that time in its own run: the best meta-validated point among the checks "
        "finished by then, or the last snapshot (every "
        f"{cfg['snapshot_every']} steps) when none had finished — what a fit with `timeout={T:.0f}` returns.",
        "",
        "| method | episodes by then | kept step | Fashion-MNIST (unseen classes) | MNIST (cross-domain) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in order:
        r = row(label, "equal_wallclock")
        cells = [_cell(r[f"{d}_acc"], r[f"{d}_ci95"]) for d in DOMAINS] if "fashion_mnist_acc" in r else ["—", "—"]
        lines.append(f"| {label} | {r['meta_iters']} | {r['best_val_iteration']} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "## Does L2G help?",
        "",
        "L2G − plain, ± the combined 95% CI (√(ci_a² + ci_b²)); significant only beyond it. Ratio: "
        "L2G accuracy / plain accuracy.",
        "",
        "| budget | base | Δ Fashion-MNIST | ratio | Δ MNIST | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for budget in ("equal_episodes", "equal_wallclock"):
        for base in ("protonet", "relationnet"):
            cells = []
            for d in DOMAINS:
                v = verdict.get(f"{budget}/{base}/{d}")
                if v is None:
                    cells += ["—", "—"]
                    continue
                mark = " **significant**" if v["significant"] else " (within noise)"
                cells += [f"{v['delta']:+.4f} (± {v['ci95']:.4f}){mark}", f"{v['ratio']:.3f}"]
            lines.append(f"| {budget.replace('_', ' ')} | {base} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Plain ProtoNet's meta-validation accuracy",
        "",
        "| episodes | meta-val accuracy | wall-clock s |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {n} | {a:.4f} | {s:.0f} |" for n, a, s in curve]
    verdict_text = (
        "had stopped rising: the last three checks lie within "
        if plateau
        else "had NOT clearly stopped rising: the last three checks are not all within "
    )
    lines += [
        "",
        f"By {E} episodes the plain ProtoNet's meta-validation accuracy {verdict_text}"
        f"2 × ±{half:.4f} (the binomial 95% half-width of one check, {cfg['val_episodes']} episodes × "
        f"{5 * cfg['q']} queries) of each other"
        + ("." if plateau else f"; the last check is{'' if rising else ' not'} the highest so far.")
        + " The checks reuse the same episodes, so their differences are less noisy than that bound.",
        "",
        "Meta-validation curves of all methods (episodes: accuracy):",
        "",
    ]
    for label in order:
        lines.append(f"- {label}: " + ", ".join(f"{n}: {a:.3f}" for n, a, _ in runs[label]["curve"]))
    lines.append("")
    payload = {
        "machine": machine(),
        "command": cmd,
        "config": {**cfg, "jobs": jobs},
        "equal_wallclock_seconds": T,
        "classes": {"meta_train_and_val": sorted(train_c.tolist() + val_c.tolist()), "test": test_c.tolist()},
        "rows": rows,
        "l2g_effect": verdict,
        "protonet_meta_val_curve": [{"episodes": n, "accuracy": a, "seconds": s} for n, a, s in curve],
        "protonet_plateau": {"stopped_rising": bool(plateau), "check_ci95": float(half), "last_three": last3},
        "meta_val_curves": {label: runs[label]["curve"] for label in order},
        "total_seconds": total_s,
        "load_average": {"start": load_start[0], "end": os.getloadavg()[0]},
        "note": args.note,
    }
    j, m = write(f"fewshot{'_quick' if q else ''}", payload, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
