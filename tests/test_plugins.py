"""The plugin host with real entry-point plugins: allow and block lists, strict mode, broken
plugins, duplicate names, and run-time registration."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

import invkit
from invkit import hookimpl
from invkit.errors import DuplicateComponentError, PluginError
from invkit.plugins import PluginHost, PluginWarning, temporary_plugin

from .conftest import HERE, run_cli

GOOD = "invkit-hello,invkit-jigsaw"


def transforms_of(host: PluginHost) -> set[str]:
    return {c.name for c in host.registry.all("transform")}


def test_builtins_always_load_even_with_an_empty_allowlist(with_plugin_site):
    host = PluginHost(environ={"INVKIT_LOAD_PLUGINS": ""})
    from invkit.builtins.families import FAMILIES

    assert transforms_of(host) == {"rotation", "grayscale", "compose", *(f.name for f in FAMILIES)}
    names = [p.name for p in host.plugins(include_builtins=True)]
    assert "invkit.builtins.measures" in names
    left_out = host.plugins()  # installed, listed, not loaded, with the variable that says so
    assert left_out and all(p.filtered_by == "INVKIT_LOAD_PLUGINS" for p in left_out)
    assert all(p.hooks == [] for p in left_out)


def test_allowlist_loads_only_the_named_distributions(with_plugin_site):
    host = PluginHost(environ={"INVKIT_LOAD_PLUGINS": "invkit_hello"})  # _ and - are the same
    assert "hflip" in transforms_of(host)
    assert "jigsaw" not in transforms_of(host)
    [info] = [p for p in host.plugins() if not p.filtered_by]
    assert (info.name, info.version, info.hooks) == (
        "invkit-hello",
        "1.2.3",
        ["register_commands", "register_transforms"],
    )


def test_allowlist_warns_about_a_name_that_is_not_installed(with_plugin_site):
    host = PluginHost(environ={"INVKIT_LOAD_PLUGINS": "invkit-hello,invkit-nope"})
    with pytest.warns(PluginWarning, match="invkit-nope"):
        host.registry  # noqa: B018


def test_blocklist_wins(with_plugin_site):
    host = PluginHost(
        environ={"INVKIT_LOAD_PLUGINS": GOOD, "INVKIT_DISABLE_PLUGINS": "invkit-hello"}
    )
    assert "hflip" not in transforms_of(host)
    assert "jigsaw" in transforms_of(host)


def test_broken_plugins_warn_and_everything_else_works(with_plugin_site):
    host = PluginHost(environ={"INVKIT_DISABLE_PLUGINS": "invkit-duplicate"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = transforms_of(host)
        measures = {c.name for c in host.registry.all("measure")}
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert any(
        "'invkit-broken-import' 1.2.3 failed to import" in m
        and "ModuleNotFoundError" in m
        and "invkit_this_module_does_not_exist" in m
        for m in messages
    ), messages
    assert any(
        "'invkit-broken-hook' 1.2.3 failed to register its measures" in m
        and "the measure table is corrupt" in m
        for m in messages
    ), messages
    assert {"hflip", "jigsaw", "rotation"} <= names
    assert "half_registered" not in measures  # a failing hook registers nothing
    assert "ei" in measures
    failed = {p.name: p.error for p in host.plugins() if p.error}
    assert set(failed) == {"invkit-broken-import", "invkit-broken-hook"}


@pytest.mark.parametrize("broken", ["invkit-broken-import", "invkit-broken-hook"])
def test_strict_mode_makes_a_broken_plugin_an_error(with_plugin_site, broken):
    host = PluginHost(environ={"INVKIT_LOAD_PLUGINS": broken, "INVKIT_STRICT_PLUGINS": "1"})
    with pytest.raises(PluginError, match=broken):
        host.registry  # noqa: B018


def test_duplicate_names_name_both_plugins(with_plugin_site):
    host = PluginHost(environ={"INVKIT_LOAD_PLUGINS": "invkit-duplicate"})
    with pytest.raises(DuplicateComponentError) as error:
        host.registry  # noqa: B018
    assert "'invkit.builtins.transforms'" in str(error.value)
    assert "'invkit-duplicate'" in str(error.value)
    assert "transform 'rotation'" in str(error.value)


class ExtraMeasurePlugin:
    """A plugin object registered at run time, as a notebook or a test would."""

    @hookimpl
    def register_measures(self, register):
        def always_one(original, view, labels=None):
            """One for every sample."""
            return original.new_ones(original.shape[0])

        register(always_one, name="one")


def test_temporary_plugin_registers_and_unregisters():
    with temporary_plugin(ExtraMeasurePlugin(), name="extra"):
        assert invkit.get_component("measure", "one").plugin == "extra"
    with pytest.raises(invkit.InvkitError, match="unknown measure 'one'"):
        invkit.get_component("measure", "one")


def test_cli_shows_plugins_and_their_commands(with_plugin_site):
    env = {"INVKIT_LOAD_PLUGINS": GOOD}
    listed = json.loads(run_cli("plugins", "--json", env=env).stdout)
    assert [p["name"] for p in listed if not p["filtered_by"]] == ["invkit-hello", "invkit-jigsaw"]
    assert {p["filtered_by"] for p in listed if p["name"] == "invkit-misspelt"} == {
        "INVKIT_LOAD_PLUGINS"
    }
    everything = json.loads(run_cli("plugins", "--all", "--json", env=env).stdout)
    assert {"invkit.builtins.transforms", "invkit-jigsaw"} <= {p["name"] for p in everything}
    assert "hello" in run_cli("--help", env=env).stdout
    assert run_cli("hello", "tester", env=env).stdout == "hello tester from a plugin\n"


def test_cli_keeps_working_with_broken_plugins_and_fails_in_strict_mode(with_plugin_site):
    env = {"INVKIT_DISABLE_PLUGINS": "invkit-duplicate"}
    result = run_cli("list", "transforms", env=env)
    assert "invkit: warning: invkit plugin 'invkit-broken-import' 1.2.3 failed" in result.stderr
    assert "jigsaw" in result.stdout and "hflip" in result.stdout
    strict = run_cli("--strict-plugins", "list", "transforms", env=env, check=False)
    assert strict.returncode == 1
    assert "invkit: error: invkit plugin 'invkit-broken-import'" in strict.stderr
    strict_env = run_cli("plugins", env=env | {"INVKIT_STRICT_PLUGINS": "1"}, check=False)
    assert strict_env.returncode == 1 and "failed to import" in strict_env.stderr


def test_a_misspelt_hook_is_reported_not_ignored(with_plugin_site):
    env = {"INVKIT_LOAD_PLUGINS": "invkit-misspelt"}
    result = run_cli("plugins", env=env)
    warning = (
        "invkit: warning: invkit plugin 'invkit-misspelt' 0.3.0 implements 'register_transform', "
        "which is not an invkit hook, so it adds nothing; did you mean 'register_transforms'?"
    )
    assert warning in result.stderr
    assert "unknown hooks (ignored): register_transform" in result.stdout
    listed = json.loads(run_cli("plugins", "--json", env=env).stdout)
    [misspelt] = [p for p in listed if p["name"] == "invkit-misspelt"]
    assert misspelt["unknown_hooks"] == ["register_transform"]
    strict = run_cli("--strict-plugins", "list", "transforms", env=env, check=False)
    assert strict.returncode == 1
    assert "invkit: error: invkit plugin 'invkit-misspelt'" in strict.stderr


def test_filtered_plugins_are_listed_and_named_when_their_component_is_asked_for(
    with_plugin_site,
):
    env = {"INVKIT_LOAD_PLUGINS": GOOD, "INVKIT_DISABLE_PLUGINS": "invkit-hello,invkit-helo"}
    result = run_cli("plugins", env=env)
    assert "invkit-hello 1.2.3 (plugin)\n  not loaded: left out by INVKIT_DISABLE_PLUGINS" in (
        result.stdout
    )
    assert "INVKIT_DISABLE_PLUGINS names 'invkit-helo', but no installed distribution" in (
        result.stderr
    )
    assert "did you mean 'invkit-hello'" in result.stderr
    unknown = run_cli("list", "--json", env=env)  # the registry itself still works
    assert "hflip" not in unknown.stdout
    base = (HERE / "study_files" / "base.toml").read_text()
    text = base.replace('transforms = ["rotation", "grayscale"]', 'transforms = ["hflip"]')
    config = Path(with_plugin_site).parent / "hflip.toml"
    config.write_text(text)
    failed = run_cli("check", str(config), env=env, check=False)
    assert "unknown transform 'hflip'" in failed.stderr
    assert "installed but not loaded: " in failed.stderr
    assert "invkit-hello (INVKIT_DISABLE_PLUGINS)" in failed.stderr


def test_strict_mode_says_so_without_a_traceback(with_plugin_site):
    env = {"INVKIT_LOAD_PLUGINS": "invkit-broken-import", "INVKIT_STRICT_PLUGINS": "1"}
    result = run_cli("plugins", env=env, check=False)
    assert result.returncode == 1
    assert "strict plugins are on" in result.stderr and "Traceback" not in result.stderr
    assert "set INVKIT_STRICT_PLUGINS=1" not in result.stderr
