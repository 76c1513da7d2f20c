"""The ``automl-bilevel`` command line.

    automl-bilevel plugins [--json]
    automl-bilevel run [EXPERIMENT.toml] [--n-iter N] [--no-tracking] [--tracking-uri URI] [--json-out FILE]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Sequence

from . import __version__


def _fmt(v: Any) -> str:
    if isinstance(v, list) and len(v) > 5 and all(isinstance(x, (int, float)) for x in v):
        import numpy as np

        v = np.asarray(v)
    if hasattr(v, "shape") and getattr(v, "ndim", 0) >= 1:  # a tensor hyperparameter
        return f"<{v.shape[0]} values, mean {float(v.mean()):.4g}, min {float(v.min()):.4g}, max {float(v.max()):.4g}>"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def _params(p: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in p.items()) or "(none)"


def cmd_plugins(args) -> int:
    from .registry import get_registry

    reg = get_registry()
    records = reg.records()
    for name in sorted(i.plugin_name for i in reg.pm.hook.bilevel_run_listener.get_hookimpls()):
        package, version = reg.pm.plugin_origins.get(name, (None, None))
        records.append({"kind": "listener", "name": name, "plugin": name, "package": package, "version": version,
                        "description": (reg.pm.get_plugin(name).__doc__ or "").strip().splitlines()[0]})
    failed = [{"plugin": e.plugin, "package": e.package, "error": e.error} for e in reg.load_errors]
    if args.json:
        print(json.dumps({"plugins": records, "failed": failed}, indent=2))
        return 0
    rows = [("KIND", "NAME", "PLUGIN", "PACKAGE", "VERSION", "DESCRIPTION")] + [
        (r["kind"], r["name"], r["plugin"], str(r["package"]), str(r["version"]), r["description"] or "")
        for r in records]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for f in failed:
        print(f"FAILED TO LOAD  {f['plugin']} ({f['package']}): {f['error']}")
    return 0


def print_results(res: dict[str, Any], out=None) -> None:
    out = out or sys.stdout
    lines = [
        ("experiment", f"{res['experiment']}  [{res['source']}]"),
        ("dataset", f"{res['dataset']} ({res['task']}; {res['n_train']} train / {res['n_test']} test)"),
        ("components", f"learner={res['learner']}  objective={res['objective']}  optimizer={res['optimizer']}"),
        ("trials", f"{res['n_trials']} ({res['n_failed']} failed), stopped by {res['stop_reason']}"
                   + ("  [INTERRUPTED: best so far]" if res["interrupted"] else "")),
        (f"best {res['objective']}", _fmt(res["best_value"])
         + (f"  (at budget {_fmt(res['best_budget'])})" if res.get("best_budget") is not None else "")),
        ("best params", _params(res["best_params"])),
        (f"test {res['test_metric']}", _fmt(res["test_score"])),
        ("time", f"{res['seconds']:.1f} s"),
    ]
    if res.get("mlflow_run_id"):
        lines.append(("mlflow run", f"{res['mlflow_run_id']}  ({res['mlflow_tracking_uri']})"))
    w = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k.ljust(w)}  {v}", file=out)
    if res["top_trials"]:
        # multi-fidelity optimizers evaluate one configuration at several budgets: show which
        budgets = any(t.get("budget") is not None for t in res["top_trials"])
        print(f"\n{'trial':>5}  {res['objective']:>10}  " + (f"{'budget':>6}  " if budgets else "") + "params", file=out)
        for t in res["top_trials"]:
            budget = f"{_fmt(1.0 if t.get('budget') is None else t['budget']):>6}  " if budgets else ""
            print(f"{t['number']:>5}  {_fmt(t['value']):>10}  {budget}{_params(t['params'])}", file=out)
        if budgets:
            print("(budget: the fraction of full training a trial had; the best is chosen at the highest budget)",
                  file=out)
    if res.get("mlflow_tracking_uri"):
        print(f"\nOpen the runs with: mlflow ui --backend-store-uri {res['mlflow_tracking_uri']}", file=out)


def cmd_run(args) -> int:
    from .experiment import Experiment

    exp = Experiment.load(args.experiment)
    overrides: dict[str, Any] = {}
    if args.n_iter is not None:
        overrides["n_iter"] = args.n_iter
    if args.no_tracking:
        overrides["tracking"] = False
    if args.tracking_uri:
        overrides["tracking_uri"] = args.tracking_uri
    try:
        res = exp.run(verbose=0 if args.quiet else 1, overrides=overrides)
    except KeyboardInterrupt:
        print("interrupted before any trial completed; nothing to report", file=sys.stderr)
        return 130
    print_results(res)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(res, f, indent=2, default=str)
    return 130 if res["interrupted"] else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="automl-bilevel", description="Bilevel hyperparameter optimization and meta-learning.")
    p.add_argument("--version", action="version", version=f"automl-bilevel {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("plugins", help="list every registered plugin component")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.set_defaults(func=cmd_plugins)
    r = sub.add_parser("run", help="run an experiment file (default: the embedded digits experiment)")
    r.add_argument("experiment", nargs="?", help="EXPERIMENT.toml (omit for the embedded default)")
    r.add_argument("--n-iter", type=int, help="override the number of outer iterations")
    r.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    r.add_argument("--json-out", help="also write the results as JSON to this file")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        print(f"automl-bilevel: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
