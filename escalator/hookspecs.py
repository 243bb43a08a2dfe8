"""pluggy hook specifications: the one way built-ins and third parties extend escalator.

A plugin is a module or object with functions marked ``@escalator.hookimpl`` whose names are
those below. Third parties register through the entry-point group ``escalator``; built-ins are
listed once in :data:`escalator.plugins.BUILTIN_PLUGINS` and registered the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("escalator")
hookimpl = pluggy.HookimplMarker("escalator")


@hookspec
def register_channels(register: Callable[[type[Any]], None]) -> None:
    """Register channel classes: call ``register(ChannelClass)`` once per channel type."""


@hookspec
def register_sources(register: Callable[[type[Any]], None]) -> None:
    """Register source classes: call ``register(SourceClass)`` once per source type."""
