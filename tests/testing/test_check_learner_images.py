"""check_learner on image learners: the learner's declared input shape, an explicit input_shape, or a
sample of the user's own data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from automl_bilevel.run.runtime import threads
from automl_bilevel.testing import check_learner
from automl_bilevel_plugins.learners.torch_learners import TorchLearner

from ..plugins.own_models import PlainCNN, digits_images


class ImageNet(nn.Module):
    """For 28x28 images: reshaping inside forward fails on any other shape (the issue's failing case)."""

    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 5, stride=4)
        self.head = nn.Linear(2 * 6 * 6, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x.view(-1, 1, 28, 28))).flatten(1))


@pytest.fixture(autouse=True)
def one_thread():
    with threads(1):
        yield


def test_an_image_learner_by_input_shape_and_declared_shape():
    learner = TorchLearner(ImageNet, epochs=5, batch_size=32, lr=1e-2)
    check_learner(learner, input_shape=(1, 28, 28))
    learner.input_shape = (1, 28, 28)  # declared by the learner
    check_learner(learner)
    with pytest.raises(ValueError, match="failed on a batch of input shape"):
        check_learner(TorchLearner(ImageNet, epochs=1))  # 5-feature vectors: the module cannot take them


def test_with_a_sample_of_the_users_data():
    X, y = digits_images(200)
    check_learner(TorchLearner(PlainCNN, epochs=3, batch_size=50, lr=1e-2), X=X, y=y)


def test_a_regressor_on_sequences():
    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4 * 3, 1)

        def forward(self, x):
            return self.lin(x.flatten(1))

    check_learner(TorchLearner(Seq, epochs=20, batch_size=30, lr=1e-2), task="regression", input_shape=(4, 3))
