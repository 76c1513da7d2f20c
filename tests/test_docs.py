"""The README stays true: every hook is documented and tested, and CI runs the README's command."""

from __future__ import annotations

import re

import pytest

from automl_bilevel.plugin import hookspecs
from tests.conftest import ROOT

HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("bilevel_"))
README = (ROOT / "README.md").read_text()


def test_hooks_exist():
    assert HOOKS == [
        "bilevel_register_learners",
        "bilevel_register_meta_learners",
        "bilevel_register_objectives",
        "bilevel_register_optimizers",
        "bilevel_run_listener",
        "bilevel_sync_spool",
    ]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    assert f"`{hook}(" in README, f"README does not document {hook}"
    assert getattr(hookspecs, hook).__doc__, f"{hook} has no docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    tests = "".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != "test_docs.py")
    assert f"def {hook}" in tests, f"no test implements {hook}"


def _commands():
    return re.findall(r"```bash\n(python3 -m venv .venv[^\n]*)\n```", README)


def test_readme_has_the_two_quick_start_commands():
    setup_run, setup_test = _commands()
    assert setup_run.endswith("automl-bilevel run") and "-c constraints.txt" in setup_run
    assert "pytest" in setup_test and "-c constraints.txt" in setup_test
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()


def test_ci_runs_the_readme_test_command():
    _, setup_test = _commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup_test in ci.splitlines()


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(markdown: str) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", _prose(markdown), flags=re.M)}


def _prose(markdown: str) -> str:
    """The markdown without fenced code blocks (whose `#` lines are comments, not headings)."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)


def _links(markdown: str) -> list[str]:
    prose = _prose(markdown)
    return re.findall(r"\]\(([^)\s]+)\)", prose) + re.findall(r"<(https?://[^>\s]+)>", prose)


MARKDOWN = [ROOT / "README.md", ROOT / "examples" / "thirdparty_plugin" / "README.md"]


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(doc):
    """Relative links name files of the repository (a clone has nothing beside it) and anchors name
    headings; web links are well formed (no network here to follow them)."""
    from urllib.parse import urlparse

    links = _links(doc.read_text())
    assert links, f"no links found in {doc}"
    for link in links:
        url = urlparse(link)
        if url.scheme:
            assert url.scheme in ("http", "https") and url.netloc, f"{doc.name}: malformed link {link}"
            continue
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        assert target.is_relative_to(ROOT), f"{doc.name} links {link}, outside the repository"
        assert target.exists(), f"{doc.name} links {link}, which does not exist"
        if anchor:
            assert anchor in _anchors(target.read_text()), f"{doc.name} links {link}: no such heading"


def test_the_readme_links_no_shared_checkout_files():
    assert "../shared" not in README and "shared/DESIGN.md" not in README


def test_sections_the_examples_point_to_exist():
    headings = {h.strip() for h in re.findall(r"^#{1,6} (.+)$", _prose(README), flags=re.M)}
    cited = {}
    for path in sorted((ROOT / "examples").rglob("*.py")):
        for section in re.findall(r'README[^"\n]{0,12}"([^"]+)"', path.read_text()):
            cited.setdefault(section, []).append(path.name)
    assert "Data" in cited  # examples 04, 06, 07 point to it
    for section, files in cited.items():
        assert section in headings, f"{files} point to README section {section!r}, which does not exist"


def test_the_readme_plugin_module_is_a_working_plugin(fake_dist, tmp_path):
    """The "Writing a plugin" section's module, installed as a package, passes the contract checks
    and is used by name."""
    from sklearn.datasets import load_digits

    from automl_bilevel import ENTRY_POINT_GROUP, BilevelClassifier, get_registry
    from automl_bilevel.testing import check_learner, check_optimizer

    section = README[README.index("## Writing a plugin") : README.index("### Hooks")]
    assert f"[project.entry-points.{ENTRY_POINT_GROUP}]" in section
    code = re.search(r"```python\n# my_package/plugin.py\n(.*?)```", section, flags=re.S).group(1)
    fake_dist("my-package", {"my_plugin": "readme_plugin"}, {"readme_plugin": code})
    rows = {(r["kind"], r["name"]): r for r in get_registry().records()}
    assert rows[("learner", "naive_bayes")]["package"] == "my-package"
    assert rows[("optimizer", "hill")]["plugin"] == "my_plugin"
    import readme_plugin

    check_learner(readme_plugin.NaiveBayes())
    check_optimizer(lambda: readme_plugin.HillClimber(0.2))
    X, y = load_digits(return_X_y=True)
    est = BilevelClassifier(
        "naive_bayes", optimizer="hill", optimizer_params={"sigma": 0.1}, n_iter=6, tracking=False, random_state=0
    ).fit(X, y)
    assert est.n_trials_ == 6 and est.score(X, y) > 0.7
    with pytest.raises(ValueError, match="sigma must be > 0"):
        BilevelClassifier("naive_bayes", optimizer="hill", optimizer_params={"sigma": 0}, tracking=False).fit(X, y)


def test_the_readme_gradient_optimizer_works_for_hyperparameters_and_meta_training(fake_dist):
    """The "A gradient-based outer optimizer" module, installed as a package: a registered optimizer that
    tunes hyperparameters by hypergradients and meta-trains a ProtoNet, resumably."""
    from sklearn.datasets import load_digits

    from automl_bilevel import BilevelClassifier, MetaLearnerClassifier, get_registry

    section = README[
        README.index("### A gradient-based outer optimizer") : README.index("### A complete plugin module")
    ]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    fake_dist("rms-package", {"rms": "readme_rms_plugin"}, {"readme_rms_plugin": code})
    assert "rmsprop_hg" in get_registry().names("optimizer")
    X, y = load_digits(return_X_y=True)
    est = BilevelClassifier(
        "logistic",
        optimizer="rmsprop_hg",
        n_iter=3,
        tracking=False,
        random_state=0,
        learner_params={"epochs": 10, "batch_size": 4096},
    ).fit(X[:600], y[:600])
    assert est.n_trials_ == 3 and "hypergrad_norm" in est.trials_[0].metrics
    assert est.trials_[1].config["lr"] != est.trials_[0].config["lr"]  # the outer variables moved
    meta = MetaLearnerClassifier(
        "protonet",
        method_params={"width": 8, "depth": 2},
        optimizer="rmsprop_hg",
        optimizer_params={"outer_lr": 1e-3, "clip": None},
        n_way=3,
        q_queries=5,
        meta_iters=4,
        val_fraction=0.0,
        image_shape=(8, 8),
        tracking=False,
        random_state=0,
    ).fit(X[:900], y[:900])
    assert meta.n_iter_ == 4 and meta.history_["status"] == ["COMPLETE"] * 4
