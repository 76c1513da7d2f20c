"""Tables with text (categorical) columns and missing values: a scikit-learn ``ColumnTransformer`` that
one-hot encodes the categorical columns and imputes missing values, fitted in ``fit`` and kept as the
estimator's ``preprocessor_`` (so it is part of the fitted, pickled and logged model).

Categorical columns: pandas ``object``, ``string``, ``category`` and ``bool`` columns; their missing
values become the most frequent category, then one column per category (a category first seen at
predict time is all zeros). Numeric columns: missing values become the column's median, plus an
indicator column for each column that had missing values in ``fit``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PREPROCESS_CHOICES = ("auto", "none")


def _is_frame(X: Any) -> bool:
    return hasattr(X, "columns") and hasattr(X, "dtypes") and hasattr(X, "iloc")


def categorical_columns(X: Any, *, bools: bool = False) -> list[Any]:
    """The columns of a DataFrame that are not numbers (text, categories; booleans too with ``bools``:
    numpy takes them as 0/1, the imputer does not)."""
    if not _is_frame(X):
        return []
    import pandas as pd

    return [
        c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c]) or (bools and pd.api.types.is_bool_dtype(X[c]))
    ]


def has_missing(X: Any) -> bool:
    """Whether any value of ``X`` is missing (NaN, None, pandas NA)."""
    if _is_frame(X):
        return bool(X.isna().to_numpy().any())
    try:
        a = np.asarray(X)
        if a.dtype.kind == "O":
            a = a.astype(np.float64)
    except (TypeError, ValueError):
        return False  # not numbers: validation names the problem
    return a.dtype.kind in "fc" and bool(np.isnan(a).any())


def needs_preprocessing(X: Any) -> bool:
    """Categorical columns or missing values: what a numeric learner cannot take as it is."""
    return bool(categorical_columns(X)) or has_missing(X)


def check_numeric(X: Any, where: str) -> None:
    """Without preprocessing: name the columns a learner cannot take, and say what to use."""
    text = categorical_columns(X)
    if text:
        raise ValueError(
            f"{where}: column(s) {', '.join(map(repr, map(str, text)))} are not numeric; pass preprocess='auto' "
            "(one-hot encoding and imputation as part of the model) or put a sklearn.compose.ColumnTransformer "
            "before the estimator in a Pipeline"
        )


def make_preprocessor(X: Any) -> Any:
    """An unfitted ``ColumnTransformer`` for ``X`` (a DataFrame or an array with missing values)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    if _is_frame(X):
        cats = categorical_columns(X, bools=True)
        nums = [c for c in X.columns if c not in cats]
    else:
        cats, nums = [], list(range(np.asarray(X).shape[1]))
    parts: list[tuple[str, Any, list[Any]]] = []
    if nums:
        parts.append(("numeric", SimpleImputer(strategy="median", add_indicator=True), nums))
    if cats:
        encode = make_pipeline(
            SimpleImputer(strategy="most_frequent", missing_values=np.nan),
            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
        )
        parts.append(("categorical", encode, cats))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def prepare_categoricals(X: Any) -> Any:
    """Categorical columns as ``object`` with NaN for missing values (SimpleImputer refuses pandas NA and
    mixed bool/str)."""
    if not _is_frame(X):
        return X
    cats = categorical_columns(X, bools=True)
    if not cats:
        return X
    X = X.copy()
    for c in cats:
        col = X[c].astype(object)
        X[c] = col.where(~X[c].isna(), np.nan).map(lambda v: v if isinstance(v, float) else str(v))
    return X
