"""MetaLearnerClassifier with the user's own encoder: protonet, relationnet, hyperrep and L2G learn
never-seen classes with it; a bad encoder is refused before meta-training."""

from __future__ import annotations

import copy

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from automl_bilevel import MetaLearnerClassifier


class MyEncoder(nn.Module):
    """Two conv blocks; ``maps=True`` keeps the feature maps (for the Relation Network)."""

    def __init__(self, in_channels: int = 1, maps: bool = False) -> None:
        super().__init__()
        self.maps = maps
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return z if self.maps else z.flatten(1)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 8, 8)
    seen = y < 7
    return (X[seen], y[seen]), (X[~seen], y[~seen])


SETTINGS = dict(
    n_way=3, k_shot=1, q_queries=5, meta_iters=60, val_fraction=0.3, rotations=True, val_every=20,
    val_episodes=20, tracking=False, random_state=0,
)  # fmt: skip


@pytest.mark.parametrize(
    ("method", "encoder", "l2g", "floor"),
    [
        pytest.param("protonet", MyEncoder, False, 0.5, marks=pytest.mark.slow),
        ("protonet", lambda c, size: MyEncoder(c), True, 0.5),
        ("relationnet", MyEncoder(maps=True), False, 0.38),
        pytest.param("hyperrep", MyEncoder(), False, 0.5, marks=pytest.mark.slow),
    ],
    ids=["protonet-class", "protonet-factory-l2g", "relationnet-instance", "hyperrep-instance"],
)
def test_a_users_encoder_meta_trains(digits, method, encoder, l2g, floor):
    (Xtr, ytr), (Xte, yte) = digits
    before = copy.deepcopy(encoder.state_dict()) if isinstance(encoder, nn.Module) else None
    params = {"encoder": encoder} | ({"inner_steps": 5} if method == "hyperrep" else {})
    est = MetaLearnerClassifier(method, method_params=params, l2g=l2g, **SETTINGS).fit(Xtr, ytr)
    res = est.evaluate(Xte, yte, n_episodes=100, random_state=0)
    assert res["accuracy"] - res["ci95"] > floor  # chance is 1/3 on 3 never-seen classes
    if before is not None:  # the user's instance is copied, never trained in place
        assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert isinstance(est.model_.encoder, MyEncoder)


@pytest.mark.parametrize(
    ("method", "encoder", "message"),
    [
        ("protonet", MyEncoder(maps=True), r"returned \(2, 16, 4, 4\) on \(2, 1, 8, 8\); expected \(2, dim\)"),
        ("relationnet", MyEncoder(), r"expected \(2, channels, height, width\) feature maps"),
        ("protonet", lambda c, s: nn.Linear(3, 3), "failed on images of shape"),
        ("hyperrep", lambda c, s: 3, "not an nn.Module"),
    ],
)
def test_a_bad_encoder_is_refused_before_meta_training(digits, method, encoder, message):
    (Xtr, ytr), _ = digits
    with pytest.raises((ValueError, TypeError), match=message):
        MetaLearnerClassifier(method, method_params={"encoder": encoder}, **SETTINGS).fit(Xtr, ytr)
