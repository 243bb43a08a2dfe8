"""pluggy hook specifications: the one way built-ins and third parties extend escalator.

A plugin is a module or object with functions marked ``@escalator.hookspecs.hookimpl`` whose
names are those below. Third parties register through the entry-point group ``escalator`` (or
a ``plugins_dir`` in the config); built-ins are listed once in
:data:`escalator.plugins.BUILTIN_PLUGINS` and registered the same way. Every hook is documented
with its signature and an example in ``docs/plugins.md``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from escalator.clock import Clock
    from escalator.config.models import Config
    from escalator.delivery.channels import Channel, DeliveryResult
    from escalator.delivery.quiet_hours import SchoolHours
    from escalator.delivery.render import RenderContext, Rendered
    from escalator.engine.engine import IngestResult, Submission
    from escalator.engine.rules import Rule
    from escalator.events import Event
    from escalator.store.base import Notification, TimelineEntry

hookspec = pluggy.HookspecMarker("escalator")
hookimpl = pluggy.HookimplMarker("escalator")


@dataclass(frozen=True)
class PluginContext:
    """What :func:`startup` and :func:`shutdown` get: a narrow view of the running daemon.

    ``config``: the running config at the time of the call. ``clock``: the daemon's clock
    (``now()``: aware UTC). ``submit(events, source)``: a coroutine that commits events
    (:class:`~escalator.events.Event` or :class:`~escalator.engine.engine.Submission`) durably
    under intake source ``source``, as a source's ``context.ingest`` does, and returns their
    :class:`~escalator.engine.engine.IngestResult`; it raises what intake raises (e.g.
    :class:`~escalator.store.base.StoreUnavailable`). ``log``: a structlog logger bound with
    ``plugin_hook`` (the hook's name).
    """

    config: Config
    clock: Clock
    submit: Callable[[list[Event | Submission], str], Awaitable[list[IngestResult]]]
    log: Any  # a structlog bound logger (structlog's own type is a proxy)


@hookspec
def register_channels(register: Callable[[type[Channel]], None]) -> None:
    """Register channel classes: call ``register(ChannelClass)`` once per channel type."""


@hookspec
def register_sources(register: Callable[[type[Any]], None]) -> None:
    """Register source classes: call ``register(SourceClass)`` once per source type
    (the contract: :mod:`escalator.intake.sources`)."""


@hookspec(firstresult=True)
def render_notification(context: RenderContext) -> Rendered | None:
    """Render one message: return a :class:`~escalator.delivery.render.Rendered` for
    ``context``, or None to pass."""


@hookspec
def track_incident(incident_id: int, entry: TimelineEntry) -> None:
    """Observe a committed incident transition (``entry``: a timeline entry)."""


@hookspec
def track_delivery(notification: Notification, result: DeliveryResult) -> None:
    """Observe a recorded delivery attempt of ``notification``."""


@hookspec
def escalator_rules(config: Config) -> list[Rule]:
    """Rules for the engine (:class:`~escalator.engine.rules.Rule`), in the order they are to
    be called; ``config``: the config the engine starts with (or is reloaded to)."""
    raise NotImplementedError  # a specification: pluggy calls the plugins' implementations


@hookspec(firstresult=True)
def school_hours(config: Config) -> SchoolHours | None:
    """When the school is open, for quiet hours (docs/quiet-hours.md): an object whose
    ``opens_at(at)`` gives ``at`` inside school hours, else the next school day's start (aware
    UTC); or None to pass. The built-in one is the school calendar's."""


@hookspec
def startup(context: PluginContext) -> None:
    """Called once the daemon is up (store, config, channels, sources), before READY."""


@hookspec
def shutdown(context: PluginContext) -> None:
    """Called once when the daemon stops, after input stopped and sends drained."""
