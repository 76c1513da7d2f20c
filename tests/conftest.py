"""Test settings: MLflow never writes into the working tree and never phones home."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from sklearn.datasets import load_digits, load_iris

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.pop("AUTOML_BILEVEL_DISABLE_PLUGINS", None)
_STORE_DIR = tempfile.mkdtemp(prefix="automl-bilevel-tests-")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_STORE_DIR}/mlflow.db"

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = ROOT / "examples" / "thirdparty_plugin"


@pytest.fixture
def digits(request):
    """scikit-learn's digits: ``(X, y)``, or a slice a test module declares as ``DIGITS = {...}``:
    ``n`` (the first n samples), ``val`` (then also the next ``val`` samples: ``X, y, X_val, y_val``),
    ``scaled`` (pixels in [0, 1]) and ``images`` (shaped ``(N, 8, 8)``)."""
    spec = getattr(request.module, "DIGITS", {})
    X, y = load_digits(return_X_y=True)
    if spec.get("scaled"):
        X = X / 16.0
    if spec.get("images"):
        X = X.reshape(-1, 8, 8)
    n, val = spec.get("n"), spec.get("val")
    if val:
        return X[:n], y[:n], X[n : n + val], y[n : n + val]
    return (X[:n], y[:n]) if n else (X, y)


@pytest.fixture
def iris():
    """scikit-learn's iris, ``(X, y)``."""
    return load_iris(return_X_y=True)


@pytest.fixture
def tracking(request):
    """(tracking_uri, experiment_name): a real SQLite store, one experiment per test."""
    return os.environ["MLFLOW_TRACKING_URI"], f"test-{request.node.name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """Make an installed distribution with entry points in the automl_bilevel group.

    ``fake_dist(name, {ep_name: "module"}, modules={"module": "source"})`` writes a
    ``.dist-info`` folder (what pip writes) on a temporary ``sys.path`` entry, so the host finds the
    plugin through importlib.metadata exactly as it would after ``pip install``.
    """
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(name, entry_points, modules=None, extra_path=None, version="0.1.0"):
        info = tmp_path / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(
            "[automl_bilevel]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
        )
        for mod, src in (modules or {}).items():
            (tmp_path / f"{mod}.py").write_text(src)
        if extra_path:
            monkeypatch.syspath_prepend(str(extra_path))
        for mod in list(modules or {}):
            sys.modules.pop(mod, None)
        return info

    return make
