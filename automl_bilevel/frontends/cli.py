"""The ``automl-bilevel`` command line.

    automl-bilevel plugins [--json]
    automl-bilevel run [EXPERIMENT.toml] [--n-iter N] [--no-tracking] [--tracking-uri URI] [--json-out FILE]
    automl-bilevel sync [SPOOL] [--tracking-uri URI] [--force]

``run`` treats SIGTERM like Ctrl-C (the search stops, the best so far is kept, the tracking run ends
KILLED) and exits 130 after SIGINT, 143 after SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Self, TextIO

from automl_bilevel import __version__


def _fmt(v: Any) -> str:
    if isinstance(v, list) and len(v) > 5 and all(isinstance(x, (int, float)) for x in v):
        import numpy as np

        v = np.asarray(v)
    if hasattr(v, "shape") and getattr(v, "ndim", 0) >= 1:  # a tensor hyperparameter
        return f"<{v.shape[0]} values, mean {float(v.mean()):.4g}, min {float(v.min()):.4g}, max {float(v.max()):.4g}>"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def _params(p: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in p.items()) or "(none)"


def cmd_plugins(args: argparse.Namespace) -> int:
    """``automl-bilevel plugins``: print every registered component and run listener with the plugin and
    package it came from, then the plugins that failed to load (as JSON with ``--json``). Returns 0."""
    from automl_bilevel.plugin.registry import Registry, get_plugin_manager

    pm = get_plugin_manager()
    reg = Registry.from_plugin_manager(pm)
    records = reg.records()
    for name in sorted(i.plugin_name for i in pm.hook.bilevel_run_listener.get_hookimpls()):
        package, version = pm.plugin_origins.get(name, (None, None))
        records.append(
            {
                "kind": "listener",
                "name": name,
                "plugin": name,
                "package": package,
                "version": version,
                # a module without a docstring has no first line: an empty description, not an IndexError
                "description": next(iter((pm.get_plugin(name).__doc__ or "").strip().splitlines()), ""),
            }
        )
    failed = [{"plugin": e.plugin, "package": e.package, "error": e.error} for e in reg.load_errors]
    if args.json:
        print(json.dumps({"plugins": records, "failed": failed}, indent=2))
        return 0
    rows = [("KIND", "NAME", "PLUGIN", "PACKAGE", "VERSION", "DESCRIPTION")] + [
        (r["kind"], r["name"], r["plugin"], str(r["package"]), str(r["version"]), r["description"] or "")
        for r in records
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for f in failed:
        print(f"FAILED TO LOAD  {f['plugin']} ({f['package']}): {f['error']}")
    return 0


def print_results(res: dict[str, Any], out: TextIO | None = None) -> None:
    """Print the summary of an experiment run (the result of ``Experiment.run``) and its best trials to
    ``out`` (default: stdout)."""
    out = out or sys.stdout
    lines = [
        ("experiment", f"{res['experiment']}  [{res['source']}]"),
        ("dataset", f"{res['dataset']} ({res['task']}; {res['n_train']} train / {res['n_test']} test)"),
        ("components", f"learner={res['learner']}  objective={res['objective']}  optimizer={res['optimizer']}"),
        (
            "trials",
            f"{res['n_trials']} ({res['n_failed']} failed), stopped by {res['stop_reason']}"
            + ("  [INTERRUPTED: best so far]" if res["interrupted"] else ""),
        ),
        (
            f"best {res['objective']}",
            _fmt(res["best_value"])
            + (f"  (at budget {_fmt(res['best_budget'])})" if res.get("best_budget") is not None else ""),
        ),
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
        print(
            f"\n{'trial':>5}  {res['objective']:>10}  " + (f"{'budget':>6}  " if budgets else "") + "params", file=out
        )
        for t in res["top_trials"]:
            budget = f"{_fmt(1.0 if t.get('budget') is None else t['budget']):>6}  " if budgets else ""
            print(f"{t['number']:>5}  {_fmt(t['value']):>10}  {budget}{_params(t['params'])}", file=out)
        if budgets:
            print(
                "(budget: the fraction of full training a trial had; the best is chosen at the highest budget)",
                file=out,
            )
    if res.get("mlflow_tracking_uri"):
        print(f"\nOpen the runs with: mlflow ui --backend-store-uri {res['mlflow_tracking_uri']}", file=out)


def _check_json_out(path: str | None) -> None:
    """``--json-out`` must be writable before the run starts, not found out after it."""
    if path is None:
        return
    if os.path.isdir(path):
        raise ValueError(f"--json-out {path!r} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"--json-out {path!r}: folder {parent!r} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"--json-out {path!r} is not writable")


class _SigtermAsInterrupt:
    """While active, SIGTERM raises KeyboardInterrupt in the main thread, so the search loop, the
    estimator and the tracking plugin treat it exactly like Ctrl-C. ``signum`` is the last signal."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: Callable[[int, FrameType | None], Any] | int | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)


def cmd_run(args: argparse.Namespace) -> int:
    """``automl-bilevel run``: run an experiment file (or the embedded default) with the command-line
    overrides, print the results and write them to ``--json-out``. Returns 0, or 130/143 after SIGINT/SIGTERM."""
    from automl_bilevel.frontends.experiment import Experiment

    _check_json_out(args.json_out)
    exp = Experiment.load(args.experiment)
    overrides: dict[str, Any] = {}
    if args.n_iter is not None:
        overrides["n_iter"] = args.n_iter
    if args.no_tracking:
        overrides["tracking"] = False
    if args.tracking_uri:
        overrides["tracking_uri"] = args.tracking_uri
    checkpoint = _checkpoint_to_use(args.checkpoint, exp.estimator.get("checkpoint"), args.resume)
    if checkpoint is not None:
        overrides["checkpoint"] = checkpoint
    verbose = 0 if args.quiet else 2 if args.verbose else 1
    with _SigtermAsInterrupt() as sig:
        try:
            res = exp.run(verbose=verbose, overrides=overrides)
        except KeyboardInterrupt:
            print("interrupted before any trial completed; nothing to report", file=sys.stderr)
            return sig.exit_code
        print_results(res)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(res, f, indent=2, default=str)
        return sig.exit_code if res["interrupted"] else 0


def _checkpoint_to_use(given: str | None, in_file: str | None, resume: bool) -> str | None:
    """The checkpoint of a CLI run: ``--checkpoint`` else the experiment file's. A ``--checkpoint`` file that
    already holds trials is continued only with ``--resume`` (never silently; the experiment file's own
    checkpoint is continued as a fit continues it, and the progress says ``resuming: N trials``);
    ``--resume`` needs a checkpoint that exists."""
    path = given or in_file
    if path is None:
        if resume:
            raise ValueError("--resume needs a checkpoint: pass --checkpoint PATH (or set checkpoint in [estimator])")
        return None
    full = Path(path).expanduser()
    has_trials = full.is_file() and full.stat().st_size > 0
    if resume and not has_trials:
        raise ValueError(f"--resume: checkpoint {str(full)!r} does not exist or is empty; there is nothing to resume")
    if given and has_trials and not resume:
        raise ValueError(
            f"checkpoint {str(full)!r} already holds a run: pass --resume to continue it, or another --checkpoint"
        )
    return str(full)


def cmd_sync(args: argparse.Namespace) -> int:
    """``automl-bilevel sync``: write tracking records kept in a local spool to the tracking store; returns 1
    if any spool failed, else 0."""
    from automl_bilevel.plugin.registry import Registry, get_plugin_manager

    pm = get_plugin_manager()
    Registry.from_plugin_manager(pm)  # a plugin whose registration is broken is skipped (and warned about)
    results = [
        r
        for answer in pm.hook.bilevel_sync_spool(path=args.spool, uri=args.tracking_uri, force=args.force)
        if answer
        for r in answer
    ]
    failed = [r for r in results if "error" in r]
    for r in results:
        if "error" in r:
            print(f"FAILED  {r['spool']}: {r['error']}", file=sys.stderr)
        elif "ended" in r:
            print(f"ended   {r['ended']}")
        else:
            print(
                f"synced  run {r['run_id']} ({r['status']}): {r['written']} of {r['trials']} trials written "
                f"now, to {r['uri']}"
            )
    if not results:
        print("nothing to sync")
    else:
        synced = [r for r in results if "run_id" in r]
        print(
            f"sync: {len(synced)} spooled run(s) written ({sum(r['written'] for r in synced)} trials), "
            f"{sum('ended' in r for r in results)} dead run(s) ended, {len(failed)} failed"
        )
    return 1 if failed else 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Write the plots of a checkpoint file or an MLflow run as PNG files."""
    from automl_bilevel import plot

    names = [n.strip() for n in args.plots.split(",") if n.strip()] if args.plots else None
    unknown = sorted(set(names or ()) - set(plot.PLOTS))
    if unknown:
        raise ValueError(f"--plots: unknown plot(s) {unknown}; choose from {', '.join(plot.PLOTS)}")
    written = plot.save_all(args.source, args.out, names=names, timeout=None, tracking_uri=args.tracking_uri)
    for name, what in written.items():
        print(f"{name:22s} {what}")
    return 0 if any(isinstance(w, Path) for w in written.values()) else 1


_PLOT_NAMES = ("history", "importances", "parallel_coordinates", "slice", "contour", "trajectories")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``automl-bilevel`` command and its ``plugins``, ``run`` and ``sync`` subcommands."""
    p = argparse.ArgumentParser(
        prog="automl-bilevel", description="Bilevel hyperparameter optimization and meta-learning."
    )
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
    r.add_argument("-v", "--verbose", action="store_true", help="also one line per trial")
    r.add_argument("--checkpoint", help="append the trials to this JSON-lines file (resume later with --resume)")
    r.add_argument("--resume", action="store_true", help="continue the run in the checkpoint file")
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("sync", help="write tracking records kept locally while the store was unreachable")
    s.add_argument("spool", nargs="?", help="a spool folder (default: the one for the tracking URI)")
    s.add_argument("--tracking-uri", help="write to this store instead of the one each run was started with")
    s.add_argument("--force", action="store_true", help="also write runs whose process still seems alive")
    s.set_defaults(func=cmd_sync)
    pt = sub.add_parser("plot", help="write a run's plots (history, importances, ...) as PNG files")
    pt.add_argument("source", help="a checkpoint file (.jsonl) or an MLflow run id")
    pt.add_argument("--out", default="plots", help="folder for the PNG files (default: ./plots)")
    pt.add_argument("--plots", help=f"comma-separated subset of: {', '.join(_PLOT_NAMES)} (default: the useful ones)")
    pt.add_argument("--tracking-uri", help="the MLflow store of a run id (default: MLFLOW_TRACKING_URI)")
    pt.set_defaults(func=cmd_plot)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The ``automl-bilevel`` entry point: parse ``argv`` (default: ``sys.argv``) and run the subcommand;
    returns its exit code, or 2 after printing a usage or configuration error."""
    args = build_parser().parse_args(argv)
    try:
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except (ValueError, TypeError, FileNotFoundError, ConnectionError, RuntimeError) as exc:
        # the notes say which plugin an error came from (a listener factory that raised): keep them
        notes = "".join(f" {note}" for note in getattr(exc, "__notes__", ()))
        print(f"automl-bilevel: error: {type(exc).__name__}: {exc}{notes}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
