"""automl_bilevel.plot: each plot from each kind of source, drawn from real runs and from trials whose
answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.datasets import load_iris

from automl_bilevel import BilevelClassifier, Trial, plot
from automl_bilevel.frontends.cli import main


def _known(n: int = 40) -> list[Trial]:
    """The objective depends on lr only (a bowl in log10 lr); ``noise`` and ``act`` do not matter."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        lr = float(10 ** rng.uniform(-4, 0))
        cfg = {"lr": lr, "noise": float(rng.uniform(0, 1)), "act": str(rng.choice(["relu", "tanh"]))}
        out.append(Trial(i, cfg, (math.log10(lr) + 2) ** 2 + 0.1))
    out.append(Trial(n, {"lr": 0.1, "noise": 0.5, "act": "relu"}, math.nan, status="FAILED", error="diverged"))
    return out


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    ck = tmp_path_factory.mktemp("ck") / "ck.jsonl"
    est = BilevelClassifier(n_iter=8, random_state=0, tracking=False, checkpoint=str(ck)).fit(
        *load_iris(return_X_y=True)
    )
    return est, ck


def test_every_plot_is_a_figure_from_a_list_of_trials():
    trials = _known()
    for name, fn in plot.PLOTS.items():
        fig = fn(trials)
        assert isinstance(fig, Figure), name
        assert fig.axes, name


def test_importances_find_the_hyperparameter_that_matters():
    fig = plot.importances(_known())
    ax = fig.axes[0]
    widths = {t.get_text(): p.get_width() for t, p in zip(ax.get_yticklabels(), ax.patches, strict=True)}
    assert set(widths) == {"lr", "noise", "act"}
    assert widths["lr"] > 0.8 and widths["lr"] > 5 * max(widths["noise"], widths["act"])
    assert sum(widths.values()) == pytest.approx(1.0)


def test_history_marks_the_best_so_far_and_the_failed_trial():
    trials = _known()
    ax = plot.history(trials).axes[0]
    best_line = next(line for line in ax.get_lines() if line.get_label() == "best so far")
    ys = best_line.get_ydata()
    assert np.all(np.diff(ys) <= 0) and ys[-1] == pytest.approx(min(t.value for t in trials if t.ok))
    assert any(c.get_label() == "failed" for c in ax.collections)
    assert ax.get_xlabel() == "trial"


def test_slice_and_contour_use_log_axes_for_ranges_spanning_decades():
    fig = plot.slice(_known())
    lr_ax = next(a for a in fig.axes if a.get_xlabel() == "lr")
    assert lr_ax.get_xscale() == "log"
    ax = plot.contour(_known(), params=("lr", "noise")).axes[0]
    assert ax.get_xlabel() == "lr (log scale)" and ax.get_ylabel() == "noise"
    with pytest.raises(ValueError, match="two different hyperparameters"):
        plot.contour(_known(), params=("lr",))
    with pytest.raises(ValueError, match="do not vary"):
        plot.contour(_known(), params=("lr", "nope"))


def test_trajectories_draw_scalars_and_tensors_per_step():
    steps = [
        Trial(
            i, {"lr": 0.1 * (1 + i), "w3": [i, 2 * i, 3.0], "w50": np.linspace(0, i, 50), "fixed": 1.0}, 1.0 / (i + 1)
        )
        for i in range(6)
    ]
    fig = plot.trajectories(plot.Trials(tuple(steps), "loss", steps=True))
    titles = [a.get_title() for a in fig.axes]
    assert any(t.startswith("lr: 0.1 -> 0.6") for t in titles)
    w3 = next(a for a in fig.axes if a.get_title().startswith("w3"))
    lines = {line.get_label(): line.get_ydata() for line in w3.get_lines()}  # one line per element
    assert list(lines) == ["w3[0]", "w3[1]", "w3[2]"]
    np.testing.assert_allclose(lines["w3[1]"], [2.0 * i for i in range(6)])
    w50 = next(a for a in fig.axes if a.get_title().startswith("w50"))
    assert w50.images and w50.images[0].get_array().shape == (50, 6)  # element x step
    assert not any(t.startswith("fixed") for t in titles)
    assert w50.get_xlabel() == "outer step"


def test_too_few_trials_and_bad_sources_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ValueError, match="at least 4 completed trials; the run has 2"):
        plot.importances(_known()[:2])
    with pytest.raises(ValueError, match="neither a checkpoint file nor an MLflow run id"):
        plot.history(str(tmp_path / "missing.jsonl"))
    with pytest.raises(TypeError, match="Trial records"):
        plot.history([1, 2])
    with pytest.raises(ValueError, match="not fitted"):
        plot.history(BilevelClassifier())
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(ValueError, match="not an automl_bilevel checkpoint"):
        plot.history(tmp_path / "x.jsonl")


def test_an_estimator_and_its_checkpoint_give_the_same_trials(fitted, tmp_path):
    est, ck = fitted
    a, b = plot.load(est), plot.load(ck)
    assert [t.value for t in a.trials] == pytest.approx([t.value for t in b.trials])
    assert (a.objective, b.objective) == ("val_loss", "val_loss") and not a.steps and not b.steps
    written = plot.save_all(ck, tmp_path / "out", timeout=None)
    assert set(written) == {"history", "importances", "parallel_coordinates", "slice", "contour"}
    assert all(p.stat().st_size > 5000 for p in written.values())


def test_cli_plot_writes_pngs_and_refuses_unknown_names(fitted, tmp_path, capsys):
    _, ck = fitted
    assert main(["plot", str(ck), "--out", str(tmp_path / "p"), "--plots", "history,slice"]) == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["history.png", "slice.png"]
    assert main(["plot", str(ck), "--plots", "histogram"]) == 2
    assert "unknown plot(s) ['histogram']" in capsys.readouterr().err


def test_a_tracked_run_logs_its_plots_and_plots_from_its_run_id(tracking, tmp_path):
    from mlflow import MlflowClient

    uri, experiment = tracking
    X, y = load_iris(return_X_y=True)
    est = BilevelClassifier(n_iter=6, random_state=0, tracking_uri=uri, experiment_name=experiment).fit(X, y)
    client = MlflowClient(uri)
    names = {a.path for a in client.list_artifacts(est.mlflow_run_id_, "plots")}
    assert names == {f"plots/{n}.png" for n in ("importances", "parallel_coordinates", "slice", "contour")}
    data = plot.load(est.mlflow_run_id_, tracking_uri=uri)
    assert [t.value for t in data.trials] == pytest.approx([t.value for t in est.trials_])
    assert data.objective == "val_loss" and data.title == "logistic / random"
    off = BilevelClassifier(n_iter=2, random_state=0, tracking_uri=uri, experiment_name=experiment, log_plots=False)
    off.fit(X, y)
    top = {a.path for a in client.list_artifacts(off.mlflow_run_id_)}
    assert "plots" not in top and "optimization_trace.png" not in top and "trials.json" in top


def test_meta_training_curves_from_a_meta_learner():
    from sklearn.datasets import load_digits

    from automl_bilevel import MetaLearnerClassifier

    X, y = load_digits(return_X_y=True)
    est = MetaLearnerClassifier(
        "protonet",
        method_params={"width": 8, "depth": 2},
        n_way=3,
        k_shot=1,
        q_queries=3,
        meta_iters=6,
        val_fraction=0.3,
        val_every=3,
        val_episodes=4,
        tracking=False,
        random_state=0,
    ).fit((X / 16.0).reshape(-1, 8, 8), y)
    data = plot.load(est)
    assert data.steps and data.objective == "query_loss" and len(data.trials) == 6
    ax = plot.history(est).axes[0]
    assert ax.get_xlabel() == "outer step" and ax.get_ylabel().startswith("query_loss")


def test_a_plot_that_breaks_costs_neither_the_model_nor_the_run(tracking, monkeypatch):
    from mlflow import MlflowClient

    uri, experiment = tracking

    def boom(*args, **kwargs):
        raise RuntimeError("a broken backend")

    monkeypatch.setitem(plot.PLOTS, "importances", boom)
    with pytest.warns(RuntimeWarning, match="a plot could not be drawn: RuntimeError: a broken backend"):
        est = BilevelClassifier(n_iter=5, random_state=0, tracking_uri=uri, experiment_name=experiment).fit(
            *load_iris(return_X_y=True)
        )
    client = MlflowClient(uri)
    run = client.get_run(est.mlflow_run_id_)
    assert run.info.status == "FINISHED"
    assert [m.name for m in client.search_logged_models([run.info.experiment_id])] == ["model"]


def test_trajectories_of_an_online_run_are_its_schedule():
    """The ``online`` optimizer's schedule (one trial per update) drawn as trajectories: each tuned value
    per update, ending at the final values the estimator keeps."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    est = BilevelClassifier(
        "mlp", "val_loss", "online", n_iter=8, learner_params={"epochs": 4}, tracking=False, random_state=0
    ).fit(X[:600], y[:600])
    fig = plot.trajectories(est)
    panels = {a.get_title().split(":")[0]: a for a in fig.axes}
    assert {"lr", "weight_decay"} <= set(panels)
    for name in ("lr", "weight_decay"):
        ys = panels[name].get_lines()[0].get_ydata()
        assert len(ys) == len(est.schedule_) == 8
        assert ys[-1] == pytest.approx(est.best_params_[name])
