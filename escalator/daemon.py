"""The daemon: wires config, store, plugins, engine, delivery and sources, and runs the loop.

One asyncio loop. The engine loop ticks (fires due steps), runs the delivery worker, then
sleeps until the next timer in the store, a wake-up from intake, or at most
:data:`MAX_IDLE` seconds (so rows written by another process, e.g. ``escalator ack``, are seen).
Sources run as supervised tasks: a crashed source is logged and restarted with backoff.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pluggy
import structlog

from escalator.clock import Clock, SystemClock
from escalator.config import Config, ConfigError, Problem, load_config
from escalator.config.load import resolve_secrets
from escalator.delivery import Delivery
from escalator.engine import Engine, IngestResult, Submission
from escalator.events import Event
from escalator.plugins import Registry, collect, get_plugin_manager
from escalator.settings import Settings
from escalator.sources import SourceContext
from escalator.store import SQLiteStore

log = structlog.get_logger("escalator.daemon")

MAX_IDLE = 1.0
"""Longest sleep of the engine loop (seconds)."""
SOURCE_BACKOFF_MAX = 60.0


def plugin_problems(config: Config, registry: Registry) -> list[Problem]:
    """Channel and source types in ``config`` that no installed plugin provides."""
    out = []
    for cid, ch in config.channels.items():
        if ch.type not in registry.channels:
            out.append(Problem(f"channels.{cid}.type", None,
                               f"unknown channel type {ch.type!r} (installed: "
                               f"{', '.join(sorted(registry.channels))})"))
    for sid, src in config.sources.items():
        if src.type not in registry.sources:
            out.append(Problem(f"sources.{sid}.type", None,
                               f"unknown source type {src.type!r} (installed: "
                               f"{', '.join(sorted(registry.sources))})"))
    return out


def build_channels(config: Config, registry: Registry) -> dict[str, Any]:
    """Instantiate every configured channel. Raises :class:`ConfigError` naming each bad one
    (unknown type, missing secret, bad option); secret values never appear in the message."""
    problems = plugin_problems(config, registry)
    channels: dict[str, Any] = {}
    for cid, ch in config.channels.items():
        if ch.type not in registry.channels:
            continue
        try:
            channels[cid] = registry.channels[ch.type](cid, resolve_secrets(ch.options, config.base_dir))
        except (ValueError, TypeError) as e:
            problems.append(Problem(f"channels.{cid}.options", None, str(e)))
    if problems:
        raise ConfigError(config.source or "config", problems)
    return channels


class Daemon:
    """A running escalator. ``clock`` defaults to the wall clock; ``plugin_manager`` to the
    built-ins plus entry points."""

    def __init__(self, config: Config, settings: Settings, *, clock: Clock | None = None,
                 plugin_manager: pluggy.PluginManager | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.pm = plugin_manager or get_plugin_manager()
        self.registry = collect(self.pm)
        self.config = config
        channels = build_channels(config, self.registry)
        if config.daemon.public_base_url is None and settings.public_base_url:
            config.daemon.public_base_url = settings.public_base_url
        self.store = SQLiteStore(settings.database)
        self.engine = Engine(self.store, config, self.clock)
        self.delivery = Delivery(self.store, config, channels, self.clock)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # intake for sources
    async def ingest(self, events: list[Event | Submission], source: str) -> list[IngestResult]:
        results = self.engine.ingest_many(events, source=source)
        self._wake.set()
        return results

    async def ingest_file(self, events: list[Event | Submission], sha256: str, name: str,
                          source: str) -> list[IngestResult] | None:
        results = self.engine.ingest_file(events, sha256=sha256, name=name, source=source)
        self._wake.set()
        return results

    def stop(self) -> None:
        """Ask the daemon to stop (SIGTERM, SIGINT)."""
        self._stop.set()
        self._wake.set()

    def reload(self) -> bool:
        """Re-read the config file (SIGHUP). On any error the running config stays and the
        error is logged. Returns whether the new config is in use."""
        path = self.config.source
        try:
            config = load_config(path)
            channels = build_channels(config, self.registry)
        except ConfigError as e:
            log.error("config_reload_failed", path=str(path),
                      problems=[str(p) for p in e.problems if p.level == "error"])
            return False
        config.daemon.public_base_url = config.daemon.public_base_url or self.settings.public_base_url
        self.config = config
        self.engine.reload(config)
        self.delivery.reload(config, channels)
        log.info("config_reloaded", path=str(path))
        return True

    def _sources(self) -> list[tuple[str, Any]]:
        ctx = SourceContext(settings=self.settings, config=self.config, clock=self.clock,
                            ingest=self.ingest, ingest_file=self.ingest_file)
        return [(sid, self.registry.sources[sc.type](sid, resolve_secrets(sc.options, self.config.base_dir), ctx))
                for sid, sc in self.config.sources.items()]

    async def _supervise(self, sid: str, source: Any) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                await source.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("source_crashed", source=sid, restart_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, SOURCE_BACKOFF_MAX)

    async def run(self) -> None:
        """Run until :meth:`stop`. Releases sends a crash left in flight, starts the sources,
        and runs the engine loop."""
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop),
                             (signal.SIGHUP, self.reload)):
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (tests)
        released = self.delivery.release_claims()
        if released:
            log.warning("sends_released_after_restart", count=released)
        self._tasks = [asyncio.create_task(self._supervise(sid, s), name=f"source:{sid}")
                       for sid, s in self._sources()]
        log.info("escalator_started", database=str(self.settings.database),
                 sources=[t.get_name() for t in self._tasks], channels=sorted(self.delivery.channels))
        try:
            while not self._stop.is_set():
                await self.step()
                await self._sleep()
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.store.close()
            log.info("escalator_stopped")

    async def step(self) -> None:
        """One pass of the engine loop: fire due steps, then send due notifications."""
        while self.engine.tick() and not self._stop.is_set():
            pass
        while await self.delivery.run_once() and not self._stop.is_set():
            pass

    async def _sleep(self) -> None:
        due = self.engine.next_due()
        timeout = MAX_IDLE
        if due is not None:
            timeout = max(0.0, min(MAX_IDLE, (due - self.clock.now()).total_seconds()))
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass
