"""Plugin loading and the registries the hooks fill.

Built-in domains live in ``plugins/`` and are found through the ``genkit`` entry-point group, exactly
like third-party plugins. ``GENKIT_LOAD_PLUGINS`` is the recovery path when a plugin breaks the CLI:
unset, every installed plugin loads; set to a comma-separated list, only the built-ins and the listed
plugins load (``GENKIT_LOAD_PLUGINS=''`` turns every third-party plugin off).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import GenkitError, warn

# Modules of the core that implement hooks themselves (the built-in losses).
DEFAULT_PLUGINS = ("genkit.losses",)
# Entry points shipped inside the genkit distribution; they load even when GENKIT_LOAD_PLUGINS filters.
BUILTIN_ENTRY_POINTS = frozenset({"image", "audio", "text"})

pm = pluggy.PluginManager("genkit")
pm.add_hookspecs(hookspecs)

_loaded = False
_registry: "Registry | None" = None


def load_plugins() -> None:
    """Load the default plugins and the ``genkit`` entry points, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    allow = os.environ.get("GENKIT_LOAD_PLUGINS")
    allowed = None if allow is None else {p.strip() for p in allow.split(",") if p.strip()}
    for ep in importlib.metadata.entry_points(group="genkit"):
        if pm.has_plugin(ep.name):
            continue
        if allowed is not None and ep.name not in allowed and ep.name not in BUILTIN_ENTRY_POINTS:
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken third-party plugin must not break the CLI
            warn(f"plugin {ep.name!r} ({ep.value}) failed to load and was skipped: {exc}")
            continue
        pm.register(module, name=ep.name)
    pm.check_pending()


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object at run time (tests, notebooks). Returns its name."""
    load_plugins()
    registered = pm.register(plugin, name=name)
    if registered is None:
        raise GenkitError(f"plugin {name!r} is already registered")
    pm.check_pending()
    invalidate()
    return registered


def unregister_plugin(name: str) -> None:
    pm.unregister(name=name)
    invalidate()


def reset() -> None:
    """Forget every loaded plugin (for tests): the next ``registry()`` loads them afresh."""
    global pm, _loaded
    pm = pluggy.PluginManager("genkit")
    pm.add_hookspecs(hookspecs)
    _loaded = False
    invalidate()


def invalidate() -> None:
    global _registry
    _registry = None


@dataclass
class PluginInfo:
    name: str
    version: str
    domains: list[str] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


@dataclass
class Registry:
    domains: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, Any] = field(default_factory=dict)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> plugin name
    plugins: dict[str, PluginInfo] = field(default_factory=dict)

    def domain(self, name: str):
        try:
            return self.domains[name]
        except KeyError:
            raise GenkitError(f"unknown domain {name!r} (available: {', '.join(sorted(self.domains)) or 'none'})") from None

    def loss(self, name: str):
        try:
            return self.losses[name]
        except KeyError:
            raise GenkitError(f"unknown loss {name!r} (available: {', '.join(sorted(self.losses))})") from None


def _plugin_version(plugin: object, name: str) -> str:
    module = getattr(plugin, "__name__", "") or type(plugin).__module__
    top = module.split(".")[0]
    if top in ("genkit", "genkit_image", "genkit_audio", "genkit_text"):
        from . import __version__

        return __version__
    dists = importlib.metadata.packages_distributions().get(top, [])
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return getattr(sys.modules.get(top), "__version__", "unknown")


def registry() -> Registry:
    """The domains and losses every loaded plugin registers (computed once, refreshed on register)."""
    global _registry
    if _registry is not None:
        return _registry
    load_plugins()
    reg = Registry()
    for plugin_name, plugin in pm.list_name_plugin():
        reg.plugins[plugin_name] = PluginInfo(plugin_name, _plugin_version(plugin, plugin_name))

    def collect(kind: str, table: dict[str, Any], hook, attr: str):
        for impl in hook.get_hookimpls():
            owner = impl.plugin_name

            def register(obj, _owner=owner):
                name = getattr(obj, "name", None)
                if not name:
                    raise GenkitError(f"plugin {_owner!r} registered a {kind} without a name")
                if name in table:
                    other = reg.owners[(kind, name)]
                    raise GenkitError(f"{kind} {name!r} is registered by both plugin {other!r} and plugin {_owner!r}")
                table[name] = obj
                reg.owners[(kind, name)] = _owner
                getattr(reg.plugins[_owner], attr).append(name)

            impl.function(register=register)

    collect("domain", reg.domains, pm.hook.genkit_register_domains, "domains")
    collect("loss", reg.losses, pm.hook.genkit_register_losses, "losses")
    _registry = reg
    return reg
