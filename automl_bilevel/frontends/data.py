"""Dataset loaders: scikit-learn's bundled sets and MNIST / Fashion-MNIST from IDX gzip files.

IDX files are found, in order, in: the ``data_dir`` argument; ``$AUTOML_BILEVEL_DATA``; the
standard locations (``/usr/share/datasets/<name>``, Debian's ``dataset-fashion-mnist`` package);
``shared/data`` beside or inside a source checkout. Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

DATA_ENV = "AUTOML_BILEVEL_DATA"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_DATASETS = ("mnist", "fashion-mnist")
SKLEARN_DATASETS = {
    "digits": "classification",
    "iris": "classification",
    "wine": "classification",
    "breast_cancer": "classification",
    "diabetes": "regression",
}
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where we looked; the message says where we looked and what to do."""


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (gzip-compressed or plain) into an array of its stored shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    dtype = _IDX_DTYPES[data[2]]
    body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {body.size} values (truncated file?)")
    return body.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def candidate_dirs(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where to look. A ``data_dir`` given is the only place: a wrong one must not silently fall
    back to another copy of the data."""
    if data_dir is not None:
        return [Path(data_dir), Path(data_dir) / name]
    roots: list[Path] = []
    if os.environ.get(DATA_ENV):
        roots += [Path(os.environ[DATA_ENV]) / name, Path(os.environ[DATA_ENV])]
    roots.append(Path("/usr/share/datasets") / name)
    here = Path(__file__).resolve().parents[2]  # the folder holding automl_bilevel/
    for base in (here, Path.cwd()):
        roots += [base / "shared" / "data" / name, base.parent / "shared" / "data" / name]
    seen: set[Path] = set()
    out: list[Path] = []
    for r in roots:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def find_idx_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the four IDX files of dataset ``name`` (e.g. ``fashion-mnist``), searched in
    :func:`candidate_dirs`. Raises ``ValueError`` for an unknown name, ``DatasetNotFoundError`` with where it
    looked and how to fix it when the files are not found."""
    if name not in IDX_DATASETS:
        raise ValueError(f"unknown IDX dataset {name!r}; known: {', '.join(IDX_DATASETS)}")
    needed = [f for pair in IDX_FILES.values() for f in pair]
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DatasetNotFoundError(
            f"data_dir {str(data_dir)!r} is not a folder; pass the folder that holds the "
            f"{name} IDX files ({', '.join(needed)}) or one holding {name}/ with them"
        )
    looked = candidate_dirs(name, data_dir)
    for d in looked:
        if all((d / f).is_file() for f in needed):
            return d
    hint = "install Debian's dataset-fashion-mnist package, or " if name == "fashion-mnist" else ""
    raise DatasetNotFoundError(
        f"{name} IDX files ({', '.join(needed)}) not found. Looked in:\n  "
        + "\n  ".join(map(str, looked))
        + f"\nTo fix: {hint}put the four files in a folder and pass data_dir=FOLDER or set {DATA_ENV}=FOLDER "
        f"(a folder holding them, or one holding {name}/ with them)."
    )


def load_idx_dataset(
    name: str = "mnist", split: str = "train", data_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 and labels (n,) of MNIST or Fashion-MNIST."""
    if split not in IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = find_idx_dir(name, data_dir)
    images, labels = (read_idx(folder / f) for f in IDX_FILES[split])
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels")
    return images, labels.astype(np.int64)


def load_csv(path: str | os.PathLike[str], target: str | None = None) -> tuple[Any, np.ndarray, str]:
    """A CSV file with a header row: the feature columns and the target (the column named ``target``,
    else the last). The separator is detected (comma, semicolon, tab, ...). Problems are reported by
    column name. Numeric features without missing values come back as an array; a table with text
    columns or missing values as a pandas DataFrame, which the estimators encode and impute
    (``preprocess='auto'``, :mod:`automl_bilevel.frontends.tabular`)."""
    import csv

    import pandas as pd

    from automl_bilevel.frontends.tabular import needs_preprocessing

    head = Path(path).read_text(errors="replace")[:8192]
    if not head.strip():
        raise ValueError(f"{path}: the file is empty")
    try:
        sep = csv.Sniffer().sniff(head, delimiters=",;\t|").delimiter
    except csv.Error:  # one column: no separator to detect
        sep = ","
    try:
        df = pd.read_csv(path, sep=sep)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV file: {exc}") from None
    if df.shape[1] < 2:
        raise ValueError(
            f"{path}: found {df.shape[1]} column ({', '.join(map(str, df.columns))}); it needs at "
            "least one feature column and the target as the last column (the separator is detected: "
            "comma, semicolon or tab)"
        )
    if len(df) == 0:
        raise ValueError(f"{path}: only a header row, no data rows")
    if target is None:
        target = df.columns[-1]
    elif target not in df.columns:
        raise ValueError(
            f"{path}: [data] target = {target!r} is not a column; the columns are {', '.join(map(repr, df.columns))}"
        )
    features = [c for c in df.columns if c != target]
    if df[target].isna().any():
        raise ValueError(
            f"{path}: target column {str(target)!r} has missing values "
            f"(first in row {int(df[target].isna().to_numpy().argmax()) + 2} of the file); drop those rows"
        )
    X: Any = df[features]
    if not needs_preprocessing(X):
        X = X.to_numpy(dtype=np.float64)
    y = df[target].to_numpy()
    if not pd.api.types.is_numeric_dtype(df[target]):
        return X, y.astype(str), "classification"  # text labels
    y = y.astype(np.float64)
    task = "classification" if np.all(y == np.round(y)) and len(np.unique(y)) <= 50 else "regression"
    return X, y, task


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    target: str | None = None,
) -> tuple[Any, np.ndarray, str]:
    """(X, y, task kind) for a named dataset or a CSV path (the ``target`` column, else the last), for the
    CLI. X is a DataFrame for a CSV with text columns or missing values (see :func:`load_csv`)."""
    if target is not None and not str(name).endswith(".csv"):
        raise ValueError(f"[data] target = {target!r} names a column of a CSV file; dataset {name!r} is not one")
    if max_samples is not None and (
        not isinstance(max_samples, (int, np.integer)) or isinstance(max_samples, bool) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be an integer >= 1, got {max_samples!r}")
    if name in SKLEARN_DATASETS:
        import sklearn.datasets as skd

        X, y = getattr(skd, f"load_{name}")(return_X_y=True)
        task = SKLEARN_DATASETS[name]
    elif name in IDX_DATASETS:
        X, y = load_idx_dataset(name, "train", data_dir)
        X = X.reshape(len(X), -1).astype(np.float32) / 255.0
        task = "classification"
    elif str(name).endswith(".csv") and Path(name).is_file():
        X, y, task = load_csv(name, target)
    elif str(name).endswith(".csv"):
        raise DatasetNotFoundError(f"CSV file {name!r} does not exist")
    else:
        raise ValueError(
            f"unknown dataset {name!r}; use one of {sorted(SKLEARN_DATASETS) + list(IDX_DATASETS)} "
            "or a path to a .csv file (last column is the target)"
        )
    if max_samples is not None and max_samples < len(X):
        idx = np.random.default_rng(seed).permutation(len(X))[:max_samples]
        X, y = (X.iloc[idx] if hasattr(X, "iloc") else X[idx]), y[idx]
    return X, y, task
