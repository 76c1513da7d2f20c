"""The README stays true: every hook is documented and tested, and CI runs the README's command."""
from __future__ import annotations

import re

import pytest

from automl_bilevel import hookspecs

from .conftest import ROOT

HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("bilevel_"))
README = (ROOT / "README.md").read_text()


def test_hooks_exist():
    assert HOOKS == ["bilevel_register_learners", "bilevel_register_meta_learners", "bilevel_register_objectives",
                     "bilevel_register_optimizers", "bilevel_run_listener", "bilevel_sync_spool"]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    assert f"`{hook}(" in README, f"README does not document {hook}"
    assert getattr(hookspecs, hook).__doc__, f"{hook} has no docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_docs.py")
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
