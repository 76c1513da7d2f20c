"""Your own CNN through the package, against the same module in a plain PyTorch loop and in skorch.

(a) **cost of one trial**: the CNN below on Fashion-MNIST images ``(N, 1, 28, 28)``, trained by the
    ``torch`` learner (one trial's work: ``TorchLearner.fit``), by a plain PyTorch loop with the same
    module, initial weights, optimizer (Adam, L2 weight decay), mini-batches and epochs, and by
    skorch's ``NeuralNetClassifier`` (same module, optimizer, batch size and epochs; its own shuffling).
    Ratios to the plain loop, mean ± std over ``--repeats`` repetitions.
(b) **hypergradient cost and memory**: one outer step (value and hypergradient of the validation loss
    in lr and ``weight_decay_per_layer``) in ``reverse``, ``checkpoint``, ``truncated`` (last quarter
    of the steps) and ``implicit`` (CG, 20 iterations) mode, relative to one plain run of the same
    training (time, and peak resident-memory increase).
(c) **search quality at equal wall-clock**: ``smac`` (lr, weight decay, channels), ``hypergradient``
    (lr and ``weight_decay_per_layer``, channels fixed) and ``hybrid`` (channels by SMAC, the rest by
    hypergradient steps) with ``--seconds`` each, over ``--seeds`` seeds: best validation loss and
    test accuracy of the refitted model, mean ± std.

    python benchmarks/own_model.py --quick     # small data, under a minute
    python benchmarks/own_model.py             # 10,000 training images, 5 epochs, 3 seeds x 120 s

Every measurement runs single-threaded in a forked child (benchmarks/_harness.py); the load average
of the machine is recorded with the results (these machines are shared: absolute times are noisy,
ratios less so). Writes benchmarks/results/own_model[_quick].json and .md.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine, measure, write  # noqa: E402

from automl_bilevel import BilevelClassifier, Task  # noqa: E402
from automl_bilevel.frontends.data import DatasetNotFoundError, load_idx_dataset  # noqa: E402
from automl_bilevel.gradient import hypergradient  # noqa: E402
from automl_bilevel_plugins.learners.torch_learners import TorchLearner  # noqa: E402


class CNN(nn.Module):
    """Two conv blocks with BatchNorm and max-pooling, and a linear head (the example's network)."""

    def __init__(self, channels: int = 8, n_classes: int = 10, input_shape: tuple[int, ...] = (1, 28, 28)) -> None:
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * channels * (h // 4) * (w // 4), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def fashion(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = load_idx_dataset("fashion-mnist", "train")
    Xt, yt = load_idx_dataset("fashion-mnist", "test")
    img = lambda A: (A[:, None] / 255.0).astype(np.float32)  # noqa: E731
    return img(X[:n_train]), y[:n_train], img(Xt[:n_test]), yt[:n_test]


def mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


# -- (a) cost of one trial -----------------------------------------------------------------------------
def cost(X: np.ndarray, y: np.ndarray, epochs: int, batch: int, repeats: int) -> dict:
    task = Task("classification", int(np.prod(X.shape[1:])), 10, tuple(X.shape[1:]))
    settings = dict(epochs=epochs, batch_size=batch, lr=1e-3, weight_decay=1e-4, optimizer="adam")
    learner = TorchLearner(CNN, channels=8, **settings)
    dt = learner.differentiable(X, y, {}, task=task, seed=0)
    batches, module0, Xt, yt = dt.batches, copy.deepcopy(dt.module), dt.Xt, dt.yt

    def ours():
        learner.fit(X, y, {}, task=task, seed=0)

    def plain():
        module = copy.deepcopy(module0).train()
        opt = torch.optim.Adam(module.parameters(), lr=1e-3, weight_decay=1e-4)
        for idx in batches:
            opt.zero_grad()
            nn.functional.cross_entropy(module(Xt[idx]), yt[idx]).backward()
            opt.step()

    runs: dict[str, list[float]] = {"plain": [], "ours": []}
    fns = {"plain": plain, "ours": ours}
    try:
        from skorch import NeuralNetClassifier

        def with_skorch():
            torch.manual_seed(0)
            NeuralNetClassifier(
                CNN,
                module__channels=8,
                criterion=nn.CrossEntropyLoss,
                optimizer=torch.optim.Adam,
                optimizer__weight_decay=1e-4,
                lr=1e-3,
                max_epochs=epochs,
                batch_size=batch,
                train_split=None,
                iterator_train__shuffle=True,
                verbose=0,
            ).fit(X, y)

        fns["skorch"], runs["skorch"] = with_skorch, []
    except ImportError:
        pass
    peaks: dict[str, float | None] = {}
    for _ in range(repeats):  # interleaved: load changes hit every method alike
        for name, fn in fns.items():
            res = measure(fn, repeats=1)
            if "error" in res:
                raise RuntimeError(f"{name}: {res['error']}\n{res.get('trace', '')}")
            runs[name].append(res["seconds"])
            peaks.setdefault(name, res["peak_mb"])
    ratios = {k: [a / b for a, b in zip(v, runs["plain"], strict=True)] for k, v in runs.items() if k != "plain"}
    return {
        "n_train": len(X),
        "epochs": epochs,
        "batch_size": batch,
        "steps": len(batches),
        "seconds": runs,
        "ratio_to_plain": ratios,
        "peak_mb": peaks,
    }


# -- (b) one hypergradient step ------------------------------------------------------------------------
def hyper_cost(X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, epochs: int, batch: int) -> dict:
    task = Task("classification", int(np.prod(X.shape[1:])), 10, tuple(X.shape[1:]))
    learner = TorchLearner(CNN, channels=8, epochs=epochs, batch_size=batch, lr=1e-2, optimizer="sgd")
    out: dict[str, dict] = {}

    def setup():
        dt = learner.differentiable(X, y, {"weight_decay_per_layer": np.full(10, 1e-4)}, task=task, seed=0)
        Xvt, yvt = dt.tensor(Xv), dt.targets(yv)
        return dt, (lambda w, h: nn.functional.cross_entropy(dt.outputs(w, Xvt), yvt))

    def plain_run():
        dt, _ = setup()
        dt.dynamics.run(dt.z0, dt.constants)

    def step(mode: str, **how):
        def fn():
            dt, loss = setup()
            hypergradient(dt.dynamics, loss, dt.z0, dict(dt.constants), alpha=1e-2, mode=mode, **how)

        return fn

    T = epochs * int(np.ceil(len(X) / batch))
    cases = {
        "training run": plain_run,
        "reverse": step("reverse"),
        "checkpoint": step("checkpoint"),
        "truncated": step("truncated", truncate=max(1, T // 4)),
        "implicit": step("implicit", iters=20),
    }
    for name, fn in cases.items():
        res = measure(fn, repeats=1)
        out[name] = {"seconds": res.get("seconds"), "peak_mb": res.get("peak_mb"), "error": res.get("error")}
    base = out["training run"]
    for r in out.values():
        if r["seconds"] and base["seconds"]:
            r["time_ratio"] = r["seconds"] / base["seconds"]
        if r["peak_mb"] and base["peak_mb"]:
            r["memory_ratio"] = r["peak_mb"] / base["peak_mb"]
    return {"steps": T, "n_train": len(X), "modes": out}


# -- (c) search quality --------------------------------------------------------------------------------
def quality(data, seconds: float, seeds: int, epochs: int) -> dict:
    X, y, Xt, yt = data
    training = {"epochs": epochs, "batch_size": 64}
    methods = {
        "smac": dict(
            optimizer="smac",
            search_space={"lr": (1e-4, 1e-1, "log"), "weight_decay": (1e-6, 1e-2, "log"), "channels": (4, 16)},
            learner_params=training,
        ),
        "hypergradient": dict(
            optimizer="hypergradient",
            optimizer_params={"mode": "checkpoint", "tensor_hyperparameters": ["weight_decay_per_layer"]},
            search_space={"lr": (1e-4, 1e-1, "log")},
            learner_params={**training, "channels": 8},
        ),
        "hybrid": dict(
            optimizer="hybrid",
            optimizer_params={
                "steps": 3,
                "mode": "checkpoint",
                "tensor_hyperparameters": ["weight_decay_per_layer"],
                "blackbox_params": {"n_initial": 2},
            },
            search_space={"lr": (1e-4, 1e-1, "log"), "channels": (4, 16)},
            learner_params=training,
        ),
    }
    out: dict[str, dict[str, list[float]]] = {m: {"val_loss": [], "test_accuracy": [], "trials": []} for m in methods}

    def run(name: str, seed: int):
        def fn():
            torch.set_num_threads(1)
            est = BilevelClassifier(
                CNN, n_iter=10_000, timeout=seconds, tracking=False, random_state=seed, **methods[name]
            ).fit(X, y)
            return est.best_value_, est.score(Xt, yt), est.n_trials_

        return fn

    for seed in range(seeds):
        order = list(methods)[seed % 3 :] + list(methods)[: seed % 3]  # rotating order
        for name in order:
            res = measure(run(name, seed), repeats=1, timeout=seconds * 10 + 300)
            if "error" in res:
                print(f"{name} seed {seed}: {res['error']}", file=sys.stderr)
                continue
            v, acc, n = res["result"]
            out[name]["val_loss"].append(v)
            out[name]["test_accuracy"].append(acc)
            out[name]["trials"].append(n)
    return {"seconds_per_method": seconds, "seeds": seeds, "epochs": epochs, "n_train": len(X), "methods": out}


def mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def table(payload: dict) -> str:
    a, b, c = payload["cost"], payload["hypergradient"], payload["quality"]
    lines = [
        "# Your own CNN: the package against a plain PyTorch loop and skorch",
        "",
        f"Command: `{payload['command']}`. Machine: {payload['machine']['cpu_count']} CPUs, shared; load average "
        f"{payload['load_before']} before and {payload['load_after']} after (other jobs ran at the same time: "
        "absolute seconds are noisy). Single-threaded torch.",
        "",
        f"## (a) One trial: {a['n_train']} Fashion-MNIST images (1x28x28), {a['epochs']} epochs, batch "
        f"{a['batch_size']} ({a['steps']} steps), Adam",
        "",
        f"Network for (a) and (b): {a.get('network', 'global-average-pooled (an earlier version of the example’s)')}.",
        "",
        "| | seconds (mean ± std) | ratio to the plain loop | peak memory increase (MB) |",
        "|---|---|---|---|",
        f"| plain PyTorch loop | {mean_std(a['seconds']['plain'])} | 1 | {mb(a['peak_mb'].get('plain'))} |",
    ]
    for k in ("ours", "skorch"):
        if k in a["seconds"]:
            label = "automl_bilevel `torch` learner" if k == "ours" else "skorch NeuralNetClassifier"
            ratio, peak = mean_std(a["ratio_to_plain"][k]), mb(a["peak_mb"].get(k))
            lines.append(f"| {label} | {mean_std(a['seconds'][k])} | {ratio} | {peak} |")
    lines += [
        "",
        f"## (b) One hypergradient step (lr and weight_decay_per_layer), {b['n_train']} images, {b['steps']} SGD steps",
        "",
        "| | seconds | time ratio | peak memory increase (MB) | memory ratio |",
        "|---|---|---|---|---|",
    ]
    for name, r in b["modes"].items():
        if r.get("error"):
            lines.append(f"| {name} | error: {r['error']} | | | |")
            continue
        lines.append(
            f"| {name} | {r['seconds']:.3f} | {r.get('time_ratio', float('nan')):.2f} | "
            f"{mb(r['peak_mb'])} | {r.get('memory_ratio', float('nan')):.2f} |"
        )
    lines += [
        "",
        f"## (c) Search at equal wall-clock: {c['seconds_per_method']} s per method, {c['seeds']} seeds, "
        f"{c['n_train']} training images, {c['epochs']} epochs per trial",
        "",
        f"Network: {c.get('network', 'global-average-pooled (an earlier version)')}; load average "
        f"{c.get('load', 'as above')}.",
        "",
        "| method | best validation loss | test accuracy | trials or steps |",
        "|---|---|---|---|",
    ]
    for name, r in c["methods"].items():
        lines.append(
            f"| {name} | {mean_std(r['val_loss'])} | {mean_std(r['test_accuracy'])} | {mean_std(r['trials'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data and budgets: under a minute")
    parser.add_argument("--seconds", type=float, default=None, help="wall-clock per method and seed in (c)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--only-quality", action="store_true", help="rerun (c) only, keeping (a) and (b) of the results file"
    )
    args = parser.parse_args()
    q = args.quick
    torch.set_num_threads(1)
    try:
        n_train = 1000 if q else 10_000
        X, y, Xt, yt = fashion(n_train, 500 if q else 5000)
    except DatasetNotFoundError as exc:
        sys.exit(str(exc))
    load_before = os.getloadavg()
    name = "own_model_quick" if q else "own_model"
    if args.only_quality:
        import json

        from _harness import RESULTS

        payload = json.loads((RESULTS / f"{name}.json").read_text())
        nq = 400 if q else 5000
        payload["quality"] = quality(
            (X[:nq], y[:nq], Xt, yt), args.seconds or (2.0 if q else 120.0), args.seeds, 1 if q else 3
        )
        payload["quality"]["load"] = [[round(v, 2) for v in load_before], [round(v, 2) for v in os.getloadavg()]]
        payload["quality"]["network"] = "max-pooled (the example's)"
        j, m = write(name, payload, table(payload))
        print(table(payload))
        return
    payload = {
        "command": "python benchmarks/own_model.py" + (" --quick" if q else ""),
        "machine": machine(),
        "load_before": [round(v, 2) for v in load_before],
        "cost": cost(X, y, 1 if q else 5, 128, args.repeats or (2 if q else 3)),
    }
    payload["cost"]["network"] = payload["network"] = "max-pooled (the example's)"
    print("(a) done", file=sys.stderr)
    nh = 256 if q else 2000
    payload["hypergradient"] = hyper_cost(X[:nh], y[:nh], Xt[:200], yt[:200], 1, 64)
    print("(b) done", file=sys.stderr)
    nq = 400 if q else 5000
    payload["quality"] = quality(
        (X[:nq], y[:nq], Xt, yt), args.seconds or (2.0 if q else 120.0), args.seeds, 1 if q else 3
    )
    payload["quality"]["network"] = payload["network"]
    payload["load_after"] = [round(v, 2) for v in os.getloadavg()]
    j, m = write(name, payload, table(payload))
    print(table(payload))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
