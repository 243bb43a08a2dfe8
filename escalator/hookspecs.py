"""pluggy hook specifications: the one way built-ins and third parties extend escalator.

A plugin is a module or object with functions marked ``@escalator.hookspecs.hookimpl`` whose
names are those below. Third parties register through the entry-point group ``escalator`` (or
a ``plugins_dir`` in the config); built-ins are listed once in
:data:`escalator.plugins.BUILTIN_PLUGINS` and registered the same way. Every hook is documented
with its signature and an example in ``docs/plugins.md``.
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


@hookspec(firstresult=True)
def render_notification(context: Any) -> Any:
    """Render one message: return an ``escalator.delivery.render.Rendered`` for ``context``, or None to pass."""


@hookspec
def track_incident(incident_id: int, entry: Any) -> None:
    """Observe a committed incident transition (``entry``: an ``escalator.store.TimelineEntry``)."""


@hookspec
def track_delivery(notification: Any, result: Any) -> None:
    """Observe a recorded delivery attempt (``result``: an ``escalator.delivery.channels.DeliveryResult``)."""


@hookspec
def startup(daemon: Any) -> None:
    """Called once the daemon is up (store, config, channels, sources), before READY."""


@hookspec
def shutdown(daemon: Any) -> None:
    """Called once when the daemon stops, after input stopped and sends drained."""
