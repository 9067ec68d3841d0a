"""Plugin loading and the registries the hooks fill.

Built-in domains live in ``plugins/`` and are found through the ``genkit`` entry-point group, exactly
like third-party plugins; "built-in" only means "shipped in the genkit distribution", and the core names
none of them. ``GENKIT_LOAD_PLUGINS`` is the recovery path when a plugin breaks the CLI: unset, every
installed plugin loads; set to a comma-separated list, only the built-ins and the listed plugins load
(``GENKIT_LOAD_PLUGINS=''`` turns every third-party plugin off).

A registered domain is checked here, once: its ``Options`` must be a dataclass genkit can type, no option
may take the name of an engine setting, a command option or a reserved word, and its recipe and presets may
name only known settings. A domain that fails is rejected with one line naming the plugin and the option.
Domains written against the first plugin API (``genkit.Option`` tuples, a ``pretrain`` method, an
``evaluate`` override without ``evaluates = True``) are adapted here, with one deprecation line each.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import keyword
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import GenkitError, deprecated, first_line, warn, warn_once

# Modules of the core that implement hooks themselves (the built-in losses).
DEFAULT_PLUGINS = ("genkit.losses",)
# The distribution genkit itself ships in: its entry points are the built-ins, loaded even when
# GENKIT_LOAD_PLUGINS filters.
CORE_DISTRIBUTION = "genkit"
DOMAIN_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_versions: dict[str, str] = {}
_builtin: set[str] = set()  # plugins shipped with genkit: on a name clash they keep the name
RECOVERY = "GENKIT_LOAD_PLUGINS lists the plugins to load"


def unknown_domain(name: str, domains: Any) -> str:
    """The one line for an unknown domain name; it says when GENKIT_LOAD_PLUGINS left third-party plugins out."""
    line = f"unknown domain {name!r} (available: {', '.join(sorted(domains)) or 'none'})"
    allow = os.environ.get("GENKIT_LOAD_PLUGINS")
    if allow is not None:
        line += f"; GENKIT_LOAD_PLUGINS={allow!r} limits the third-party plugins loaded"
    return line


# The methods every domain must implement (genkit.Domain's raise NotImplementedError).
REQUIRED_METHODS = ("load_data", "build_models", "sample_latent", "write_snapshot", "write_samples")

pm = pluggy.PluginManager("genkit")
pm.add_hookspecs(hookspecs)

_loaded = False
_registry: Registry | None = None


def load_plugins() -> None:
    """Load the default plugins and the ``genkit`` entry points, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import __version__

    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
        _versions[name] = __version__
        _builtin.add(name)
    allow = os.environ.get("GENKIT_LOAD_PLUGINS")
    allowed = None if allow is None else {p.strip() for p in allow.split(",") if p.strip()}
    for ep in importlib.metadata.entry_points(group="genkit"):
        if pm.has_plugin(ep.name):
            continue
        dist = getattr(ep, "dist", None)
        builtin = dist is not None and dist.name == CORE_DISTRIBUTION
        if allowed is not None and ep.name not in allowed and not builtin:
            continue
        if builtin:
            _builtin.add(ep.name)
        try:  # a broken third-party plugin must not break the CLI
            module = ep.load()
            pm.register(module, name=ep.name)
            pm.check_pending()
        except Exception as exc:
            if pm.has_plugin(ep.name):
                pm.unregister(name=ep.name)
            first = first_line(exc)
            warn(f"plugin {ep.name!r} ({ep.value}) failed to load and was skipped: {first} ({RECOVERY})")
            continue
        if dist is not None:
            _versions[ep.name] = dist.version


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object at run time (tests, notebooks). Returns its name.

    A domain of the plugin that fails the registration checks raises ``GenkitError`` (and the plugin is removed).
    """
    load_plugins()
    current = pm.get_name(plugin)
    if current is not None:  # installed (loaded from its entry point) and registered again by a test
        if name is None or name == current:
            invalidate()
            return current
        pm.unregister(name=current)  # the same module under the name the caller asked for
    if name is not None and pm.get_plugin(name) is not None:
        raise GenkitError(f"plugin name {name!r} is already taken by another plugin object")
    registered = pm.register(plugin, name=name)
    if registered is None:  # pragma: no cover - pluggy blocked the name
        raise GenkitError(f"plugin {name!r} is blocked")
    try:
        pm.check_pending()
    except Exception:
        pm.unregister(name=registered)
        raise
    invalidate()
    problems = [msg for owner, msg in registry().rejected if owner == registered]
    if problems:
        unregister_plugin(registered)
        raise GenkitError(problems[0])
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
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (plugin, one-line reason)

    def domain(self, name: str):
        try:
            return self.domains[name]
        except KeyError:
            raise GenkitError(unknown_domain(name, self.domains)) from None

    def loss(self, name: str):
        try:
            return self.losses[name]
        except KeyError:
            raise GenkitError(f"unknown loss {name!r} (available: {', '.join(sorted(self.losses))})") from None


def _plugin_version(plugin: object, name: str) -> str:
    if name in _versions:
        return _versions[name]
    module = getattr(plugin, "__name__", "") or type(plugin).__module__
    top = module.split(".")[0]
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

    def reject(owner: str, problem: str) -> None:
        reg.rejected.append((owner, problem))
        warn_once(f"{problem} ({RECOVERY})")

    def collect(kind: str, table: dict[str, Any], hook, attr: str):
        # Built-ins first, then plugins in the order they were loaded: the first to claim a name keeps it.
        impls = sorted(hook.get_hookimpls(), key=lambda impl: impl.plugin_name not in _builtin)
        for impl in impls:
            owner = impl.plugin_name

            def register(obj, _owner=owner):
                name = getattr(obj, "name", None)
                if not name:
                    raise GenkitError(f"plugin {_owner!r} registered a {kind} without a name")
                if kind == "domain":
                    problem = prepare_domain(obj, _owner)
                    if problem:
                        reject(_owner, problem)
                        return
                if name in table:
                    other = reg.owners[(kind, name)]
                    reject(_owner, f"plugin {_owner!r}: {kind} {name!r} is already registered by plugin {other!r}; "
                                   "skipped it")
                    return
                table[name] = obj
                reg.owners[(kind, name)] = _owner
                getattr(reg.plugins[_owner], attr).append(name)

            try:
                impl.function(register=register)
            except Exception as exc:  # a plugin's hook that raises must not take down every command
                first = first_line(exc)
                reject(owner, f"plugin {owner!r}: its genkit_register_{kind}s hook failed ({exc.__class__.__name__}: "
                              f"{first}); what it registers was skipped")

    collect("domain", reg.domains, pm.hook.genkit_register_domains, "domains")
    collect("loss", reg.losses, pm.hook.genkit_register_losses, "losses")
    _registry = reg
    return reg


def prepare_domain(domain: Any, owner: str) -> str | None:
    """Check a domain at registration (and adapt the first plugin API); a one-line reason when it is rejected."""
    from .config import COMMAND_OPTIONS, RESERVED, TRAIN_SETTINGS
    from .domain import Domain, NoOptions, Phase
    from .options import from_option_tuples, settings

    name = domain.name
    where = f"plugin {owner!r}: domain {name!r}"
    if not DOMAIN_NAME.match(name):
        return f"{where} rejected: a domain name is lower-case letters, digits, '-' and '_'"
    if not isinstance(domain, Domain):
        return f"{where} rejected: it is a {type(domain).__name__}, not a genkit.Domain subclass instance"
    if domain.options and domain.Options is NoOptions:
        deprecated(f"{where} declares genkit.Option tuples; declare an Options dataclass of genkit.option fields "
                   "instead (docs/plugins.md)")
        class_name = "".join(part.capitalize() for part in re.split(r"[-_]", name)) + "Options"
        domain.Options = from_option_tuples(class_name, domain.options)
        setattr(domain, "_legacy_api", True)  # noqa: B010 (read back with getattr by Domain.save_data_meta)
    try:
        declared = settings(domain.Options)
    except Exception as exc:  # TypeError for an untypable field, NameError for an annotation it cannot resolve
        return f"{where} rejected: its Options: {exc.__class__.__name__}: {exc}"
    bools = {s.name for s in declared if s.kind is bool}
    for s in declared:
        if s.name.startswith("no_") and s.name[3:] in bools:
            return f"{where} rejected: option {s.name!r} collides with --no-{s.name[3:].replace('_', '-')}; rename it"
        if s.name in TRAIN_SETTINGS:
            return f"{where} rejected: option {s.name!r} collides with the engine setting {s.flag}; rename it"
        if s.name in COMMAND_OPTIONS:
            return f"{where} rejected: option {s.name!r} collides with the command option {s.flag}; rename it"
        if s.name in RESERVED or keyword.iskeyword(s.name) or s.name.startswith("_"):
            return f"{where} rejected: option {s.name!r} is a reserved name; rename it"
    known = set(TRAIN_SETTINGS) | {s.name for s in declared}
    try:
        domain.Options()
    except Exception as exc:
        return f"{where} rejected: its Options defaults fail their own checks ({_message(exc)})"
    data_recipes = getattr(domain, "data_recipes", {})
    bundles = {"recipe": domain.recipe,
               **{f"recipe for --data {k}": {**domain.recipe, **v} for k, v in data_recipes.items()},
               **{f"preset {k!r}": {**domain.recipe, **v} for k, v in domain.presets.items()}}
    for label, values in bundles.items():
        unknown = sorted(set(values) - known)
        if unknown:
            return f"{where} rejected: its {label} sets {unknown[0]!r}, which is neither an engine setting nor an option"
        try:  # the values too: a recipe that fails its own checks would break every --help
            check_bundle(domain, values)
        except Exception as exc:
            return f"{where} rejected: its {label}: {_message(exc)}"
    if not domain.phases and callable(getattr(domain, "pretrain", None)):
        deprecated(f"{where} overrides pretrain(); declare phases = (genkit.Phase('pretrain', 'pretrain'),) and stop "
                   "when control.stop_requested (docs/plugins.md)")
        domain.phases = (Phase("pretrain", "pretrain", "pre-training"),)
    if not domain.evaluates and type(domain).evaluate is not Domain.evaluate:
        deprecated(f"{where} overrides evaluate() without declaring evaluates = True")
        domain.evaluates = True
    for phase in domain.phases:
        if not callable(getattr(domain, phase.method, None)):
            return f"{where} rejected: phase {phase.name!r} names method {phase.method!r}, which it does not have"
    if not dataclasses.is_dataclass(domain.Options):  # pragma: no cover - settings() checked it
        return f"{where} rejected: Options is not a dataclass"
    missing = [m for m in REQUIRED_METHODS if getattr(type(domain), m) is getattr(Domain, m)]
    if not domain.data_names and type(domain).default_data is Domain.default_data:
        missing.append("default_data (or data_names)")
    if missing:
        return f"{where} rejected: it does not implement {', '.join(missing)} (docs/plugins.md: The Domain protocol)"
    return None


def _message(exc: Exception) -> str:
    return exc.format_message() if isinstance(exc, GenkitError) else f"{exc.__class__.__name__}: {exc}"


def check_bundle(domain: Any, values: dict[str, Any]) -> None:
    """Raise if a recipe or preset (flat engine settings and options) fails the settings' own checks."""
    from .config import TRAIN_SETTINGS, TrainConfig
    from .options import build

    train = {k: v for k, v in values.items() if k in TRAIN_SETTINGS}
    build(TrainConfig, train)
    build(domain.Options, {k: v for k, v in values.items() if k not in TRAIN_SETTINGS})
