"""The plugin manager: loads built-ins and entry-point plugins, collects channel and source types
and the engine's rules."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from escalator import hookspecs

if TYPE_CHECKING:
    from escalator.config.models import Config
    from escalator.engine.rules import Rule

BUILTIN_PLUGINS = (
    "escalator_plugins.console",
    "escalator_plugins.spool",
    "escalator_plugins.rendering",
    "escalator_plugins.email",
    "escalator_plugins.dingtalk",
    "escalator_plugins.wecom",
    "escalator_plugins.feishu",
    "escalator_plugins.apprise_channel",
    "escalator_plugins.sms_http",
    "escalator_plugins.smstools",
    "escalator_plugins.aliyun_sms",
    "escalator_plugins.tencent_sms",
    "escalator_plugins.aliyun_voice",
    "escalator_plugins.tencent_voice",
    "escalator.school.plugin",
)
"""Built-in plugin modules, registered exactly like third-party ones."""


class PluginError(Exception):
    """A plugin could not be loaded or registered something invalid."""


@dataclass
class Registry:
    """What the plugins registered: channel and source classes by their ``type_name``."""

    channels: dict[str, type[Any]] = field(default_factory=dict)
    sources: dict[str, type[Any]] = field(default_factory=dict)


def _adder(kind: str, table: dict[str, type[Any]]) -> Any:
    def register(cls: type[Any]) -> None:
        name = getattr(cls, "type_name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"{kind} class {cls!r} has no type_name")
        if name in table and table[name] is not cls:
            raise PluginError(f"{kind} type {name!r} registered twice ({table[name]!r}, {cls!r})")
        table[name] = cls

    return register


LOCAL_PREFIX = "escalator_local_plugins."
"""Module-name prefix of plugins loaded from a config's ``plugins_dir``."""


def load_plugins_dir(pm: pluggy.PluginManager, folder: Path) -> None:
    """Register every ``*.py`` file in ``folder`` (sorted by name) as a plugin.

    Raises :class:`PluginError` naming the file when one cannot be imported.
    """
    if not folder.is_dir():
        raise PluginError(f"plugins_dir {folder} is not a folder")
    for path in sorted(folder.glob("*.py")):
        name = LOCAL_PREFIX + path.stem
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise PluginError(f"cannot load plugin {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise PluginError(f"plugin {path} failed to import: {type(e).__name__}: {e}") from e
        pm.register(module, name=name)


def get_plugin_manager(*, entry_points: bool = True, extra: tuple[Any, ...] = (),
                       plugins_dir: Path | None = None) -> pluggy.PluginManager:
    """A plugin manager with the built-ins, ``extra`` plugin objects, the ``*.py`` files of
    ``plugins_dir``, and (unless ``entry_points=False``) the ``escalator`` entry-point group.

    Raises :class:`PluginError` when a plugin cannot be loaded or implements a hook that does
    not exist (``check_pending``), so a misspelled hook fails loudly at start-up.
    """
    pm = pluggy.PluginManager("escalator")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    for plugin in extra:
        pm.register(plugin)
    if plugins_dir is not None:
        load_plugins_dir(pm, plugins_dir)
    if entry_points:
        pm.load_setuptools_entrypoints("escalator")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise PluginError(str(e)) from e
    return pm


def collect(pm: pluggy.PluginManager) -> Registry:
    """Call the registration hooks and return the :class:`Registry`."""
    reg = Registry()
    pm.hook.register_channels(register=_adder("channel", reg.channels))
    pm.hook.register_sources(register=_adder("source", reg.sources))
    return reg


def describe(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """One dict per plugin: ``name``, ``origin`` (built-in / entry point dist / object), ``hooks``."""
    dists = {id(p): d for p, d in pm.list_plugin_distinfo()}
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist = dists.get(id(plugin))
        if name in BUILTIN_PLUGINS:
            origin = "built-in"
        elif name.startswith(LOCAL_PREFIX):
            origin = f"plugins_dir ({getattr(plugin, '__file__', '?')})"
        elif dist is not None:
            origin = f"entry point ({dist.project_name} {dist.version})"
        else:
            origin = "registered object"
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({"name": name, "origin": origin, "hooks": hooks})
    return out


def plugins_dir_of(config: Config) -> Path | None:
    """The config's ``plugins_dir`` (relative to the config file's folder), or None."""
    return config.base_dir / config.plugins_dir if config.plugins_dir else None


def collect_rules(pm: pluggy.PluginManager, config: Config) -> list[Rule]:
    """The engine's rules from every plugin's ``escalator_rules(config)``, in plugin
    registration order (built-ins first, then ``extra`` objects, ``plugins_dir`` files by name,
    entry points), each plugin's in its own order. Raises :class:`PluginError` when a plugin
    returns something that is not a list of objects with a ``name``, or two rules share a name."""
    rules: list[Rule] = []
    for returned in reversed(pm.hook.escalator_rules(config=config)):  # pluggy: last first
        if not isinstance(returned, list | tuple):
            raise PluginError(f"escalator_rules returned {type(returned).__name__}, not a list")
        for rule in returned:
            if not isinstance(getattr(rule, "name", None), str) or not rule.name:
                raise PluginError(f"rule {rule!r} has no name")
            rules.append(rule)
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise PluginError(f"two rules share a name: {', '.join(names)}")
    return rules


def rules_for(config: Config) -> list[Rule]:
    """:func:`collect_rules` of the plugins ``config`` names: the built-ins, its
    ``plugins_dir`` and the entry points (what the daemon loads)."""
    return collect_rules(get_plugin_manager(plugins_dir=plugins_dir_of(config)), config)
