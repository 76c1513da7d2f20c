"""The documentation stays true: the README and the pages of docs/.

Every hook is documented on the plugin guide and tested, every public name is in the API reference,
every Python block runs (or says why it cannot here), every relative link resolves in a fresh clone,
the README stays a front door (at most 250 lines, no measurement reports), CI runs the README's test
command, and ``mkdocs build --strict`` passes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

import automl_bilevel
from automl_bilevel.plugin import hookspecs
from tests.conftest import ROOT

DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
PLUGIN_GUIDE = (DOCS / "plugins.md").read_text()
PAGES = sorted(DOCS.rglob("*.md"))
MARKDOWN = [ROOT / "README.md", *PAGES, ROOT / "examples" / "thirdparty_plugin" / "README.md"]
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("bilevel_"))


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- hooks and the API reference ------------------------------------------------------------------


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
    assert f"`{hook}(" in PLUGIN_GUIDE, f"docs/plugins.md does not document {hook}"
    assert getattr(hookspecs, hook).__doc__, f"{hook} has no docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    tests = "".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if "docs" not in p.parts)
    assert f"def {hook}" in tests, f"no test implements {hook}"


def test_every_public_name_is_in_the_api_reference():
    page = (DOCS / "reference" / "automl_bilevel.md").read_text()
    documented = {m.rsplit(".", 1)[-1] for m in re.findall(r"^::: ([\w.]+)", page, flags=re.M)}
    missing = sorted(set(automl_bilevel.__all__) - documented)
    assert not missing, f"docs/reference/automl_bilevel.md lacks {missing}"


# --- the README -----------------------------------------------------------------------------------


def _commands():
    return re.findall(r"```bash\n(python3 -m venv .venv[^\n]*)\n```", README)


def test_the_readme_is_a_front_door():
    assert len(README.splitlines()) <= 250, "the README is the front door: at most 250 lines, guides go to docs/"
    assert "±" not in README, "measurement reports belong in docs/benchmarks.md and benchmarks/results/"


def test_readme_has_the_two_commands():
    setup_run, setup_test = _commands()
    assert setup_run.endswith("automl-bilevel run") and "-c constraints.txt" in setup_run
    assert "pytest" in setup_test and "-c constraints.txt" in setup_test
    assert '".[test,docs]"' in setup_test, "the test command installs what building the docs needs"
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()


def test_ci_runs_the_readme_test_command():
    _, setup_test = _commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == setup_test


def test_the_docs_extra_has_what_building_needs():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = " ".join(extras["docs"])
    assert "mkdocs-material" in names and "mkdocstrings[python]" in names


# --- links ----------------------------------------------------------------------------------------


def _prose(markdown: str) -> str:
    """The markdown without fenced code blocks (whose `#` lines are comments, not headings)."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)


def _slug(heading: str) -> str:
    """The anchor of a heading (GitHub's and MkDocs' agree on the headings used here)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(markdown: str) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", _prose(markdown), flags=re.M)}


def _links(markdown: str) -> list[str]:
    prose = _prose(markdown)
    return re.findall(r"\]\(([^)\s]+)\)", prose) + re.findall(r"<(https?://[^>\s]+)>", prose)


def _tracked() -> set[Path] | None:
    """The files a fresh clone has (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {(ROOT / p).resolve() for p in out.decode().split("\0") if p}


@pytest.mark.parametrize("doc", MARKDOWN, ids=_rel)
def test_every_link_resolves_in_a_fresh_clone(doc):
    """Relative links name files of the repository that git tracks (a clone has nothing beside it,
    and ignored files are not in it) and anchors name headings; web links are well formed (no
    network here to follow them). Anchors into the API reference are checked by mkdocs."""
    tracked = _tracked()
    links = _links(doc.read_text())
    for link in links:
        url = urlparse(link)
        if url.scheme:
            assert url.scheme in ("http", "https", "mailto") and (url.netloc or url.scheme == "mailto"), (
                f"{_rel(doc)}: malformed link {link}"
            )
            continue
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        assert target.is_relative_to(ROOT), f"{_rel(doc)} links {link}, outside the repository"
        assert target.exists(), f"{_rel(doc)} links {link}, which does not exist"
        if tracked is not None:
            in_clone = target in tracked if target.is_file() else any(f.is_relative_to(target) for f in tracked)
            assert in_clone, f"{_rel(doc)} links {link}, which git does not track (a fresh clone lacks it)"
        if anchor and "reference" not in target.parts:
            assert anchor in _anchors(target.read_text()), f"{_rel(doc)} links {link}: no such heading"


def test_the_readme_links_into_the_docs():
    linked = {(ROOT / link.partition("#")[0]).resolve() for link in _links(README) if not urlparse(link).scheme}
    for page in ["index.md", "getting-started.md", "plugins.md", "architecture.md", "benchmarks.md"]:
        assert (DOCS / page).resolve() in linked, f"the README does not link docs/{page}"
    for guide in (DOCS / "guide").glob("*.md"):
        assert guide.resolve() in linked, f"the README does not link {_rel(guide)}"


def test_the_docs_link_no_shared_checkout_files():
    for doc in MARKDOWN:
        text = doc.read_text()
        assert "../shared" not in text and "shared/DESIGN.md" not in text, _rel(doc)


def test_docs_pages_the_examples_point_to_exist():
    cited = {}
    for path in sorted((ROOT / "examples").rglob("*.py")):
        for page in re.findall(r"docs/[\w/.-]+\.md", path.read_text()):
            cited.setdefault(page, []).append(path.name)
    assert "docs/guide/data.md" in cited  # examples 04, 06, 07 point to it
    for page, files in cited.items():
        assert (ROOT / page).is_file(), f"{files} point to {page}, which does not exist"
    for path in (ROOT / "examples").rglob("*.py"):
        assert 'README, "' not in path.read_text(), f"{path.name} still points to a README section"


# --- code blocks ----------------------------------------------------------------------------------

SKIP = re.compile(r"<!-- docs-test: skip \((.+?)\) -->\s*$")


def _python_blocks(doc: Path) -> list[tuple[int, str, str | None]]:
    """(line, code, skip reason) of every ```python block, in order."""
    lines = doc.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            m = SKIP.match(prev.strip())
            blocks.append((start + 1, "\n".join(lines[start:end]) + "\n", m.group(1) if m else None))
            i = end
        i += 1
    return blocks


WITH_CODE = [d for d in MARKDOWN if _python_blocks(d)]


@pytest.mark.parametrize("doc", WITH_CODE, ids=_rel)
def test_every_python_block_runs(doc, tmp_path, monkeypatch):
    """The blocks of one page run in order in one namespace (as a reader pastes them), in a
    temporary folder. MLflow tracking is switched off here for speed (it has its own tests); a block
    that cannot run here is preceded by ``<!-- docs-test: skip (reason) -->``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(automl_bilevel.DISABLE_ENV, "mlflow_tracking")
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    for line, code, skip in _python_blocks(doc):
        if skip is not None:
            assert len(skip) > 10, f"{_rel(doc)}:{line}: say why the block is skipped"
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(code, f"{_rel(doc)}:{line}", "exec"), namespace)  # noqa: S102 - the docs' own code
        ran += 1
    assert ran or doc.name == "plugins.md", f"{_rel(doc)}: every block is skipped"


def test_every_skip_says_why():
    for doc in MARKDOWN:
        for line in doc.read_text().splitlines():
            if line.strip().startswith("<!-- docs-test"):
                assert SKIP.match(line.strip()), f"{_rel(doc)}: malformed marker {line!r}"


def _block(page: str, first_line: str) -> str:
    blocks = [code for _, code, _ in _python_blocks(DOCS / page) if code.startswith(first_line + "\n")]
    assert len(blocks) == 1, f"docs/{page} has {len(blocks)} blocks starting with {first_line!r}"
    return blocks[0]


def test_the_guide_plugin_module_is_a_working_plugin(fake_dist):
    """The plugin guide's module, installed as a package, passes the contract checks and is used by
    name."""
    from sklearn.datasets import load_digits

    from automl_bilevel import ENTRY_POINT_GROUP, BilevelClassifier, get_registry
    from automl_bilevel.testing import check_learner, check_optimizer

    assert f"[project.entry-points.{ENTRY_POINT_GROUP}]" in PLUGIN_GUIDE
    code = _block("plugins.md", "# my_package/plugin.py")
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


def test_the_guide_gradient_optimizer_works_for_hyperparameters_and_meta_training(fake_dist):
    """The plugin guide's gradient-based outer optimizer, installed as a package: a registered
    optimizer that tunes hyperparameters by hypergradients and meta-trains a ProtoNet."""
    from sklearn.datasets import load_digits

    from automl_bilevel import BilevelClassifier, MetaLearnerClassifier, get_registry

    code = _block("plugins.md", "# rms_package/plugin.py")
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


# --- the site -------------------------------------------------------------------------------------


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        assert str(page.relative_to(DOCS)) in nav, f"{_rel(page)} is not in mkdocs.yml's nav"


def test_grouped_numpy_parameters_get_one_entry_each():
    """The API reference's griffe extension repeats a grouped entry per name, so that each name
    gets its own default (griffe would give all of them the first name's)."""
    pytest.importorskip("griffe", reason='griffe comes with the docs extra: pip install -e ".[docs]"')
    from tools.griffe_numpy_groups import split_groups

    doc = "Intro.\n\nParameters\n----------\nn_way, k_shot : int\n    Episode shape.\nseed : int\n    Seed.\n"
    assert split_groups(doc) == (
        "Intro.\n\nParameters\n----------\nn_way : int\n    Episode shape.\nk_shot : int\n    Episode shape.\n"
        "seed : int\n    Seed.\n"
    )
    prose = "Returns\n-------\na, b : tuple\n    Not a parameter section.\n"
    assert split_groups(prose) == prose


def test_mkdocs_build_strict(tmp_path):
    """The site builds with every warning an error: a broken link, a missing page or an API reference
    that names a module or object that does not exist fails here (and in CI, which installs .[docs])."""
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None:
        pytest.skip('mkdocs or mkdocstrings is not installed: install the docs extra, pip install -e ".[docs]"')
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "reference" / "automl_bilevel" / "index.html").exists()
