"""The plugin manager: loads built-ins and entry-point plugins, collects channel and source types."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import pluggy

from escalator import hookspecs

BUILTIN_PLUGINS = (
    "escalator_plugins.console",
    "escalator_plugins.spool",
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


def get_plugin_manager(*, entry_points: bool = True, extra: tuple[Any, ...] = ()) -> pluggy.PluginManager:
    """A plugin manager with the built-ins, ``extra`` plugin objects, and (unless
    ``entry_points=False``) the ``escalator`` entry-point group loaded.

    Raises :class:`PluginError` when a plugin implements a hook that does not exist
    (``check_pending``), so a misspelled hook fails loudly at start-up.
    """
    pm = pluggy.PluginManager("escalator")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    for plugin in extra:
        pm.register(plugin)
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
        elif dist is not None:
            origin = f"entry point ({dist.project_name} {dist.version})"
        else:
            origin = "registered object"
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({"name": name, "origin": origin, "hooks": hooks})
    return out
