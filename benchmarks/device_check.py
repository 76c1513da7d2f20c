"""Every torch path on a CUDA device, checked against the CPU and timed: the speed-up over the CPU.

Paths: the torch learners (``mlp``, ``logistic``) fit and predict; every hypergradient mode on the
logistic learner with hyperparameters held on the CPU (as the ``hypergradient`` optimizer holds
them); a learned loss network and a learned optimizer inside an MLP learner; the L2O optimizee;
the meta-learners' (ProtoNet, RelationNet, hyper-representation) meta-training steps on 5-way 1-shot
episodes; a population of loss networks evaluated as one vmap'd run; a model fitted on the GPU
pickled and loaded with its weights on the CPU.

Each path runs once on each device to warm up, then is timed (best of ``--repeats``); results on
the GPU must match the CPU's to a tolerance (reported). Without CUDA it prints why and exits 0.

    python benchmarks/device_check.py           # digits + synthetic 28x28 episodes
    python benchmarks/device_check.py --quick   # fewer steps (under a minute on a GPU)

Writes benchmarks/results/device_check[_quick].json and .md (only when a CUDA device exists).
"""

from __future__ import annotations

import argparse
import copy
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine, write  # noqa: E402

from automl_bilevel import Task  # noqa: E402
from automl_bilevel.gradient import MODES, hypergradient  # noqa: E402
from automl_bilevel.methods.learned import LearnedOptimizer, LossNetwork, LSTMOptimizer, MLPOptimizee, train_optimizee  # noqa: E402
from automl_bilevel.run.runtime import resolve_device  # noqa: E402
from automl_bilevel_plugins.learners.torch_learners import LogisticLearner, MLPLearner  # noqa: E402
from automl_bilevel_plugins.meta.hyperrep import HyperRepresentation  # noqa: E402
from automl_bilevel_plugins.meta.metric import ProtoNet, RelationNet  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    fn()  # warm-up (CUDA context, kernels, allocator)
    _sync(device)
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def digits_data():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X[:1200], y[:1200], X[1200:], y[1200:]


def paths(quick: bool):
    X, y, Xv, yv = digits_data()
    task = Task("classification", 64, 10)
    epochs = 5 if quick else 30

    def learner_path(make):
        def run(device):
            model = make(device).fit(X, y, {}, task=task, seed=0)
            return model.predict_proba(Xv)

        return run

    yield (
        "mlp fit+predict (digits, 256x2)",
        learner_path(lambda d: MLPLearner(epochs=epochs, hidden_units=256, n_layers=2, batch_size=256, device=d)),
    )
    yield (
        "logistic fit+predict (digits, full batch)",
        learner_path(lambda d: LogisticLearner(epochs=epochs * 4, batch_size=10_000, device=d)),
    )

    for mode in MODES:

        def run(device, mode=mode):
            dt = LogisticLearner(epochs=epochs * 2, batch_size=10_000, device=device).differentiable(
                X, y, {}, task=task, seed=0
            )
            Xv_t, yv_t = dt.tensor(Xv), dt.targets(yv)
            hp = {k: v.cpu() for k, v in dt.constants.items()}  # the outer optimizer's values on the CPU
            hp["l2_per_feature"] = torch.full((64,), 1e-3)

            def outer(w, h):
                return torch.nn.functional.cross_entropy(dt.outputs(w, Xv_t), yv_t)

            res = hypergradient(dt.dynamics, outer, dt.z0, hp, mode=mode, truncate=10, alpha=0.01)
            return np.concatenate([res.grads[k].detach().cpu().numpy().ravel() for k in sorted(res.grads)])

        yield f"hypergradient {mode} (logistic, {epochs * 2} steps)", run

    net, opt = LossNetwork(10, seed=0), LSTMOptimizer(hidden=20, layers=2)
    yield (
        "mlp with a loss network",
        learner_path(lambda d: MLPLearner(epochs=max(2, epochs // 3), hidden_units=64, loss=net, device=d)),
    )
    yield (
        "mlp with a learned optimizer",
        learner_path(lambda d: MLPLearner(epochs=max(2, epochs // 3), hidden_units=64, optimizer=opt, device=d)),
    )

    def optimizee(device):
        o = MLPOptimizee(X, y, hidden=(20,), device=device, seed=0)
        w, losses = train_optimizee(LearnedOptimizer(copy.deepcopy(opt).to(device)), o, steps=20 if quick else 100)
        return np.asarray(losses)

    yield "L2O optimizee trained by the LSTM", optimizee

    from automl_bilevel.methods.learned import sample_tasks
    from automl_bilevel_plugins.objectives.validation import ValidationLoss

    pop_tasks = sample_tasks(X / 16.0, y, 2, n_train=(20, 60), n_val=150, seed=0)
    population_size = 10 if quick else 40

    def population(device):
        learner = MLPLearner(
            hidden_units=100,
            n_layers=2,
            optimizer="sgd",
            lr=0.1,
            weight_decay=0.0,
            epochs=20,
            batch_size=10**6,
            standardize=False,
            loss=net,
            device=device,
        )
        flat = learner.vector_hyperparameters(task)["loss_net"]
        pop = flat + 0.05 * np.random.default_rng(0).standard_normal((population_size, flat.size))
        return learner.evaluate_population(pop_tasks, pop, ValidationLoss(), task=task, seed=0)

    yield f"a population of {population_size} loss networks, batched (vmap)", population

    gen = torch.Generator().manual_seed(0)
    sx, qx = torch.rand(5, 1, 28, 28, generator=gen), torch.rand(75, 1, 28, 28, generator=gen)
    sy, qy = torch.arange(5), torch.arange(5).repeat_interleave(15)
    for name, make in (
        ("protonet", ProtoNet),
        ("relationnet", RelationNet),
        ("hyperrep", lambda: HyperRepresentation(inner_steps=5)),
    ):

        def run(device, make=make):
            torch.manual_seed(0)
            model = make().to(device)
            optim = torch.optim.Adam(model.parameters(), lr=1e-3)
            s_x, s_y, q_x, q_y = (t.to(device) for t in (sx, sy, qx, qy))
            values = []
            for _ in range(3 if quick else 20):
                optim.zero_grad()
                loss = model.meta_loss(s_x, s_y, q_x, q_y, 5)
                loss.objective.backward()
                optim.step()
                values.append(loss.value)
            return np.asarray(values)

        yield f"{name} meta-training steps (5-way 1-shot, 28x28)", run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        print(f"device_check: skipped, CUDA is not available ({why}); nothing written.")
        return 0
    gpu, cpu = resolve_device("cuda"), torch.device("cpu")
    repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(1)  # the CPU baseline under the thread policy's choice for these sizes
    rows = []
    for name, fn in paths(args.quick):
        t_cpu, out_cpu = timed(lambda fn=fn: fn(cpu), cpu, repeats)
        t_gpu, out_gpu = timed(lambda fn=fn: fn(gpu), gpu, repeats)
        diff = float(np.max(np.abs(np.asarray(out_cpu) - np.asarray(out_gpu))))
        scale = float(np.max(np.abs(out_cpu))) or 1.0
        rows.append(
            {
                "path": name,
                "cpu_s": t_cpu,
                "gpu_s": t_gpu,
                "speedup": t_cpu / t_gpu,
                "max_abs_diff": diff,
                "rel_diff": diff / scale,
            }
        )
        print(
            f"{name}: cpu {t_cpu:.3f} s, gpu {t_gpu:.3f} s, x{t_cpu / t_gpu:.2f}, rel diff {diff / scale:.2e}",
            flush=True,
        )
    # a model fitted on the GPU, pickled, loaded with its weights on the CPU, predicts the same
    X, y, Xv, _ = digits_data()
    model = MLPLearner(epochs=3, hidden_units=32, device="cuda").fit(
        X, y, {}, task=Task("classification", 64, 10), seed=0
    )
    loaded = pickle.loads(pickle.dumps(model))
    pickled_ok = loaded.device.type == "cpu" and np.allclose(
        loaded.predict_proba(Xv), model.predict_proba(Xv), atol=1e-5
    )
    name = "device_check_quick" if args.quick else "device_check"
    lines = [
        "# Torch paths on CUDA vs CPU",
        "",
        f"`python benchmarks/device_check.py{' --quick' if args.quick else ''}` on "
        f"{torch.cuda.get_device_name(gpu)}; CPU single-threaded; best of {repeats} after a warm-up. "
        f"A model fitted on the GPU pickles and predicts on the CPU: **{pickled_ok}**.",
        "",
        "| path | CPU (s) | GPU (s) | speed-up | max rel. diff |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['path']} | {r['cpu_s']:.3f} | {r['gpu_s']:.3f} | {r['speedup']:.2f}x | {r['rel_diff']:.1e} |"
        for r in rows
    ]
    payload = {
        "machine": {**machine(), "gpu": torch.cuda.get_device_name(gpu)},
        "repeats": repeats,
        "rows": rows,
        "gpu_model_pickles_to_cpu": pickled_ok,
    }
    j, m = write(name, payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {j} and {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
