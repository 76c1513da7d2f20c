"""What MLflow tracking costs a search: trials/s with tracking off, on a SQLite store, on a local
`mlflow server`, and a bare loop doing the same fits without the host.

A trial is one real scikit-learn fit (a DecisionTree on synthetic data, its size calibrated so that a
fit takes about ``--trial-ms`` milliseconds, 10 by default) scored by validation error. Every mode
evaluates the same seeded random-search configurations. For each mode:

- **search**: the wall time of the search loop (ask / evaluate / tell / events); this is what the
  search waits for. Tracking appends each trial to a local spool file; a writer (a thread, or a
  separate process that follows the spool: the default for runs of 200 trials or more) writes them
  to the store;
- **end to end**: the search plus the run's end, where the background writer finishes writing the
  trials it has not written yet and the run's files (no model is logged here), then ends the run.

Ratios are against tracking off. Absolute numbers on a shared machine are noisy; compare ratios.

    python benchmarks/tracking.py            # 500 trials per mode, 3 rounds (interleaved)
    python benchmarks/tracking.py --quick    # 100 trials per mode, 1 round (under a minute)

Writes benchmarks/results/tracking[_quick].json and .md.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# the end-to-end column measures writing every trial: no bounded flush (the default 60 s would leave the
# rest of a 500-trial thread-writer run in the spool, for `automl-bilevel sync`)
os.environ.setdefault("AUTOML_BILEVEL_FLUSH_TIMEOUT", "1800")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine, write  # noqa: E402

from automl_bilevel import (  # noqa: E402
    BilevelProblem,
    Run,
    RunContext,
    Split,
    Task,
    TrackingSettings,
    as_configspace,
    get_registry,
    run_search,
)

# a float keeps the space infinite: random search draws distinct configurations only, and the 380 of a
# purely discrete space would end a 500-trial search early
SPACE = {
    "max_depth": (2, 20),
    "min_samples_leaf": (1, 10),
    "criterion": ["gini", "entropy"],
    "max_features": (0.5, 1.0),
}


def make_problem(trial_ms: float, seed: int = 0):
    """A DecisionTree problem whose fits take about ``trial_ms`` ms (sample count calibrated here)."""
    from sklearn.datasets import make_classification
    from sklearn.tree import DecisionTreeClassifier

    reg = get_registry()
    learner, _ = reg.make("learner", "sklearn", {"estimator": DecisionTreeClassifier()})
    objective, _ = reg.make("objective", "val_error")
    task = Task("classification", 20, 2)
    n = 500
    for _ in range(8):
        X, y = make_classification(n_samples=2 * n, n_features=20, random_state=seed)
        split = Split(X[:n], y[:n], X[n:], y[n:])
        problem = BilevelProblem(learner, objective, as_configspace(SPACE, seed=seed), task, [split], seed)
        times = []
        for depth in (5, 10, 20, 8, 12):
            t0 = time.perf_counter()
            problem.evaluate({"max_depth": depth, "min_samples_leaf": 3, "criterion": "gini", "max_features": 0.75})
            times.append(time.perf_counter() - t0)
        ms = 1000 * statistics.median(times)
        if abs(ms - trial_ms) / trial_ms < 0.15:
            break
        n = max(50, int(n * trial_ms / ms))
    return problem, ms


WRITERS = {"sqlite-thread": "thread", "sqlite": "process", "server": "process"}


def search(problem, n: int, mode: str, uri: str | None, seed: int = 0) -> dict:
    """One search of ``n`` trials; tracking per ``mode``; timings of the loop and of the run's end."""
    os.environ["AUTOML_BILEVEL_TRACKING_WRITER"] = WRITERS.get(mode, "auto")
    reg = get_registry()
    optimizer, _ = reg.make("optimizer", "random")
    context = RunContext(
        name=f"bench-{mode}",
        task="classification",
        learner="sklearn",
        objective="val_error",
        optimizer="random",
        params={"n_iter": n},
        plugins={},
        search_space=SPACE,
        n_iter=n,
        tracking=TrackingSettings(mode != "off", uri, f"bench-{mode}", log_model=False),
    )
    t0 = time.perf_counter()
    session = Run(context, reg).__enter__()
    t1 = time.perf_counter()
    res = run_search(problem, optimizer, n_iter=n, seed=seed, run=session)
    t2 = time.perf_counter()
    session.finish(res.status)
    t3 = time.perf_counter()
    assert len(res.trials) == n, f"the search ran {len(res.trials)} of {n} trials ({res.stop_reason})"
    run_id = session.info.get("mlflow_run_id")
    if run_id:  # check what the store holds: every trial once, the run ended
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        run = client.get_run(run_id)
        kids = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=5000)
        assert run.info.status == "FINISHED", run.info.status
        assert sorted(int(k.data.tags["automl_bilevel.trial"]) for k in kids) == list(range(n)), len(kids)
    return {
        "mode": mode,
        "n": n,
        "setup_s": t1 - t0,
        "search_s": t2 - t1,
        "end_s": t3 - t2,
        "total_s": t3 - t1,
        "eval_s": sum(t.duration for t in res.trials),
        "configs": [dict(t.config) for t in res.trials[:5]],
    }


def bare(problem, n: int, seed: int = 0) -> dict:
    """The same fits in a plain loop: configurations sampled up front, no host, no events."""
    problem.space.seed(seed)
    configs = [dict(c) for c in problem.space.sample_configuration(n)]
    t0 = time.perf_counter()
    for c in configs:
        problem.evaluate(c)
    dt = time.perf_counter() - t0
    return {"mode": "bare", "n": n, "setup_s": 0.0, "search_s": dt, "end_s": 0.0, "total_s": dt, "eval_s": dt}


def store_floor(uri: str, n: int) -> dict:
    """What the store alone needs for ``n`` child runs: MLflow's public API in a plain loop, the fewest
    calls that make a finished child with its params and metrics (create_run, log_batch, set_terminated),
    no search, no host. No background writer can end a run sooner than this after its last trial."""
    from mlflow.entities import Metric, Param

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    name = f"bench-floor-{time.time_ns()}"
    exp = client.create_experiment(name)
    parent = client.create_run(exp, run_name="floor").info.run_id
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        ts = int(time.time() * 1000)
        tags = {"mlflow.parentRunId": parent, "automl_bilevel.trial": str(i), "automl_bilevel.status": "COMPLETE"}
        cid = client.create_run(exp, run_name=f"trial-{i}", start_time=ts - 10, tags=tags).info.run_id
        client.log_batch(
            cid,
            metrics=[Metric("value", 0.1, ts, 0), Metric("duration", 0.01, ts, 0)],
            params=[Param(k, "1") for k in SPACE],
        )
        client.set_terminated(cid, "FINISHED", end_time=ts)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    client.set_terminated(parent, "FINISHED")
    return {"uri_kind": "sqlite" if uri.startswith("sqlite") else "server", "n": n, "s": dt, "client_cpu_s": cpu}


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{folder}/server.db",
            "--artifacts-destination",
            str(folder / "art"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # no job-runner processes
    uri = f"http://127.0.0.1:{port}"
    import requests

    for _ in range(300):
        try:
            if requests.get(uri + "/health", timeout=1).status_code == 200:
                return proc, uri
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("mlflow server did not start")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--trial-ms", type=float, default=10.0)
    ap.add_argument("--no-server", action="store_true", help="skip the local mlflow server mode")
    args = ap.parse_args(argv)
    n = args.trials or (100 if args.quick else 500)
    rounds = args.rounds or (1 if args.quick else 3)
    problem, trial_ms = make_problem(args.trial_ms)
    print(f"trial: {trial_ms:.1f} ms (median of 5 fits), {n} trials per mode, {rounds} round(s)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["AUTOML_BILEVEL_SPOOL_DIR"] = str(tmp / "spool")
        server, server_uri = (None, None) if args.no_server else start_server(tmp)
        try:
            modes = [
                ("bare", None),
                ("off", None),
                ("sqlite-thread", f"sqlite:///{tmp}/bench.db"),
                ("sqlite", f"sqlite:///{tmp}/bench.db"),
            ]
            if server_uri:
                modes.append(("server", server_uri))
            for mode, uri in modes[1:]:  # warm-up: imports, first-call costs, the server's own start
                search(problem, 5, mode, uri)
            time.sleep(2.0)
            floors = []
            for r in range(rounds):
                for _, uri in modes[3:]:
                    floors.append(store_floor(uri, n))
                    f = floors[-1]
                    print(f"round {r} store floor ({f['uri_kind']}): {n} children in {f['s']:.2f} s", flush=True)
                for mode, uri in modes[r % len(modes) :] + modes[: r % len(modes)]:  # a different order each round
                    row = bare(problem, n) if mode == "bare" else search(problem, n, mode, uri)
                    row["round"] = r
                    rows.append(row)
                    print(
                        f"round {r} {mode:7s} search {row['search_s']:.2f} s ({n / row['search_s']:.1f} trials/s), "
                        f"end {row['end_s']:.2f} s, total {row['total_s']:.2f} s",
                        flush=True,
                    )
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
    summary = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        summary[mode] = {k: float(np.median([r[k] for r in mine])) for k in ("search_s", "end_s", "total_s")}
    off = summary["off"]
    for s in summary.values():
        s["search_trials_per_s"] = n / s["search_s"]
        s["total_trials_per_s"] = n / s["total_s"]
        s["search_vs_off"] = s["search_s"] / off["search_s"]
        s["total_vs_off"] = s["total_s"] / off["total_s"]
    floor = {}
    for kind in dict.fromkeys(f["uri_kind"] for f in floors):
        mine = [f for f in floors if f["uri_kind"] == kind]
        floor[kind] = {
            "s": float(np.median([f["s"] for f in mine])),
            "ms_per_child": float(np.median([f["s"] for f in mine])) / n * 1000,
            "client_cpu_ms_per_child": float(np.median([f["client_cpu_s"] for f in mine])) / n * 1000,
        }
        floor[kind]["vs_off_search"] = floor[kind]["s"] / off["search_s"]
    cmd = " ".join(["python benchmarks/tracking.py"] + (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# Tracking overhead",
        "",
        f"`{cmd}`: {n} random-search trials per mode of a DecisionTree fit of about {trial_ms:.1f} ms "
        f"(median of the calibration fits; random configurations vary), {rounds} round(s) in rotating order, "
        f"medians shown, on a {os.cpu_count()}-core machine shared with other jobs. "
        "*search*: the search loop, what the search waits for; "
        "*end to end*: the search plus the run's end (the background writer writes what it has not yet "
        "written, the trials table and the trace plot; no model), the parent run then FINISHED with every "
        "trial as one child run (checked).",
        "",
        "| mode | search trials/s | search vs off | end-to-end trials/s | end to end vs off | end of run (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {
        "bare": "bare loop (no host)",
        "off": "tracking off",
        "sqlite-thread": "tracking on, SQLite, writer thread",
        "sqlite": "tracking on, SQLite, writer process",
        "server": "tracking on, local mlflow server, writer process",
    }
    for mode, s in summary.items():
        lines.append(
            f"| {names[mode]} | {s['search_trials_per_s']:.1f} | {s['search_vs_off']:.3f} | "
            f"{s['total_trials_per_s']:.1f} | {s['total_vs_off']:.3f} | {s['end_s']:.2f} |"
        )
    lines += [
        "",
        "## The store's own floor",
        "",
        f"MLflow's public API alone writing {n} finished child runs (create_run, log_batch, set_terminated: the "
        "fewest calls for a child with its params and metrics) in a plain loop, no search: the time after which "
        "any writer, however it overlaps the search, can have written every trial.",
        "",
        "| store | seconds for all children | ms per child | client CPU ms per child | floor / tracking-off search |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, f in floor.items():
        lines.append(
            f"| {kind} | {f['s']:.2f} | {f['ms_per_child']:.1f} | {f['client_cpu_ms_per_child']:.1f} | "
            f"{f['vs_off_search']:.2f} |"
        )
    lines.append("")
    payload = {
        "floor": floor,
        "floors": floors,
        "machine": machine(),
        "command": cmd,
        "trials": n,
        "rounds": rounds,
        "trial_ms": trial_ms,
        "rows": rows,
        "summary": summary,
    }
    j, m = write(f"tracking{'_quick' if args.quick else ''}", payload, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
