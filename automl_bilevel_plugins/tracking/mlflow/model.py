"""The fitted estimator as an MLflow model, logged as an MLflow 3 logged model when the run ends."""

from __future__ import annotations

import logging
import shutil
import sys
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
    shape = getattr(model, "input_shape_", None)  # one example's shape: images and sequences keep theirs
    if getattr(model, "preprocessor_", None) is not None:
        pass  # the model takes the table's own columns, not n_features_in_ numbers
    elif isinstance(shape, tuple) and len(shape) > 1:
        example = np.zeros((1, *shape), dtype=np.float32)
        signature = infer_signature(example, model.predict(example))
    elif isinstance(n, int) and n > 0:
        example = np.zeros((1, n))
        signature = infer_signature(example, model.predict(example))
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="cloudpickle",
        signature=signature,
        input_example=example,
        pip_requirements=[f"automl-bilevel=={__version__}"],
        code_paths=user_code_paths(model) or None,
    )


def user_code_paths(model: Any) -> list[str]:
    """The source of the user's own torch module class, where the fitted model holds one defined in a
    module of the user's (not ``__main__``: cloudpickle stores those by value; not an installed
    package: a pip requirement's job): logged with the model as MLflow ``code_paths``, so that loading
    it elsewhere finds the class instead of failing with ``ModuleNotFoundError``."""
    import sysconfig

    module = getattr(getattr(model, "model_", None), "module", None)
    if module is None:
        return []
    name = type(module).__module__
    top = name.split(".")[0]
    if name == "__main__" or top in ("torch", "automl_bilevel", "automl_bilevel_plugins", "builtins"):
        return []
    file = getattr(sys.modules.get(top), "__file__", None)
    if not file:
        return []
    path = Path(file).resolve()
    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    if any(p in path.parents for p in installed):
        return []
    return [str(path.parent if path.name == "__init__.py" else path)]
