"""The plots (see the package docstring). Matplotlib figures made without pyplot."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from automl_bilevel.core.trials import Trial
from automl_bilevel.plot._source import Trials, categories, is_number, is_tensor, load, log_scaled, numeric_params

MIN_TRIALS = 4  # importances, parallel coordinates, slices and contours need this many completed trials
MAX_LINES = 10  # a tensor with more elements is drawn as a heat map (element x step)


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _robust_limits(values: Sequence[float]) -> tuple[float, float] | None:
    """y limits that keep the bulk of the values visible when a few outliers are far away."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if len(v) < 5:
        return None
    lo, hi = np.percentile(v, [0, 95])
    if hi <= lo or v.max() - hi <= 0.5 * (hi - lo):  # no value far above the bulk: show them all
        return None
    pad = 0.05 * (hi - lo)
    return float(lo - pad), float(hi + pad)


def _value_axis(ax: Any, values: Sequence[float], axis: str = "y") -> int:
    """A log scale for positive values spanning decades, else limits that leave out far outliers;
    returns how many values are beyond the limits."""
    if log_scaled(values):
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        return 0
    limits = _robust_limits(values)
    if limits is None:
        return 0
    (ax.set_ylim if axis == "y" else ax.set_xlim)(*limits)
    return sum(v > limits[1] for v in values)


def _completed(data: Trials, what: str, at_least: int = MIN_TRIALS) -> list[Trial]:
    ok = [t for t in data.trials if t.ok]
    if len(ok) < at_least:
        raise ValueError(f"{what} needs at least {at_least} completed trials; the run has {len(ok)}")
    return ok


def _params(ok: Sequence[Trial], what: str) -> dict[str, list[float]]:
    params = numeric_params(ok)
    if not params:
        raise ValueError(f"{what} needs a hyperparameter whose value varies between trials; none does")
    return params


def _scaled(values: Sequence[float]) -> tuple[np.ndarray, bool]:
    """``values`` on the scale they are read on (log10 for positive ranges spanning decades)."""
    a = np.asarray(values, dtype=float)
    if log_scaled(values):
        return np.log10(a), True
    return a, False


def _title(data: Trials, what: str) -> str:
    return f"{what}: {data.title}" if data.title else what


# -- history --------------------------------------------------------------------------------------
def history(source: Any, *, tracking_uri: str | None = None) -> Any:
    """The objective of every trial (a line for outer steps) and the best so far; failed trials as
    crosses at the bottom; a log axis for positive values spanning decades, else limits at the 95th
    percentile so one outlier does not flatten the rest (the title says how many are above)."""
    data = load(source, tracking_uri=tracking_uri)
    trials = data.trials
    if not trials:
        raise ValueError("history needs at least one trial; the run has none")
    fig = _figure(7, 4.2)
    ax = fig.add_subplot()
    ok = [t for t in trials if t.ok]
    xs, ys = [t.number for t in ok], [t.value for t in ok]
    budgets = {t.budget for t in ok}
    if data.steps:
        ax.plot(xs, ys, lw=1, color="C0", label=data.objective)
    elif len(budgets) > 1:  # multi-fidelity: colour by the budget each trial had
        sc = ax.scatter(xs, ys, s=14, c=[t.budget or 1.0 for t in ok], cmap="viridis", label="trial")
        fig.colorbar(sc, ax=ax, label="budget (fraction of full training)")
    else:
        ax.scatter(xs, ys, s=14, alpha=0.7, color="C0", label="trial")
    best, cur = [], math.inf
    for t in trials:
        cur = min(cur, t.value) if t.ok else cur
        best.append(cur)
    if data.steps:
        ax.plot([t.number for t in trials], best, color="C3", lw=1.5, ls="--", label="best so far")
    else:
        ax.step([t.number for t in trials], best, where="post", color="C3", lw=1.8, label="best so far")
    failed = [t.number for t in trials if not t.ok]
    if failed:
        ax.scatter(failed, [min(ys) if ys else 0.0] * len(failed), marker="x", color="k", label="failed")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    above = _value_axis(ax, ys)
    title = _title(data, "Optimization history")
    ax.set_title(title + (f" ({above} above the plot)" if above else ""), fontsize=10)
    ax.set_xlabel("outer step" if data.steps else "trial")
    ax.set_ylabel(f"{data.objective} (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# -- importances ----------------------------------------------------------------------------------
def _importance_values(ok: Sequence[Trial], params: Mapping[str, list[float]]) -> dict[str, float]:
    from sklearn.ensemble import RandomForestRegressor

    cols = []
    for col in params.values():
        a, _ = _scaled(col)
        fill = np.nanmin(a) - 1.0 if np.isfinite(a).any() else 0.0
        cols.append(np.where(np.isnan(a), fill, a))  # an unset (conditional) value is a value of its own
    X = np.column_stack(cols)
    y = np.asarray([t.value for t in ok], dtype=float)
    rf = RandomForestRegressor(n_estimators=64, max_depth=64, random_state=0).fit(X, y)
    return dict(zip(params, (float(v) for v in rf.feature_importances_), strict=True))


def importances(source: Any, *, tracking_uri: str | None = None) -> Any:
    """How much of the objective's variation each hyperparameter explains: a random forest fitted to
    the completed trials (log10 of hyperparameters that span decades), its mean decrease in impurity
    normalised to sum to 1, as Optuna's ``MeanDecreaseImpurityImportanceEvaluator``."""
    data = load(source, tracking_uri=tracking_uri)
    ok = _completed(data, "importances")
    params = _params(ok, "importances")
    imp = sorted(_importance_values(ok, params).items(), key=lambda kv: kv[1])
    fig = _figure(6.5, 1.2 + 0.45 * len(imp))
    ax = fig.add_subplot()
    bars = ax.barh([k for k, _ in imp], [v for _, v in imp], color="C0")
    ax.bar_label(bars, labels=[f"{v:.2f}" for _, v in imp], padding=3, fontsize=8)
    ax.set_xlim(0, max(v for _, v in imp) * 1.2 or 1.0)
    ax.set_xlabel(f"importance for {data.objective} (random forest, mean decrease in impurity)")
    ax.set_title(_title(data, f"Hyperparameter importances ({len(ok)} trials)"), fontsize=10)
    return fig


# -- parallel coordinates -------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:.3g}"


def parallel_coordinates(source: Any, *, tracking_uri: str | None = None) -> Any:
    """Every completed trial as a line through one vertical axis per hyperparameter and the objective,
    coloured by its objective (darker is better); the best trial in red. Each axis runs from its
    smallest to its largest value (log10 where the range spans decades), labelled at both ends."""
    data = load(source, tracking_uri=tracking_uri)
    ok = _completed(data, "parallel_coordinates")
    params = _params(ok, "parallel_coordinates")
    values = [t.value for t in ok]
    names = [*params, data.objective]
    columns = [*params.values(), values]
    fig = _figure(max(6.0, 1.6 * len(names)), 4.6)
    ax = fig.add_subplot()
    normed, labels = [], []
    for name, col in zip(names, columns, strict=True):
        a, logged = _scaled(col)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        span = hi - lo or 1.0
        normed.append((a - lo) / span)
        cats = categories(ok, name) if name in params else None
        if cats is not None:
            labels.append((cats[0], cats[-1]))
        elif logged:
            labels.append((_fmt(10**lo), _fmt(10**hi)))
        else:
            labels.append((_fmt(lo), _fmt(hi)))
    Y = np.column_stack(normed)
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    limits = _robust_limits(values) or (min(values), max(values))
    norm = Normalize(vmin=limits[0], vmax=limits[1])
    cmap = colormaps["viridis"]
    order = np.argsort(values)[::-1]  # the best drawn last, on top
    x = np.arange(len(names))
    for i in order:
        ax.plot(x, Y[i], color=cmap(norm(values[i])), alpha=0.65, lw=1)
    best = int(np.argmin(values))
    ax.plot(x, Y[best], color="C3", lw=2.5, label=f"best (trial {ok[best].number})")
    for i, (lo_label, hi_label) in enumerate(labels):
        ax.vlines(i, 0, 1, color="k", lw=0.8)
        ax.text(i, -0.03, lo_label, ha="center", va="top", fontsize=8)
        ax.text(i, 1.03, hi_label, ha="center", va="bottom", fontsize=8)
        cats = categories(ok, names[i]) if names[i] in params else None
        if cats is not None and 2 < len(cats) <= 12:  # the categories between the ends, at their places
            for j, label in enumerate(cats[1:-1], start=1):
                ax.text(
                    i + 0.03,
                    j / (len(cats) - 1),
                    label,
                    ha="left",
                    va="center",
                    fontsize=7,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
                )
    ax.set_xticks(x, [f"{n}\n(log)" if log_scaled(c) else n for n, c in zip(names, columns, strict=True)])
    ax.tick_params(axis="x", length=0, pad=4)
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.12)
    ax.set_xlim(-0.3, len(names) - 0.7)
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"{data.objective} (lower is better)")
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.16), fontsize=8, frameon=False)
    ax.set_title(_title(data, f"Parallel coordinates ({len(ok)} trials)"), fontsize=10, pad=18)
    return fig


# -- slice ----------------------------------------------------------------------------------------
def slice(source: Any, *, tracking_uri: str | None = None) -> Any:
    """The objective against each hyperparameter (one panel each, shared y axis), points coloured by
    trial number so that where the search went late shows; log x axes for ranges spanning decades."""
    data = load(source, tracking_uri=tracking_uri)
    ok = _completed(data, "slice")
    params = _params(ok, "slice")
    values = [t.value for t in ok]
    n = len(params)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = _figure(3.4 * ncols + 0.8, 3.0 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    sc = None
    for k, (name, col) in enumerate(params.items()):
        ax = axes[k // ncols][k % ncols]
        cats = categories(ok, name)
        x = np.asarray(col, dtype=float)
        if cats is not None:  # spread the points of a category a little, so that they do not hide each other
            x = x + np.random.default_rng(0).uniform(-0.15, 0.15, len(x))
        sc = ax.scatter(x, values, c=[t.number for t in ok], cmap="Blues", edgecolors="0.3", linewidths=0.4, s=22)
        if cats is not None:
            ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize=8)
        elif log_scaled(col):
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
        if k % ncols == 0:
            ax.set_ylabel(f"{data.objective}")
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    above = _value_axis(axes[0][0], values)
    if sc is not None:
        fig.colorbar(sc, ax=axes, label="trial", shrink=0.9)
    fig.suptitle(_title(data, "Slice") + (f" ({above} above the plot)" if above else ""), fontsize=10)
    return fig


# -- contour --------------------------------------------------------------------------------------
def contour(source: Any, params: Sequence[str] | None = None, *, tracking_uri: str | None = None) -> Any:
    """The objective over two hyperparameters (``params``; default: the two most important), interpolated
    between the trials (a triangulation; log10 axes where ranges span decades), the trials as dots, the
    best as a red star."""
    data = load(source, tracking_uri=tracking_uri)
    ok = _completed(data, "contour")
    numeric = _params(ok, "contour")
    if params is None:
        if len(numeric) < 2:
            raise ValueError(f"contour needs two hyperparameters that vary; the run has {list(numeric)}")
        imp = _importance_values(ok, numeric)
        params = sorted(numeric, key=lambda k: -imp[k])[:2]
    if len(params) != 2 or len(set(params)) != 2:
        raise ValueError(f"contour: params must name two different hyperparameters, got {list(params)!r}")
    missing = [p for p in params if p not in numeric]
    if missing:
        raise ValueError(
            f"contour: {missing} do not vary between the trials (or do not exist): use two of {list(numeric)}"
        )
    a, b = params
    xa, xlog = _scaled(numeric[a])
    yb, ylog = _scaled(numeric[b])
    z = np.asarray([t.value for t in ok], dtype=float)
    keep = np.isfinite(xa) & np.isfinite(yb)
    xa, yb, z = xa[keep], yb[keep], z[keep]
    limits = _robust_limits(list(z)) or (float(z.min()), float(z.max()))
    fig = _figure(6.4, 5.0)
    ax = fig.add_subplot()
    from matplotlib.tri import Triangulation

    try:
        # triangulate on unit-scaled coordinates: the two axes' units are unrelated
        sx, sy = (np.ptp(xa) or 1.0), (np.ptp(yb) or 1.0)
        tri = Triangulation(xa / sx, yb / sy)
        tri.x, tri.y = xa, yb
        levels = np.linspace(limits[0], limits[1], 15)
        cs = ax.tricontourf(tri, np.clip(z, limits[0], limits[1]), levels=levels, cmap="viridis")
        fig.colorbar(cs, ax=ax, label=f"{data.objective} (lower is better)")
    except (ValueError, RuntimeError):  # collinear or too few distinct points: the points only
        sc = ax.scatter(xa, yb, c=z, cmap="viridis", s=40)
        fig.colorbar(sc, ax=ax, label=data.objective)
    ax.scatter(xa, yb, s=10 if len(z) <= 300 else 3, color="k", alpha=0.7, label="trial")
    best = int(np.argmin(z))
    ax.scatter([xa[best]], [yb[best]], marker="*", s=220, color="C3", edgecolors="w", label="best")
    from matplotlib.ticker import FuncFormatter

    for logged, axis, name in ((xlog, ax.xaxis, a), (ylog, ax.yaxis, b)):
        if logged:
            axis.set_major_formatter(FuncFormatter(lambda v, _pos: _fmt(10**v)))
        cats = categories(ok, name)
        if cats is not None:
            axis.set_ticks(range(len(cats)), cats)
    ax.set_xlabel(a + (" (log scale)" if xlog else ""))
    ax.set_ylabel(b + (" (log scale)" if ylog else ""))
    ax.legend(fontsize=8, loc="best")
    ax.set_title(_title(data, f"Contour ({len(z)} trials)"), fontsize=10)
    return fig


# -- trajectories ---------------------------------------------------------------------------------
def _series(trials: Sequence[Trial]) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Scalar hyperparameters per step, and tensors as (step x element) arrays."""
    scalars: dict[str, list[float]] = {}
    tensors: dict[str, list[np.ndarray]] = {}
    names: dict[str, None] = {}
    for t in trials:
        names.update(dict.fromkeys(t.config))
    for name in names:
        first = next(t.config[name] for t in trials if name in t.config)
        if is_tensor(first):
            rows = [np.ravel(np.asarray(t.config.get(name, np.nan), dtype=float)) for t in trials]
            width = max(r.size for r in rows)
            tensors[name] = [r if r.size == width else np.full(width, np.nan) for r in rows]
        elif is_number(first):
            col = [float(t.config.get(name, math.nan)) for t in trials]
            if len({v for v in col if math.isfinite(v)}) > 1:  # moved by the gradient
                scalars[name] = col
    return scalars, {k: np.vstack(v) for k, v in tensors.items() if np.nanstd(np.vstack(v), axis=0).max() > 0}


def trajectories(source: Any, *, tracking_uri: str | None = None) -> Any:
    """The hyperparameters a gradient method moved, per outer step: one panel per scalar (log axis when
    it spans decades) and one per tensor hyperparameter: a line per element up to ten elements, else a
    heat map of every element (rows) over the steps (columns) with the elements' median beside it."""
    data = load(source, tracking_uri=tracking_uri)
    trials = list(data.trials)
    if len(trials) < 2:
        raise ValueError(f"trajectories need at least 2 steps; the run has {len(trials)}")
    scalars, tensors = _series(trials)
    if not scalars and not tensors:
        raise ValueError("trajectories: no hyperparameter changed between the steps")
    steps = np.asarray([t.number for t in trials])
    panels = len(scalars) + len(tensors)
    ncols = min(panels, 2)
    nrows = math.ceil(panels / ncols)
    fig = _figure(5.2 * ncols + 0.6, 3.3 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = [ax for row in axes for ax in row]
    xlabel = "outer step" if data.steps else "trial"
    for ax, (name, col) in zip(flat, scalars.items(), strict=False):
        ax.plot(steps, col, lw=1.5, color="C0")
        if log_scaled(col):
            ax.set_yscale("log")
        ax.set_title(f"{name}: {_fmt(col[0])} -> {_fmt(col[-1])}", fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    for ax, (name, arr) in zip(flat[len(scalars) :], tensors.items(), strict=False):
        n_el = arr.shape[1]
        if n_el <= MAX_LINES:
            for j in range(n_el):
                ax.plot(steps, arr[:, j], lw=1.2, label=f"{name}[{j}]")
            ax.legend(fontsize=7, ncol=2)
            if log_scaled(list(arr.ravel())):
                ax.set_yscale("log")
            ax.set_title(f"{name} ({n_el} elements)", fontsize=9)
        else:
            from matplotlib.colors import LogNorm, Normalize

            finite = arr[np.isfinite(arr)]
            norm = (
                LogNorm(vmin=finite.min(), vmax=finite.max())
                if log_scaled(list(finite))
                else Normalize(vmin=finite.min(), vmax=finite.max())
            )
            im = ax.imshow(
                arr.T,
                aspect="auto",
                origin="lower",
                interpolation="nearest",
                cmap="magma",
                norm=norm,
                extent=(steps[0] - 0.5, steps[-1] + 0.5, -0.5, n_el - 0.5),
            )
            fig.colorbar(im, ax=ax, label=name)
            ax.set_ylabel("element")
            moved = np.abs(arr[-1] - arr[0])
            ax.set_title(
                f"{name}: {n_el} elements per step (median {_fmt(float(np.nanmedian(arr[-1])))}, "
                f"largest move {_fmt(float(np.nanmax(moved)))})",
                fontsize=9,
            )
        ax.set_xlabel(xlabel)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.suptitle(_title(data, "Hyperparameter trajectories"), fontsize=10)
    return fig


PLOTS: dict[str, Callable[..., Any]] = {
    "history": history,
    "importances": importances,
    "parallel_coordinates": parallel_coordinates,
    "slice": slice,
    "contour": contour,
    "trajectories": trajectories,
}


def useful(data: Trials) -> list[str]:
    """The plots worth drawing for a run: its history, then trajectories for outer steps, else the four
    views of a search space."""
    if data.steps:
        return ["history", "trajectories"]
    return ["history", "importances", "parallel_coordinates", "slice", "contour"]


def save_all(
    source: Any,
    folder: str | Path,
    *,
    names: Sequence[str] | None = None,
    timeout: float | None = 30.0,
    tracking_uri: str | None = None,
    dpi: int = 100,
) -> dict[str, Path | str]:
    """Write the plots (``names``; default the useful ones for the run) as ``<name>.png`` into ``folder``.
    Returns, per plot, the file written or why there is none (too few trials, out of time); a plot is
    not started once ``timeout`` seconds have passed."""
    data = load(source, tracking_uri=tracking_uri)
    unknown = sorted(set(names or ()) - set(PLOTS))
    if unknown:
        raise ValueError(f"unknown plot(s) {unknown}; choose from {sorted(PLOTS)}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    done: dict[str, Path | str] = {}
    for name in names or useful(data):
        if deadline is not None and time.monotonic() > deadline:
            done[name] = f"skipped: the {timeout:g} s for plots were used up"
            continue
        try:
            fig = PLOTS[name](data)
        except ValueError as exc:
            done[name] = f"skipped: {exc}"
            continue
        path = out / f"{name}.png"
        fig.savefig(str(path), dpi=dpi)
        done[name] = path
    return done
