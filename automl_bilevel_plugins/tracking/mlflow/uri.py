"""Where runs go and whether the store can be used: checked before any work is done."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from automl_bilevel_plugins.tracking.mlflow.store import TrackingError

DEFAULT_URI = "sqlite:///mlflow.db"
SPOOL_ENV = "AUTOML_BILEVEL_SPOOL_DIR"


def resolve_uri(uri: str | None) -> str:
    """The tracking URI: ``uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


def check_reachable(uri: str) -> None:
    """Fail fast, with a clear message, when the store at ``uri`` cannot be used."""
    hint = "pass tracking_uri=..., set MLFLOW_TRACKING_URI, or tracking=False"
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            r = requests.get(uri.rstrip("/") + "/health", timeout=5)
        except requests.RequestException as exc:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({type(exc).__name__}); "
                f"start one with mlflow/start_server.sh, or {hint}"
            ) from exc
        if r.status_code != 200:
            raise TrackingError(f"MLflow tracking server {uri} answered /health with HTTP {r.status_code}; {hint}")
        return
    path = _sqlite_path(uri)
    if uri.startswith("sqlite:") and (path is None or str(path) in ("", ".", ":memory:")):
        raise TrackingError(
            f"MLflow store {uri!r} names no database file (an in-memory SQLite store is gone with the process, "
            f"and the runs with it): use sqlite:///path/to/mlflow.db; {hint}"
        )
    if path is not None:
        if path.is_dir():
            raise TrackingError(f"MLflow store {uri}: {str(path)!r} is a folder, not a database file; {hint}")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise TrackingError(f"MLflow store {uri}: folder {str(parent)!r} does not exist; {hint}")
        # os.access says yes to root even on a read-only mount: try to create a file instead
        try:
            fd, probe = tempfile.mkstemp(prefix=".automl-bilevel-probe-", dir=parent)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise TrackingError(
                f"MLflow store {uri}: folder {str(parent)!r} is not writable ({exc.strerror}); {hint}"
            ) from None
        if path.exists() and not os.access(path, os.W_OK):
            raise TrackingError(f"MLflow store {uri}: file {str(path)!r} is not writable; {hint}")
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(f"MLflow store {uri} cannot be used: {type(exc).__name__}: {exc}; {hint}") from exc


def spool_root(uri: str) -> Path:
    """Where runs that could not be written yet are kept (see the module docstring)."""
    if os.environ.get(SPOOL_ENV):
        return Path(os.environ[SPOOL_ENV])
    path = _sqlite_path(uri)
    if path is not None:
        return (path.parent if str(path.parent) else Path(".")).resolve() / "mlflow-spool"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "automl_bilevel" / "spool"
