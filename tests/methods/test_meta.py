"""Meta-learning: episodes, class splits, ProtoNet / RelationNet / hyper-representation, L2G, the meta-estimator."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone

import mlflow
from automl_bilevel import MetaLearnerClassifier, get_registry
from automl_bilevel.methods.meta import (
    EpisodeError,
    EpisodeSampler,
    MetaLearner,
    as_images,
    class_split,
    l2g_loss,
    rotate_classes,
)
from automl_bilevel_plugins.meta.hyperrep import HyperRepresentation
from automl_bilevel_plugins.meta.metric import ProtoNet, RelationNet

DIGITS = {"scaled": True, "images": True}  # the slice of the shared ``digits`` fixture (tests/conftest.py)


# -- episodes -------------------------------------------------------------------------------------
def test_episodes_have_the_requested_shape_and_disjoint_support_and_query(digits):
    X, y = digits
    s = EpisodeSampler(X, y, n_way=5, k_shot=3, q_queries=4, seed=0)
    for _ in range(20):
        ep = s.sample()
        assert ep.support_x.shape == (15, 1, 8, 8) and ep.query_x.shape == (20, 1, 8, 8)
        assert ep.support_y.tolist() == sorted([0, 1, 2, 3, 4] * 3) and len(set(ep.classes)) == 5
        flat_s = {tuple(r) for r in ep.support_x.reshape(15, -1).numpy().round(6)}
        flat_q = {tuple(r) for r in ep.query_x.reshape(20, -1).numpy().round(6)}
        assert not flat_s & flat_q
        # support labels map to the episode's classes
        for img, lab in zip(ep.support_x, ep.support_y, strict=True):
            matches = np.flatnonzero(np.abs(X - img[0].numpy()).reshape(len(X), -1).max(1) < 1e-6)
            assert ep.classes[int(lab)] in set(y[matches])
    other = s.sample(exclude=ep.classes)
    assert not set(other.classes) & set(ep.classes)


def test_class_split_happens_before_rotation(digits):
    X, y = digits
    train_c, val_c, test_c = class_split(y, (6, 2, 2), seed=1)
    assert len(set(train_c) | set(val_c) | set(test_c)) == 10
    xs, ys = rotate_classes(X[np.isin(y, train_c)][:, None], y[np.isin(y, train_c)])
    xt, yt = rotate_classes(X[np.isin(y, test_c)][:, None], y[np.isin(y, test_c)])
    assert len(np.unique(ys)) == 24 and len(np.unique(yt)) == 8
    assert not set(ys // 4) & set(yt // 4)  # no rotated copy of a test class in training
    i = np.flatnonzero(y[np.isin(y, train_c)] == train_c[0])[0]
    n = int(np.isin(y, train_c).sum())
    assert np.allclose(xs[n + i, 0], np.rot90(X[np.isin(y, train_c)][i], 1))  # 90° copy


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda X, y: EpisodeSampler(X, y, 11, 1, 1), "at least 11 classes"),
        (lambda X, y: EpisodeSampler(X, y, 5, 0, 1), "k_shot must be >= 1"),
        (lambda X, y: EpisodeSampler(X[:60], y[:60], 5, 5, 5), "fewer than K \\+ Q = 10"),
        (lambda X, y: EpisodeSampler([X[0], X[1][:7]], [0, 1], 2, 1, 1), "inconsistent shape"),
        (lambda X, y: as_images(X.reshape(len(X), -1)), "image_shape"),
        (lambda X, y: as_images(X.reshape(len(X), -1), image_shape=(7, 7)), "flat rows of 49"),
        (lambda X, y: class_split(y, (8, 4)), "12 classes"),
        (lambda X, y: rotate_classes(X[:, None], y, rotations=(0, 45)), "multiples of 90"),
    ],
)
def test_bad_task_data_is_refused_clearly(digits, make, match):
    with pytest.raises(EpisodeError, match=match):
        make(*digits)


# -- meta-learners ------------------------------------------------------------------------------------
class Identity(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)


def test_protonet_logits_are_negative_squared_distances_to_class_means():
    torch.manual_seed(0)
    model = ProtoNet(1, 8, depth=3)
    model.encoder = Identity()
    sx, sy, qx = torch.randn(6, 1, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2]), torch.randn(4, 1, 8, 8)
    logits = model(sx, sy, qx, 3)
    protos = torch.stack([sx[sy == c].flatten(1).mean(0) for c in range(3)])
    expect = -((qx.flatten(1)[:, None] - protos[None]) ** 2).sum(-1)
    assert torch.allclose(logits, expect, atol=1e-4)


def test_relationnet_scores_every_query_class_pair():
    torch.manual_seed(0)
    model = RelationNet(1, 28, width=8)
    out = model(torch.randn(10, 1, 28, 28), torch.arange(5).repeat_interleave(2), torch.randn(7, 1, 28, 28), 5)
    assert out.shape == (7, 5) and ((out > 0) & (out < 1)).all()


def test_hyper_representation_hypergradient_matches_autograd_through_the_inner_steps():
    torch.manual_seed(0)
    model = HyperRepresentation(1, 8, width=4, depth=2, inner_steps=5, inner_lr=0.3).double()
    model.eval()  # fixed batch-norm statistics: both computations see the same network
    sx, qx = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.randn(9, 1, 8, 8, dtype=torch.float64)
    sy, qy = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2] * 3)
    ml = model.meta_loss(sx, sy, qx, qy, 3)
    got = torch.autograd.grad(ml.objective, list(model.parameters()))
    loss = F.cross_entropy(model(sx, sy, qx, 3), qy)
    want = torch.autograd.grad(loss, list(model.parameters()))
    assert ml.value == pytest.approx(float(loss), rel=1e-10)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-9, rtol=1e-7)
    # and the inner learning rate's hypergradient against a central finite difference
    eps, lr0 = 1e-5, model.log_lr.data.clone()
    vals = []
    for d in (eps, -eps):
        model.log_lr.data = lr0 + d
        vals.append(float(F.cross_entropy(model(sx, sy, qx, 3), qy)))
    model.log_lr.data = lr0
    assert float(got[[n for n, _ in model.named_parameters()].index("log_lr")]) == pytest.approx(
        (vals[0] - vals[1]) / (2 * eps), rel=1e-5
    )


def test_l2g_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = ProtoNet(1, 8, width=3, depth=1).double().eval()
    s = EpisodeSampler(np.random.default_rng(0).random((40, 8, 8)), np.repeat(np.arange(8), 5), 2, 2, 3, seed=0)
    a = s.sample()
    b = s.sample(exclude=a.classes)
    for ep in (a, b):
        ep.support_x, ep.query_x = ep.support_x.double(), ep.query_x.double()
    loss, _ = l2g_loss(model, a, b, inner_lr=0.5)
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(loss, params)
    direction = [torch.randn_like(p) for p in params]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction, strict=True))
    eps, vals = 1e-6, []
    for sign in (1, -1):
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(sign * eps * d)
        vals.append(float(l2g_loss(model, a, b, inner_lr=0.5)[0]))
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.sub_(sign * eps * d)
    assert analytic == pytest.approx((vals[0] - vals[1]) / (2 * eps), rel=1e-5)
    # the unseen-class term really is differentiated through the inner step
    plain = F.cross_entropy(model(a.support_x, a.support_y, a.query_x, 2), a.query_y)
    assert float(loss) > float(plain)


def test_l2g_reaches_every_part_of_a_relation_network():
    torch.manual_seed(0)
    model = RelationNet(1, 8, width=4, depth=2)
    s = EpisodeSampler(np.random.default_rng(0).random((40, 8, 8)), np.repeat(np.arange(8), 5), 2, 1, 3, seed=0)
    a = s.sample()
    loss, _ = l2g_loss(model, a, s.sample(exclude=a.classes), inner_lr=0.1)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert float(model.relation.fc[-1].weight.grad.abs().sum()) > 0


# -- the meta-estimator ------------------------------------------------------------------------------
def split_digits(digits):
    X, y = digits
    test = np.isin(y, [7, 8, 9])
    return (X[~test], y[~test]), (X[test], y[test])


@pytest.mark.parametrize(
    "method,l2g,floor",
    [("protonet", False, 0.5), ("protonet", True, 0.5), ("relationnet", False, 0.38), ("hyperrep", False, 0.5)],
)
def test_meta_training_learns_unseen_classes(digits, method, l2g, floor):
    (Xtr, ytr), (Xte, yte) = split_digits(digits)
    params = {"width": 32, "depth": 2} | ({"inner_steps": 5} if method == "hyperrep" else {})
    est = MetaLearnerClassifier(
        method,
        method_params=params,
        l2g=l2g,
        n_way=3,
        k_shot=1,
        q_queries=5,
        meta_iters=60,
        val_fraction=0.3,
        rotations=True,
        val_every=20,
        val_episodes=20,
        tracking=False,
        random_state=0,
    ).fit(Xtr, ytr)
    res = est.evaluate(Xte, yte, n_episodes=100, random_state=0)
    assert res["accuracy"] - res["ci95"] > floor  # chance is 1/3 on 3 never-seen classes
    assert est.n_iter_ == 60 and est.best_iteration_ in (19, 39, 59)


def test_adapt_gives_a_classifier_for_new_classes(digits):
    (Xtr, ytr), (Xte, yte) = split_digits(digits)
    est = MetaLearnerClassifier(
        "protonet",
        method_params={"width": 16, "depth": 2},
        n_way=3,
        meta_iters=20,
        val_fraction=0.3,
        rotations=True,
        val_every=10,
        val_episodes=5,
        tracking=False,
        random_state=0,
    ).fit(Xtr, ytr)
    names = np.array(["seven", "eight", "nine"])[yte - 7]
    support = np.concatenate([np.flatnonzero(names == c)[:5] for c in ("seven", "eight", "nine")])
    clf = est.adapt(Xte[support], names[support], n_way=3)
    proba = clf.predict_proba(Xte)
    assert proba.shape == (len(Xte), 3) and np.allclose(proba.sum(1), 1)
    assert set(clf.predict(Xte)) <= {"seven", "eight", "nine"} and list(clf.classes_) == ["eight", "nine", "seven"]
    assert np.mean(clf.predict(Xte) == names) > 0.6
    with pytest.raises(EpisodeError, match="covers 2 classes"):
        est.adapt(Xte[support[:10]], names[support[:10]], n_way=3)
    with pytest.raises(EpisodeError, match="meta-trained on"):
        est.adapt(np.zeros((4, 9, 9)), [0, 0, 1, 1])
    with pytest.raises(EpisodeError, match="at least 2 classes"):
        est.adapt(Xte[:3], [1, 1, 1])
    pickle.loads(pickle.dumps(est)).evaluate(Xte, yte, n_episodes=5)
    assert clone(est).get_params() == est.get_params()


def test_meta_training_is_tracked_in_mlflow(digits, tracking):
    (Xtr, ytr), _ = split_digits(digits)
    uri, exp = tracking
    est = MetaLearnerClassifier(
        "protonet",
        method_params={"width": 8, "depth": 1},
        n_way=3,
        meta_iters=12,
        val_fraction=0.3,
        rotations=True,
        val_every=4,
        val_episodes=4,
        tracking_uri=uri,
        experiment_name=exp,
        random_state=0,
    ).fit(Xtr, ytr)
    client = mlflow.MlflowClient(uri)
    hist = client.get_metric_history(est.mlflow_run_id_, "meta_val_accuracy")
    assert [m.step for m in hist] == [3, 7, 11]
    assert len(client.get_metric_history(est.mlflow_run_id_, "value")) == 12
    model = mlflow.sklearn.load_model(f"runs:/{est.mlflow_run_id_}/model")
    assert model.best_iteration_ == est.best_iteration_


SMALL = {"width": 8, "depth": 2}


def test_meta_estimator_refuses_bad_input(digits):
    X, y = digits
    with pytest.raises(EpisodeError, match="meta-validation classes"):
        MetaLearnerClassifier(n_way=5, val_fraction=0.2, method_params=SMALL, tracking=False).fit(X, y)  # 2 classes
    with pytest.raises(EpisodeError, match="fewer than K \\+ Q"):
        MetaLearnerClassifier(
            n_way=3, k_shot=5, q_queries=15, val_fraction=0.0, method_params=SMALL, tracking=False
        ).fit(X[:100], y[:100])
    with pytest.raises(ValueError, match="depth <= 3"):
        MetaLearnerClassifier(n_way=3, val_fraction=0.0, tracking=False).fit(X, y)  # 4 pooling blocks on 8x8
    with pytest.raises(ValueError, match="n_way"):
        MetaLearnerClassifier(n_way=1, tracking=False).fit(X, y)
    with pytest.raises(Exception, match="unknown meta_learner 'maml'"):
        MetaLearnerClassifier("maml", tracking=False).fit(X, y)


def test_meta_learners_are_plugins(fake_dist):
    names = get_registry().names("meta_learner")
    assert {"protonet", "relationnet", "hyperrep"} <= set(names)
    src = (
        "from automl_bilevel import hookimpl\n"
        "from automl_bilevel.plugin.specs import MetaLearnerSpec\n"
        "from automl_bilevel_plugins.meta.metric import ProtoNet\n"
        "class Tiny(ProtoNet):\n"
        "    def __init__(self, in_channels=1, image_size=8):\n"
        "        super().__init__(in_channels, image_size, width=4, depth=1)\n"
        "@hookimpl\n"
        "def bilevel_register_meta_learners():\n"
        "    return [MetaLearnerSpec('tiny_proto', Tiny, 'a tiny ProtoNet')]\n"
    )
    fake_dist("tiny-meta", {"tiny": "tiny_meta_plugin"}, modules={"tiny_meta_plugin": src})
    reg = get_registry()
    model, registered = reg.make("meta_learner", "tiny_proto", {"in_channels": 1, "image_size": 8})
    assert isinstance(model, MetaLearner) and registered.origin.package == "tiny-meta"


def test_meta_training_continues_exactly_from_its_checkpoint(digits, tmp_path):
    # 30 steps, then the same checkpoint with meta_iters=60: the same 60 values as one uninterrupted fit
    (Xtr, ytr), (Xte, yte) = split_digits(digits)
    kw = dict(
        method_params={"width": 8, "depth": 2},
        n_way=3,
        q_queries=5,
        val_fraction=0.3,
        rotations=True,
        val_every=10,
        val_episodes=5,
        tracking=False,
        random_state=0,
    )
    ckpt = str(tmp_path / "meta.jsonl")
    first = MetaLearnerClassifier("protonet", meta_iters=30, checkpoint=ckpt, **kw).fit(Xtr, ytr)
    assert first.n_iter_ == 30
    resumed = MetaLearnerClassifier("protonet", meta_iters=60, checkpoint=ckpt, **kw).fit(Xtr, ytr)
    whole = MetaLearnerClassifier("protonet", meta_iters=60, **kw).fit(Xtr, ytr)
    assert resumed.n_iter_ == 60
    np.testing.assert_allclose(resumed.history_["value"], whole.history_["value"], rtol=1e-5, atol=1e-6)
    assert resumed.best_iteration_ == whole.best_iteration_
    a, b = (
        resumed.evaluate(Xte, yte, n_episodes=20, random_state=1),
        whole.evaluate(Xte, yte, n_episodes=20, random_state=1),
    )
    assert a["accuracy"] == pytest.approx(b["accuracy"])
    with pytest.raises(ValueError, match="different search"):
        MetaLearnerClassifier("relationnet", meta_iters=60, checkpoint=ckpt, **kw).fit(Xtr, ytr)


def test_the_kept_model_is_the_best_on_meta_validation_and_history_has_a_value_column(digits):
    (Xtr, ytr), _ = split_digits(digits)
    est = MetaLearnerClassifier(
        "protonet",
        method_params={"width": 8, "depth": 2},
        n_way=3,
        q_queries=5,
        meta_iters=30,
        val_fraction=0.3,
        rotations=True,
        val_every=10,
        val_episodes=5,
        tracking=False,
        random_state=0,
    ).fit(Xtr, ytr)
    vals = [(a, i) for i, a in enumerate(est.history_["meta_val_accuracy"]) if a is not None]
    assert [i for _, i in vals] == [9, 19, 29]
    assert est.best_val_accuracy_ == max(a for a, _ in vals)
    assert est.best_iteration_ == max(vals, key=lambda v: (v[0], -v[1]))[1]
    assert len(est.history_["value"]) == 30 and est.history_["status"] == ["COMPLETE"] * 30


def test_meta_training_needs_a_gradient_optimizer(digits):
    with pytest.raises(Exception, match="not a gradient outer optimizer"):
        MetaLearnerClassifier(optimizer="random", method_params=SMALL, n_way=3, tracking=False).fit(*digits)


def test_a_black_box_optimizer_tunes_meta_training_settings_as_an_ordinary_search(digits, tracking, tmp_path):
    # random search over meta_lr and the encoder width: each trial is a short meta-training scored on
    # held-out classes; tracked (a child run per trial) and resumable like any search
    from automl_bilevel.frontends.meta_search import tune_meta_learner

    (Xtr, ytr), _ = split_digits(digits)
    uri, exp = tracking
    kw = dict(
        search_space={"meta_lr": (1e-4, 1e-1, "log"), "width": [4, 8]},
        method="protonet",
        n_way=3,
        q_queries=5,
        rotations=True,
        meta_iters=5,
        n_episodes=10,
        method_params={"depth": 2},
        tracking_uri=uri,
        experiment_name=exp,
        checkpoint=str(tmp_path / "tune.jsonl"),
    )
    best, first = tune_meta_learner(Xtr, ytr, n_iter=2, **kw)
    best, res = tune_meta_learner(Xtr, ytr, n_iter=4, **kw)
    assert len(res.trials) == 4 and all(t.ok for t in res.trials)
    assert [t.config for t in res.trials[:2]] == [t.config for t in first.trials]
    assert set(best) == {"meta_lr", "width"} and best == dict(res.best.config)
    assert all(0 <= t.value <= 1 for t in res.trials)
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(exp).experiment_id])
    assert len([r for r in runs if "mlflow.parentRunId" not in r.data.tags]) == 2  # one run per call


def test_device_is_resolved_before_any_work(digits):
    import torch

    (Xtr, ytr), (Xte, yte) = split_digits(digits)
    est = MetaLearnerClassifier(
        "protonet",
        method_params={"width": 8, "depth": 2},
        n_way=3,
        q_queries=5,
        meta_iters=3,
        val_fraction=0.0,
        device="auto",
        tracking=False,
        random_state=0,
    ).fit(Xtr, ytr)
    assert next(est.model_.parameters()).device == torch.device("cpu")  # the fitted model comes back on the CPU
    assert 0 <= est.evaluate(Xte, yte, n_episodes=5)["accuracy"] <= 1
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            MetaLearnerClassifier(device="cuda", tracking=False).fit(Xtr, ytr)
    with pytest.raises(ValueError):
        MetaLearnerClassifier(device="gpu7", tracking=False).fit(Xtr, ytr)
