"""The plugin host: built-in plugins plus third-party ones from the ``invkit`` entry point group.

Nothing is imported until it is needed: ``import invkit`` loads no plugin, ``invkit --help``
loads only third-party plugins (for their commands), and the first lookup of a component loads
the built-ins and asks every plugin to register its components.

Environment variables (read when the host is created):

- ``INVKIT_LOAD_PLUGINS=a,b``: load only these third-party distributions (empty: none).
- ``INVKIT_DISABLE_PLUGINS=a,b``: never load these.
- ``INVKIT_STRICT_PLUGINS=1``: a plugin that fails to load or register is an error, not a
  warning.

Names are distribution names as pip shows them (``invkit-jigsaw``); case, ``_`` and ``-`` do not
matter. Built-in plugins always load.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from invkit.errors import InvkitWarning, PluginError
from invkit.plugin import hookspecs
from invkit.registry import KINDS, Registry, component_name, describe

PROJECT = "invkit"
ENTRY_POINT_GROUP = "invkit"
BUILTIN_PLUGINS: tuple[str, ...] = (
    "invkit.builtins.transforms",
    "invkit.builtins.measures",
    "invkit.builtins.layer_measures",
    "invkit.builtins.models",
    "invkit.builtins.datasets",
    "invkit.builtins.hf_datasets",
    "invkit.builtins.shifts",
    "invkit.builtins.analyses",
    "invkit.builtins.estimators",
    "invkit.builtins.executors",
)


class PluginWarning(InvkitWarning):
    """A plugin failed to load or to register its components and was left out."""


@dataclass
class PluginInfo:
    """What ``invkit plugins`` shows about one plugin."""

    name: str
    version: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    unknown_hooks: list[str] = field(default_factory=list)  # implemented, but no such hook
    filtered_by: str | None = None  # installed, not loaded: the variable that left it out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "builtin": self.builtin,
            "hooks": self.hooks,
            "error": self.error,
            "unknown_hooks": self.unknown_hooks,
            "filtered_by": self.filtered_by,
        }


def normalize(name: str) -> str:
    """Distribution names compare as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def _name_set(value: str) -> set[str]:
    return {normalize(n) for n in value.split(",") if n.strip()}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class PluginHost:
    """One pluggy ``PluginManager`` and the component registry built from its plugins."""

    def __init__(self, environ: Mapping[str, str] | None = None, strict: bool | None = None):
        env = os.environ if environ is None else environ
        self.allow: set[str] | None = (
            _name_set(env["INVKIT_LOAD_PLUGINS"]) if "INVKIT_LOAD_PLUGINS" in env else None
        )
        self.block: set[str] = _name_set(env.get("INVKIT_DISABLE_PLUGINS", ""))
        self.strict = _truthy(env.get("INVKIT_STRICT_PLUGINS")) if strict is None else strict
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._info: dict[str, PluginInfo] = {}
        self._entry_points_loaded = False
        self._builtins_loaded = False
        self._registry: Registry | None = None

    # -- loading -----------------------------------------------------------------------------

    def _fail(self, info: PluginInfo, what: str, error: BaseException) -> None:
        info.error = f"{type(error).__name__}: {error}"
        failed = f"invkit plugin {info.name!r} {info.version} failed to {what}: {info.error}"
        if self.strict:
            raise PluginError(
                f"{failed} (strict plugins are on, from INVKIT_STRICT_PLUGINS or "
                "--strict-plugins: fix or upgrade the plugin, uninstall it, or leave it out with "
                f"INVKIT_DISABLE_PLUGINS={info.name})"
            )
        warnings.warn(
            f"{failed}; it is left out (set INVKIT_STRICT_PLUGINS=1 to make this an error, or "
            f"INVKIT_DISABLE_PLUGINS={info.name} to silence it)",
            PluginWarning,
            stacklevel=3,
        )

    def load_entry_points(self) -> None:
        """Import the third-party plugins the allow and block lists admit (once)."""
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        found: set[str] = set()
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = entry_point.dist
            dist_name = dist.name if dist is not None else entry_point.name
            version = dist.version if dist is not None else "unknown"
            key = normalize(dist_name)
            found.add(key)
            name = dist_name if dist_name not in self._info else f"{dist_name}:{entry_point.name}"
            info = PluginInfo(name, version, builtin=False)
            self._info[name] = info
            if key in self.block:
                info.filtered_by = "INVKIT_DISABLE_PLUGINS"
            elif self.allow is not None and key not in self.allow:
                info.filtered_by = "INVKIT_LOAD_PLUGINS"
            if info.filtered_by:
                continue
            try:
                module = entry_point.load()
                self.pm.register(module, name=name)
            except Exception as error:
                self._fail(info, "import", error)
        self._check_hook_names()
        for variable, names in (
            ("INVKIT_LOAD_PLUGINS", self.allow or set()),
            ("INVKIT_DISABLE_PLUGINS", self.block),
        ):
            for missing in sorted(names - found):
                close = difflib.get_close_matches(missing, sorted(found), n=2, cutoff=0.5)
                warnings.warn(
                    f"{variable} names {missing!r}, but no installed distribution of that name "
                    "provides an invkit plugin"
                    + (f"; did you mean {' or '.join(map(repr, close))}?" if close else "")
                    + " (`invkit plugins` lists those installed; names are distribution names)",
                    PluginWarning,
                    stacklevel=2,
                )

    def _check_hook_names(self) -> None:
        """A hook implementation with no such hook (``register_transform`` for
        ``register_transforms``) would add nothing without a word: say so, naming the plugin
        and the closest hook (pluggy's ``check_pending``, for every plugin at once)."""
        known = [name for name in vars(self.pm.hook) if not name.startswith("_")]
        specified = [name for name in known if getattr(self.pm.hook, name).has_spec()]
        for name in sorted(set(known) - set(specified)):
            for impl in getattr(self.pm.hook, name).get_hookimpls():
                info = self._info.get(impl.plugin_name)
                if info is None or impl.optionalhook or name in info.unknown_hooks:
                    continue
                info.unknown_hooks.append(name)
                close = difflib.get_close_matches(name, specified, n=1)
                message = (
                    f"invkit plugin {info.name!r} {info.version} implements {name!r}, which is "
                    "not an invkit hook, so it adds nothing"
                    + (f"; did you mean {close[0]!r}?" if close else "")
                    + " (docs/hooks.md lists the hooks)"
                )
                if self.strict:
                    raise PluginError(message)
                warnings.warn(message, PluginWarning, stacklevel=3)

    def load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        from invkit.version import __version__

        for module_name in BUILTIN_PLUGINS:
            self.pm.register(importlib.import_module(module_name), name=module_name)
            self._info[module_name] = PluginInfo(module_name, __version__, builtin=True)

    def register(self, plugin: object, name: str, version: str = "0") -> None:
        """Register a plugin object at run time (tests, notebooks); the registry is rebuilt."""
        self.pm.register(plugin, name=name)
        self._info[name] = PluginInfo(name, version, builtin=False)
        self._registry = None

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._info.pop(name, None)
        self._registry = None

    # -- queries -----------------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """Every component of every loaded plugin (built on first use)."""
        if self._registry is None:
            self.load_builtins()
            self.load_entry_points()
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        registry = Registry()
        for kind in KINDS.values():
            caller = getattr(self.pm.hook, kind.hook)
            for impl in reversed(caller.get_hookimpls()):  # registration order
                info = self._info.get(impl.plugin_name)
                if info is None or info.error is not None:
                    continue
                collected = []

                def register(factory: Callable[..., Any], name: str | None = None) -> None:
                    named = component_name(factory, name)
                    collected.append(describe(kind, factory, named, impl.plugin_name))  # noqa: B023

                try:
                    impl.function(register=register)
                except Exception as error:
                    self._fail(info, f"register its {kind.name}s", error)
                    continue
                for component in collected:
                    registry.add(component)
        return registry

    def add_commands(self, cli: Any) -> None:
        """Let third-party plugins add CLI commands (built-ins add none)."""
        self.load_entry_points()
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            info = self._info.get(impl.plugin_name)
            if info is None or info.error is not None:
                continue
            try:
                impl.function(cli=cli)
            except Exception as error:
                self._fail(info, "register its commands", error)

    def filtered(self) -> list[PluginInfo]:
        """Installed plugins that the allow or block list left out."""
        self.load_entry_points()
        return [info for info in self._info.values() if info.filtered_by]

    def plugins(self, include_builtins: bool = False) -> list[PluginInfo]:
        """Loaded plugins (and those that failed), with the hooks each implements."""
        self.registry  # noqa: B018 - loading reports register-time failures too
        result = []
        for name, info in self._info.items():
            if info.builtin and not include_builtins:
                continue
            plugin = self.pm.get_plugin(name)
            if plugin is not None:
                info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            result.append(info)
        return sorted(result, key=lambda i: (not i.builtin, i.name))


_host: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, created on first use from the environment."""
    global _host
    if _host is None:
        _host = PluginHost()
    return _host


def reset_host(**kwargs: Any) -> PluginHost:
    """Start a fresh host (re-reading the environment); for tests and long-lived sessions."""
    global _host
    _host = PluginHost(**kwargs)
    return _host


@contextmanager
def temporary_plugin(plugin: object, name: str) -> Iterator[PluginHost]:
    """Register ``plugin`` for the duration of a ``with`` block, then remove it again.

    Plugin authors use this in tests to exercise their hooks without installing the package.
    """
    host = get_host()
    host.register(plugin, name=name)
    try:
        yield host
    finally:
        host.unregister(name)
