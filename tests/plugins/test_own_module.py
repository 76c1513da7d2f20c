"""The ``torch`` learner with a module of the user's own: class, factory or instance; BatchNorm,
dropout and train/eval mode as in a plain PyTorch loop; the dry run before any step."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from automl_bilevel import Task
from automl_bilevel.run.runtime import threads
from automl_bilevel_plugins.learners.torch_learners import LogisticLearner, MLPLearner, TorchLearner

from .own_models import PlainCNN, TinyCNN, digits_images

TASK = Task("classification", 64, 10, (1, 8, 8))
FAST = dict(epochs=2, batch_size=64, lr=1e-2)


@pytest.fixture(autouse=True)
def one_thread():
    with threads(1):
        yield


@pytest.fixture(scope="module")
def digits():
    return digits_images(600)


def test_a_module_class_with_constructor_arguments_set_and_searched_by_name(digits):
    X, y = digits
    learner = TorchLearner(TinyCNN, channels=3, **FAST)
    assert learner.fit(X, y, {}, task=TASK, seed=0).module.conv.out_channels == 3
    model = learner.fit(X, y, {"channels": 5}, task=TASK, seed=0)  # a config sets it by name
    assert model.module.conv.out_channels == 5
    assert "channels" in learner.param_names(TASK)
    assert TorchLearner(TinyCNN, module__channels=2, **FAST).settings["channels"] == 2  # skorch's spelling
    assert (model.predict(X) == y).mean() > 0.7


def test_a_factory_gets_the_task_and_the_config(digits):
    X, y = digits
    seen = {}

    def factory(task, config):
        seen.update(task=task, width=config["width"])
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(task.n_features, config["width"]),
            nn.ReLU(),
            nn.Linear(config["width"], task.n_outputs),
        )

    TorchLearner(factory, width=8, **FAST).fit(X, y, {"width": 12}, task=TASK, seed=0)
    assert seen == {"task": TASK, "width": 12}


def test_an_instance_is_copied_never_trained_in_place(digits):
    X, y = digits
    net = PlainCNN()
    before = copy.deepcopy(net.state_dict())
    model = TorchLearner(net, **FAST).fit(X, y, {}, task=TASK, seed=0)
    assert model.module is not net
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_logistic_and_mlp_are_the_torch_learner_with_a_fixed_module(digits):
    X, y = digits
    assert issubclass(LogisticLearner, TorchLearner) and issubclass(MLPLearner, TorchLearner)
    assert LogisticLearner.fit is TorchLearner.fit and MLPLearner.differentiable is TorchLearner.differentiable
    model = LogisticLearner(epochs=20, lr=0.1).fit(X, y, {}, task=TASK, seed=0)  # images: flattened
    assert (model.predict(X) == y).mean() > 0.8


def _plain_loop(dt, module, lr, wd, seed):
    """The same training in plain PyTorch: torch.optim.SGD, the learner's batches, dropout seeded per step."""
    opt = torch.optim.SGD(module.parameters(), lr=lr, weight_decay=wd)
    module.train()
    for t, idx in enumerate(dt.batches):
        torch.default_generator.manual_seed(seed * 1_000_003 + t)
        opt.zero_grad()
        nn.functional.cross_entropy(module(dt.Xt[idx]), dt.yt[idx]).backward()
        opt.step()
    return module.eval()


def test_batchnorm_dropout_and_modes_match_a_plain_pytorch_loop(digits):
    X, y = digits
    lr, wd, seed = 0.05, 1e-3, 3
    learner = TorchLearner(TinyCNN, optimizer="sgd", momentum=0.0, epochs=2, batch_size=50, lr=lr, weight_decay=wd)
    dt = learner.differentiable(X, y, {}, task=TASK, seed=seed)
    plain = _plain_loop(dt, copy.deepcopy(dt.module), lr, wd, seed)
    model = learner.fit(X, y, {}, task=TASK, seed=seed)
    for (name, a), b in zip(model.module.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name  # weights and running statistics
    assert model.module.bn.num_batches_tracked.item() == len(dt.batches)
    assert not torch.equal(model.module.bn.running_mean, torch.zeros(4))
    with torch.no_grad():  # eval mode: running statistics, no dropout
        assert np.allclose(
            model.predict_proba(X[:50]), torch.softmax(plain(torch.as_tensor(X[:50])), 1).numpy(), atol=1e-5
        )


def test_a_trial_is_reproducible_from_its_seed(digits):
    X, y = digits
    learner = TorchLearner(TinyCNN, dropout=0.5, **FAST)
    a, b, c = (learner.fit(X, y, {}, task=TASK, seed=s).predict_proba(X) for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_recomputed_steps_see_the_same_buffers_and_masks(digits):
    """Checkpointed reverse mode recomputes steps: its hypergradient equals plain reverse mode's."""
    from automl_bilevel.gradient import hypergradient

    X, y = digits
    learner = TorchLearner(TinyCNN, epochs=1, batch_size=100, dropout=0.3, optimizer="sgd", lr=0.05)
    grads = []
    for how in (dict(mode="reverse"), dict(mode="checkpoint", every=2)):
        dt = learner.differentiable(X, y, {}, task=TASK, seed=0)
        hp = {**dt.constants, "weight_decay_per_layer": torch.full((6,), 1e-3)}
        Xv, yv = dt.tensor(X[:100]), dt.targets(y[:100])
        res = hypergradient(
            dt.dynamics,
            lambda w, h, dt=dt, Xv=Xv, yv=yv: nn.functional.cross_entropy(dt.outputs(w, Xv), yv),
            dt.z0,
            hp,
            alpha=0.05,
            **how,
        )
        grads.append(res.grads["weight_decay_per_layer"])
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-9)


def test_weight_decay_per_layer_hypergradient_matches_finite_differences(digits):
    from automl_bilevel.gradient import hypergradient

    X, y = digits
    X, y = X[:200], y[:200]
    learner = TorchLearner(PlainCNN, epochs=2, batch_size=50, optimizer="sgd", momentum=0.0, lr=0.1)
    dt = learner.differentiable(X, y, {}, task=TASK, seed=0)
    Xv, yv = dt.tensor(X[:80]), dt.targets(y[:80])
    torch.set_default_dtype(torch.float64)
    try:
        dt.module.double()
        dt.Xt, dt.z0 = dt.Xt.double(), dt.z0.double()
        Xv = Xv.double()
        wdl = torch.tensor([0.05, 0.01, 0.02, 0.03], dtype=torch.float64)
        hp = {k: v.double() for k, v in dt.constants.items()}

        def value(v):
            z = dt.dynamics.run(dt.z0, {**hp, "weight_decay_per_layer": v})
            return float(nn.functional.cross_entropy(dt.outputs(dt.dynamics.weights(z), Xv), yv))

        res = hypergradient(
            dt.dynamics,
            lambda w, h: nn.functional.cross_entropy(dt.outputs(w, Xv), yv),
            dt.z0,
            {**hp, "weight_decay_per_layer": wdl},
            alpha=0.1,
            mode="reverse",
        )
        eps = 1e-5
        fd = [(value(wdl + eps * e) - value(wdl - eps * e)) / (2 * eps) for e in torch.eye(4, dtype=torch.float64)]
    finally:
        torch.set_default_dtype(torch.float32)
    assert np.allclose(res.grads["weight_decay_per_layer"].numpy(), fd, rtol=1e-4, atol=1e-8)


def test_lr_per_layer_moves_each_tensor_at_its_own_rate(digits):
    X, y = digits
    learner = TorchLearner(PlainCNN, epochs=1, batch_size=600, optimizer="sgd", momentum=0.0, lr=0.1, weight_decay=0.0)
    frozen = learner.fit(X, y, {"lr_per_layer": [0.0, 0.0, 0.1, 0.1]}, task=TASK, seed=0).module
    start = learner.differentiable(X, y, {}, task=TASK, seed=0).module
    assert torch.equal(frozen.conv.weight, start.conv.weight) and not torch.equal(frozen.head.weight, start.head.weight)


def test_a_loss_function(digits):
    X, y = digits
    calls = []

    def smooth(out, target):
        calls.append(out.shape)
        return nn.functional.cross_entropy(out, target, label_smoothing=0.1)

    model = TorchLearner(PlainCNN, loss=smooth, **FAST).fit(X, y, {}, task=TASK, seed=0)
    assert calls and (model.predict(X) == y).mean() > 0.7


class _Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        raise RuntimeError("boom in forward")


class _NoParameters(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10]


@pytest.mark.parametrize(
    ("module", "settings", "message"),
    [
        (_Raises, {}, "failed on a batch of input shape .*boom in forward"),
        (
            lambda task, c: nn.Sequential(nn.Flatten(), nn.Linear(64, 7)),
            {},
            r"shape \(16, 7\).*expected \(16, 10\) \(10 classes\)",
        ),
        (
            PlainCNN,
            {"loss": lambda out, y: nn.functional.cross_entropy(out, y, reduction="none")},
            "not a scalar tensor",
        ),
        (_NoParameters, {}, "has no parameters"),
        (lambda task, c: nn.Linear(64, 10), {}, r"failed on a batch of input shape \(16, 1, 8, 8\)"),
    ],
    ids=["forward-raises", "output-width", "non-scalar-loss", "no-parameters", "input-shape"],
)
def test_the_dry_run_refuses_bad_modules_before_any_step(digits, module, settings, message):
    X, y = digits
    with pytest.raises(ValueError, match=message):
        TorchLearner(module, **{**FAST, **settings}).check_input(X, y, TASK)


def test_l2_per_feature_is_refused_for_a_conv_first_layer_with_the_reason(digits):
    learner = TorchLearner(PlainCNN, **FAST)
    assert "l2_per_feature" not in learner.differentiable_hyperparameters(TASK)
    assert "weight_decay_per_layer" in learner.differentiable_hyperparameters(TASK)
    with pytest.raises(ValueError, match=r"first weight 'conv.weight' has shape \(3, 1, 3, 3\)"):
        learner.fit(*digits, {"l2_per_feature": np.ones(64)}, task=TASK, seed=0)
    flat = TorchLearner(lambda t, c: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), **FAST)
    assert "l2_per_feature" in flat.differentiable_hyperparameters(TASK)  # any input shape, flattened


def test_bad_module_arguments():
    with pytest.raises(ValueError, match="needs module="):
        TorchLearner()
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['chanels'\].*TinyCNN takes"):
        TorchLearner(TinyCNN, chanels=3)
    with pytest.raises(TypeError, match="module must be"):
        TorchLearner(3)


def test_forward_mode_with_dropout_equals_reverse_mode(digits):
    """Forward mode batches tangents with vmap: dropout draws one mask per step for all of them."""
    from automl_bilevel.gradient import hypergradient

    X, y = digits
    net = lambda t, c: nn.Sequential(  # noqa: E731
        nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 10)
    )
    learner = TorchLearner(net, epochs=1, batch_size=100, optimizer="sgd", momentum=0.0, lr=0.1)
    grads = []
    for mode in ("reverse", "forward"):
        dt = learner.differentiable(X, y, {}, task=TASK, seed=0)
        hp = {**dt.constants, "weight_decay_per_layer": torch.full((4,), 1e-2)}
        Xv, yv = dt.tensor(X[:100]), dt.targets(y[:100])
        res = hypergradient(
            dt.dynamics,
            lambda w, h, dt=dt, Xv=Xv, yv=yv: nn.functional.cross_entropy(dt.outputs(w, Xv), yv),
            dt.z0,
            hp,
            alpha=0.1,
            mode=mode,
        )
        grads.append(res.grads["weight_decay_per_layer"])
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-8)
