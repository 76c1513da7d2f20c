"""The fitted estimator as an MLflow model, logged as an MLflow 3 logged model when the run ends."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from automl_bilevel import __version__


def save_model(model: Any, path: Path) -> None:
    """The fitted estimator as an MLflow model with a signature and an input example (one row of
    zeros of the fitted width: the run's data is not kept), logged as an MLflow 3 logged model
    when the run ends (:meth:`RunWriter.finish`)."""
    import mlflow.sklearn
    import numpy as np
    from mlflow.models import infer_signature

    # we choose cloudpickle on purpose (our estimators hold torch modules skops cannot store)
    logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
    logging.getLogger("mlflow.models.model").setLevel(logging.ERROR)
    if path.exists():
        shutil.rmtree(path)
    example, signature = None, None
    n = getattr(model, "n_features_in_", None)
    if isinstance(n, int) and n > 0 and getattr(model, "preprocessor_", None) is None:
        # (with a preprocessor the model takes the table's own columns, not n_features_in_ numbers)
        example = np.zeros((1, n))
        signature = infer_signature(example, model.predict(example))
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="cloudpickle",
        signature=signature,
        input_example=example,
        pip_requirements=[f"automl-bilevel=={__version__}"],
    )
