"""Broken third-party plugins are reported by plugin name (issue 24): a listener module without a
docstring, a misspelt hook name, a listener factory that raises (the CLI names the plugin)."""

from __future__ import annotations

import json

import pytest

from automl_bilevel import get_registry
from automl_bilevel.frontends.cli import main

NO_DOCSTRING = """
from automl_bilevel import hookimpl
@hookimpl
def bilevel_run_listener(context):
    return None
"""

MISSPELT = """
'''A plugin whose hook name has a typo.'''
from automl_bilevel import hookimpl
@hookimpl
def bilevel_run_listner(context):
    return None
"""

FAILING_LISTENER = """
'''A listener whose factory raises.'''
from automl_bilevel import hookimpl
@hookimpl
def bilevel_run_listener(context):
    raise ConnectionError("dashboard is down")
"""


def test_a_listener_module_without_a_docstring_is_listed(fake_dist, capsys):
    fake_dist("nodoc-pkg", {"nodoc": "nodoc_mod"}, {"nodoc_mod": NO_DOCSTRING})
    assert main(["plugins"]) == 0
    assert any(line.split()[:3] == ["listener", "nodoc", "nodoc"] for line in capsys.readouterr().out.splitlines())
    assert main(["plugins", "--json"]) == 0
    [rec] = [r for r in json.loads(capsys.readouterr().out)["plugins"] if r["name"] == "nodoc"]
    assert rec["description"] == ""


def test_a_misspelt_hook_is_reported_by_plugin_name(fake_dist, capsys):
    fake_dist("typo-pkg", {"typo": "typo_mod"}, {"typo_mod": MISSPELT})
    with pytest.warns(
        RuntimeWarning, match=r"plugin 'typo' .* is skipped: .*unknown hook\(s\) \['bilevel_run_listner'\]"
    ):
        reg = get_registry()
    [err] = [e for e in reg.load_errors if e.plugin == "typo"]
    assert "bilevel_run_listner" in err.error and "bilevel_run_listener" in err.error  # the known names
    with pytest.warns(RuntimeWarning):
        assert main(["plugins"]) == 0
    assert "FAILED TO LOAD  typo (typo-pkg): PluginValidationError: unknown hook(s)" in capsys.readouterr().out


def test_when_a_listener_factory_raises_the_cli_names_the_plugin(fake_dist, tmp_path, capsys):
    fake_dist("listener-pkg", {"dashboard": "dash_mod"}, {"dash_mod": FAILING_LISTENER})
    toml = tmp_path / "exp.toml"
    toml.write_text(
        '[data]\ndataset = "iris"\n[estimator]\nlearner = "sklearn"\nobjective = "val_error"\n'
        'optimizer = "random"\nn_iter = 1\n[tracking]\nenabled = false\n'
    )
    assert main(["run", str(toml), "-q"]) == 2
    err = capsys.readouterr().err
    assert "ConnectionError: dashboard is down" in err
    assert "plugin 'dashboard'" in err and "AUTOML_BILEVEL_DISABLE_PLUGINS=dashboard" in err
