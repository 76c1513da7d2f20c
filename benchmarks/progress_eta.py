"""The progress bar's time left against the truth, on real tracked fits (issue 25 item 3).

A tracked fit of ``BilevelClassifier("mlp")`` on digits (random search, SQLite store in a temporary
folder, verbose=1) records, after every trial, the estimate the progress bar gives now (time between
finished trials) and the one it gave before (mean time per trial since the start), and afterwards the
true time left. Reported: estimate / truth after the first trial, a tenth and half of the run, mean ±
std over seeds. Run with ``--quick`` (one seed, 30 trials, under a minute).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def one_run(seed: int, n_iter: int) -> dict[int, tuple[float, float, float]]:
    """{trials done: (truth, new estimate, old estimate)} of one fit."""
    from sklearn.datasets import load_digits

    from automl_bilevel import BilevelClassifier
    from automl_bilevel_plugins.tracking import progress

    rec: list[tuple[int, float, float | None, float]] = []
    orig_handle = progress.ProgressBar.handle

    def handle(self: progress.ProgressBar, event: object) -> None:
        orig_handle(self, event)  # type: ignore[arg-type]
        if isinstance(event, progress.TrialFinished):
            n, total = event.n_trials, event.n_iter
            old = (self.clock() - self.t0) / n * max(total - n, 0)
            rec.append((n, time.monotonic(), self.remaining(n, total), old))

    progress.ProgressBar.handle = handle  # type: ignore[method-assign]
    X, y = load_digits(return_X_y=True)
    with tempfile.TemporaryDirectory() as d:
        err, sys.stderr = sys.stderr, io.StringIO()
        try:
            BilevelClassifier(
                "mlp",
                n_iter=n_iter,
                random_state=seed,
                verbose=1,
                learner_params={"epochs": 20},
                tracking_uri=f"sqlite:///{d}/m.db",
                log_plots=False,
            ).fit(X / 16, y)
        finally:
            sys.stderr = err
            progress.ProgressBar.handle = orig_handle  # type: ignore[method-assign]
    t_end = rec[-1][1]
    return {n: (t_end - t, float(new or 0.0), old) for n, t, new, old in rec}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    seeds, n_iter = ([0], 30) if args.quick else ([0, 1, 2], 60)
    points = {"first trial": 1, "a tenth": n_iter // 10, "half": n_iter // 2}
    ratios: dict[str, dict[str, list[float]]] = {k: {"new": [], "old": []} for k in points}
    for seed in seeds:
        run = one_run(seed, n_iter)
        for name, n in points.items():
            truth, new, old = run[n]
            ratios[name]["new"].append(new / truth)
            ratios[name]["old"].append(old / truth)
    load = os.getloadavg()
    out = {
        "seeds": seeds,
        "n_iter": n_iter,
        "ratios": ratios,
        "loadavg": load,
        "note": "estimate / true time left; 1.0 is exact",
    }
    name = "progress_eta_quick" if args.quick else "progress_eta"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1))

    def ms(v: list[float]) -> str:
        return f"{statistics.mean(v):.2f}" + (f" ± {statistics.stdev(v):.2f}" if len(v) > 1 else "")

    lines = [
        f"# Progress: time left / true time left ({len(seeds)} seed(s), {n_iter} trials, digits mlp, SQLite tracking)",
        "",
        f"Machine loaded: load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores.",
        "",
        "| after | new (time between finished trials) | old (mean time since the start) |",
        "|---|---|---|",
    ]
    for k, n in points.items():
        lines.append(f"| {k} ({n} trials) | {ms(ratios[k]['new'])} | {ms(ratios[k]['old'])} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
