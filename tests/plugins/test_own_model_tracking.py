"""MLflow with a user's own module: the logged model's signature has the images' real shape, and a
module class from the user's own file is logged with the model (code_paths), so it loads elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

import mlflow
from automl_bilevel import BilevelClassifier

from .own_models import digits_images

NETS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class FileCNN(nn.Module):
        def __init__(self, channels=2, n_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(1, channels, 3, padding=1)
            self.head = nn.Linear(channels * 64, n_classes)

        def forward(self, x):
            return self.head(torch.relu(self.conv(x)).flatten(1))
    """
)


def test_signature_shape_and_the_users_module_file_travel_with_the_model(tmp_path, tracking, monkeypatch):
    uri, experiment = tracking
    code = tmp_path / "code"
    code.mkdir()
    (code / "my_nets_for_mlflow.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(code))
    from my_nets_for_mlflow import FileCNN

    X, y = digits_images(200)
    est = BilevelClassifier(
        FileCNN, learner_params={"epochs": 1}, n_iter=1, random_state=0, tracking_uri=uri, experiment_name=experiment
    ).fit(X, y)
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(f"runs:/{est.mlflow_run_id_}/model")
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 1, 8, 8)
    np.save(tmp_path / "X.npy", X[:20])
    load = (
        "import sys, mlflow, numpy as np; mlflow.set_tracking_uri(sys.argv[1]); "
        "m = mlflow.sklearn.load_model(f'runs:/{sys.argv[2]}/model'); "
        "print('PRED', list(m.predict(np.load(sys.argv[3]))))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", load, uri, est.mlflow_run_id_, str(tmp_path / "X.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the folder of my_nets_for_mlflow.py, which is not on this process's path
        env=env,
    )
    assert f"PRED {list(est.predict(X[:20]))}" in proc.stdout, proc.stderr[-3000:]
