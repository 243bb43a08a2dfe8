"""The daemon: wires config, store, plugins, engine, delivery and sources, and runs the lanes.

One asyncio loop, three lanes that never wait for each other (docs/ARCHITECTURE.md, "Lanes"):
**intake** (the HTTP API and the sources; group commit), **timers** (the daily purge and the
engine's ticks) and **delivery** (sends), each a task of its own — delivery, on a machine with
two CPUs or more, in a process of its own that this daemon supervises
(:mod:`escalator.service.delivery_process`); every store call runs on one
store thread (:class:`~escalator.store.thread.StoreThread`), never on the loop. The passes
themselves are :mod:`escalator.engine.runloop`'s. Each idle lane sleeps until the next timer in
the store, a wake-up from intake, or at most :data:`MAX_IDLE` seconds (so rows written by
another process, e.g. ``escalator ack``, are seen). A fourth task, the pulse, pings systemd's
watchdog and updates STATUS whatever the lanes are doing. Sources run as supervised tasks: a
crashed source is logged and restarted with backoff.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pluggy
import structlog

from escalator.clock import Clock, SystemClock
from escalator.config import Config, ConfigError, Problem, load_config
from escalator.config.checks import nearest
from escalator.config.load import resolve_secrets
from escalator.config.models import Policy, Step
from escalator.config.settings import Settings
from escalator.delivery.channels import aclose_all
from escalator.delivery.options import STAND_IN, name_sources, secret_sources
from escalator.delivery.pipeline import Delivery
from escalator.delivery.replies import ReplyDesk
from escalator.delivery.reply_mail import ReplyMailbox
from escalator.engine.engine import Engine, IngestResult, Submission
from escalator.engine.runloop import SEND_BATCH, Lane, RunLoop
from escalator.events import Event
from escalator.hookspecs import PluginContext
from escalator.i18n import _
from escalator.intake.group_commit import GroupCommit
from escalator.intake.sources import SourceContext
from escalator.plugins import Registry, collect, collect_rules, get_plugin_manager, plugins_dir_of
from escalator.school.calendar import startup_warnings
from escalator.school.retention import DailyPurge
from escalator.service.dbhealth import DatabaseHealth
from escalator.service.delivery_process import STOP_GRACE, DeliveryProcess, wanted
from escalator.service.metrics import Metrics
from escalator.service.nodes import PERIODIC, PURGE, Node
from escalator.service.sdnotify import Notifier
from escalator.service.store_alarm import tell_administrators
from escalator.store import open_store
from escalator.store.observed import ObservedStore
from escalator.store.probe import Probe
from escalator.store.retry import retrying_async
from escalator.store.thread import StoreThread

log = structlog.get_logger("escalator.service.daemon")

MAX_IDLE = 1.0
"""Longest sleep of an idle lane (seconds)."""
SOURCE_BACKOFF_MIN = 1.0
"""First restart delay (seconds) of a crashed source; doubled each crash up to the max."""
SOURCE_BACKOFF_MAX = 60.0
DRAIN_SECONDS = 20.0
"""On SIGTERM, how long sends in flight may take to finish (the unit's TimeoutStopSec is 30 s)."""
STATUS_INTERVAL = 5.0
"""Seconds between STATUS= updates to systemd."""
CHILD_START_SECONDS = 30.0
"""Longest wait (seconds) for the delivery process's first report before READY."""
PULSE_MAX = 1.0
"""Longest sleep of the pulse task (seconds); with a watchdog it wakes every WatchdogSec/4."""
__all__ = ["SEND_BATCH", "Daemon", "build_channels", "plugin_problems"]


def plugin_problems(config: Config, registry: Registry) -> list[Problem]:
    """Channel and source types in ``config`` that no installed plugin provides, and channel
    options the channel's ``options_model`` rejects. Secrets from ``*_env``/``*_file`` are not
    read here: a stand-in is checked in their place, and only errors the real value cannot
    change are reported (:meth:`~escalator.delivery.options.ChannelOptions.check_unresolved`); the
    real value is checked by :func:`build_channels` when the daemon starts."""
    out = []
    for cid, ch in config.channels.items():
        if ch.type not in registry.channels:
            out.append(Problem(f"channels.{cid}.type", None, _(
                "unknown channel type {type!r} (installed: {installed})").format(
                    type=ch.type, installed=", ".join(sorted(registry.channels)))
                + nearest(ch.type, registry.channels)))
            continue
        model = getattr(registry.channels[ch.type], "options_model", None)
        if model is None:
            continue
        try:
            if hasattr(model, "check_unresolved"):
                model.check_unresolved(ch.options)
            else:  # an options model not built on ChannelOptions: the plain stand-in
                option_of = {key: name for name, key in secret_sources(ch.options).items()}
                model.parse({option_of.get(key, key): STAND_IN if key in option_of else value
                             for key, value in ch.options.items()})
        except ValueError as e:
            out.append(Problem(f"channels.{cid}.options", None, str(e)))
    for sid, src in config.sources.items():
        if src.type not in registry.sources:
            out.append(Problem(f"sources.{sid}.type", None, _(
                "unknown source type {type!r} (installed: {installed})").format(
                    type=src.type, installed=", ".join(sorted(registry.sources)))
                + nearest(src.type, registry.sources)))
    return out


def build_channels(config: Config, registry: Registry) -> dict[str, Any]:
    """Instantiate every configured channel with its secrets read. Raises :class:`ConfigError`
    naming each bad one (unknown type, missing secret, bad option — a bad secret-sourced value
    is named by its ``*_env``/``*_file`` key); secret values never appear in the message."""
    problems = plugin_problems(config, registry)
    reported = {p.path for p in problems}
    channels: dict[str, Any] = {}
    for cid, ch in config.channels.items():
        if ch.type not in registry.channels or f"channels.{cid}.options" in reported:
            continue
        try:
            channels[cid] = registry.channels[ch.type](cid, resolve_secrets(ch.options, config.base_dir))
        except (ValueError, TypeError) as e:
            problems.append(Problem(f"channels.{cid}.options", None,
                                    name_sources(str(e), secret_sources(ch.options))))
    if problems:
        raise ConfigError(config.source or "config", problems)
    return channels


class Daemon:
    """A running escalator. ``clock`` defaults to the wall clock; ``plugin_manager`` to the
    built-ins, the config's ``plugins_dir`` and entry points; ``notifier`` to systemd's
    ``NOTIFY_SOCKET`` (a no-op outside systemd). ``role``: ``daemon``, or ``delivery`` for the
    delivery process's daemon (:meth:`run_delivery`: no systemd, no notices of its own).
    ``delivery_process``: the supervised child running the delivery lane, or None (the lane
    runs in this process; :func:`~escalator.service.delivery_process.wanted`).

    ``db``: the runner of every store call (``await daemon.db(fn, *args)``, on the store
    thread); ``lanes``: the :class:`~escalator.engine.runloop.Lane` records ``/healthz`` reads
    (:meth:`health`)."""

    def __init__(self, config: Config, settings: Settings, *, clock: Clock | None = None,
                 plugin_manager: pluggy.PluginManager | None = None,
                 notifier: Notifier | None = None, role: str = "daemon") -> None:
        self.role = role
        self.settings = settings
        self.clock = clock or SystemClock()
        self.pm = plugin_manager or get_plugin_manager(plugins_dir=plugins_dir_of(config))
        self.registry = collect(self.pm)
        self.config = config
        channels = build_channels(config, self.registry)
        if config.daemon.public_base_url is None and settings.public_base_url:
            config.daemon.public_base_url = settings.public_base_url
        self.store_thread = StoreThread()
        self.db = self.store_thread.run
        self.store = ObservedStore(open_store(settings.store_target), lambda incident_id, entry:
                                   self.pm.hook.track_incident(incident_id=incident_id, entry=entry))
        self.store_lost: str | None = None
        """Why the store's files are gone (from the store's file monitor), or None."""
        self.database_health = DatabaseHealth(Probe(settings.store_target))
        """``/healthz``'s database check: bounded, briefly cached, on its own connection."""
        self.engine = Engine(self.store, config, self.clock, rules=collect_rules(self.pm, config))
        self.purge = DailyPurge(self.engine)  # personal data past retention, once a day
        self.replies = ReplyDesk(self.engine)  # SMS and e-mail replies (docs/replies.md)
        self.delivery = Delivery(self.store, config, channels, self.clock,
                                 render=lambda ctx: self.pm.hook.render_notification(context=ctx),
                                 db=self.store_thread.urgent,  # before group commits
                                 read=self.store_thread.read)  # re-checks: beside them
        self.delivery.contacts_of = self.engine.contacts_of  # failover: guardians via the rules
        self.delivery.school_hours = lambda c: self.pm.hook.school_hours(config=c)  # quiet hours
        self.delivery.observer = lambda n, result: self.pm.hook.track_delivery(
            notification=n, result=result)
        self.metrics = Metrics(self.store)  # served at /metrics (escalator/web/routers/ops.py)
        self.engine.metrics = self.delivery.metrics = self.metrics
        self.node = Node(self.store, settings.node_name, self.clock, settings.node_ttl)
        """This daemon among several on the database (docs/reliability.md "Several daemons")."""
        self.delivery.node = self.node.name  # the rows it claims are this node's
        self.runloop = RunLoop(self.engine, self.delivery, db=self.db,
                               before_tick=self._purge_if_due,
                               periodic=lambda: self.node.holds(PERIODIC), send_batch=SEND_BATCH)
        self.notifier = notifier or Notifier({} if role == "delivery" else None)
        self.delivery_process: DeliveryProcess | None = None
        if role == "daemon" and wanted(settings.delivery_process, config_file=config.source):
            assert config.source is not None
            self.delivery_process = DeliveryProcess(settings, config.source,
                                                    count=self.metrics.notification)
        self.last_loop_at = self.clock.now()
        self.last_error: str | None = None
        self.last_reload: tuple[datetime, bool, str] | None = None
        """The last SIGHUP reload: when (UTC), whether the new config is in use, what happened
        (the console's settings page)."""
        self.http_port: int | None = None
        self._wakes = (asyncio.Event(), asyncio.Event())  # the timer lane's, the delivery lane's
        self.group_commit = GroupCommit(self.engine, on_commit=self.wake, db=self.db,
                                        lane=Lane("intake", self.clock.now()))
        self.lanes = (self.group_commit.lane, self.runloop.timers, self.runloop.delivery_lane)
        self._counts: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self._inputs: list[asyncio.Task[None]] = []
        self._ctx = SourceContext(settings=settings, config=config, clock=self.clock,
                                  ingest=self.ingest, ingest_file=self.ingest_file)
        self._loop: asyncio.AbstractEventLoop | None = None
        for warning in () if role == "delivery" else startup_warnings(config, self.clock.now().astimezone(config.school.tz).date()):
            log.warning("school_calendar_incomplete", detail=warning)  # docs/school-rules.md

    def _purge_if_due(self) -> None:
        """The daily purge, run by the node holding its lease (one daemon of several)."""
        if self.node.holds(PURGE):
            self.purge.run_if_due()

    async def _beat(self) -> None:
        """The node's beat (:meth:`Node.beat`) every ``node_ttl``/4 seconds, through the store
        thread's urgent class (never behind a queue of group commits); rows released from a
        dead node wake the delivery lane. A failed beat is logged and tried at the next one."""
        while True:
            try:
                if await self.store_thread.urgent(self.node.beat):
                    self.wake()
            except Exception as e:
                log.warning("node_beat_failed", node=self.node.name,
                            error=f"{type(e).__name__}: {e}")
            await asyncio.sleep(self.node.beat_every)

    # intake for sources and the HTTP API: concurrent callers share one commit
    async def ingest(self, events: list[Event | Submission], source: str) -> list[IngestResult]:
        return await self.group_commit.ingest(events, source)

    async def ingest_file(self, events: list[Event | Submission], sha256: str, name: str,
                          source: str) -> list[IngestResult] | None:
        results = await retrying_async(self.db, self.engine.ingest_file, events, sha256=sha256,
                                       name=name, source=source)
        self.wake()
        return results

    def wake(self) -> None:
        """Wake the timer and delivery lanes (something became due: a commit, an action), the
        delivery process's too."""
        for event in self._wakes:
            event.set()
        if self.delivery_process is not None:
            self.delivery_process.wake()

    def stop(self) -> None:
        """Ask the daemon to stop (SIGTERM, SIGINT): input stops, sends in flight finish."""
        self._stop.set()
        self.wake()

    def health(self) -> dict[str, str]:
        """What is wrong now, from memory (no store call): ``{"store": cause}`` once the
        store's files are gone, and ``{lane: why}`` for each lane that has had work without
        progress for more than ``settings.stuck_seconds`` — with a delivery process,
        ``{"delivery": why}`` also while it is not running or silent
        (:meth:`DeliveryProcess.failing`). Empty when healthy."""
        failing: dict[str, str] = {}
        if self.store_lost:
            failing["store"] = self.store_lost
        now = self.clock.now()
        child = self.delivery_process
        if child is not None and (why := child.failing(self.settings.stuck_seconds)):
            failing["delivery"] = why
        for lane in self.lanes:
            if self.delivery_process is not None and lane is self.runloop.delivery_lane:
                continue  # the process's lane, reported above
            age = lane.stuck_for(now)
            if age is not None and age > self.settings.stuck_seconds:
                failing[lane.name] = f"the {lane.name} lane has had work for {age:.0f} s without progress"
        return failing

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """A background task kept referenced until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def reload(self) -> bool:
        """Re-read the config file (SIGHUP). On any error the running config stays, the error is
        logged and the administrators are told. Returns whether the new config is in use.
        Incidents already walking keep their policy snapshot."""
        path = self.config.source
        self.notifier.reloading()
        try:
            config = load_config(path)
            channels = build_channels(config, self.registry)
            rules = collect_rules(self.pm, config)
        except ConfigError as e:
            errors = [str(p) for p in e.problems if p.level == "error"]
            self.last_error = f"config reload failed ({len(errors)} errors); running config kept"
            log.error("config_reload_failed", path=str(path), problems=errors)
            if self.role == "daemon":  # the delivery process's daemon leaves it to its parent
                self._tell_administrators(len(errors))
            self.last_reload = (self.clock.now(), False, "; ".join(errors))
            self.notifier.ready(self._status_text())
            return False
        config.daemon.public_base_url = config.daemon.public_base_url or self.settings.public_base_url
        self.config = config
        self._ctx.config = config
        self.engine.reload(config, rules=rules)
        replaced = self.delivery.channels
        self.delivery.reload(config, channels)
        self._closing = asyncio.get_running_loop().create_task(aclose_all(replaced.values()))
        log.info("config_reloaded", path=str(path))
        if self.delivery_process is not None:
            self.delivery_process.reload()
        self.last_reload = (self.clock.now(), True, f"{len(config.warnings)} warnings")
        self.notifier.ready(self._status_text())
        return True

    def _tell_administrators(self, errors: int) -> None:
        """Open (or count on) one incident "config reload failed", walked by a one-step policy
        to the running config's ``administrators`` (or routed normally without any)."""
        event = Event(kind="incident", category="other", severity="high", source="escalator",
                      summary=f"配置文件重新加载失败（{errors} 处错误），仍在使用原配置；"
                              f"请运行 escalator check-config 查看 / config reload failed",
                      dedup_key="escalator/config-reload-failed")
        admins = self.config.administrators
        policy = ("administrators", Policy(name="系统管理员", steps=[Step(targets=admins, timeout=3600)])
                  ) if admins else None

        async def tell() -> None:
            try:
                await self.db(self.engine.ingest, event, source="escalator", policy=policy)
                self.wake()
            except Exception:
                log.exception("administrators_not_told")

        self._spawn(tell(), "tell-administrators")

    def _lost(self, cause: str) -> None:
        """From the store's file monitor (any thread): the database or its WAL file is gone."""
        try:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._store_lost, cause)
        except RuntimeError:  # the loop has closed: the daemon has stopped
            log.error("store_lost", reason=cause)

    def _store_lost(self, cause: str) -> None:
        self.store_lost = self.last_error = f"store lost: {cause}"
        log.error("store_lost_inputs_refused", reason=cause)
        self._spawn(tell_administrators(self.config, self.delivery.channels, cause,
                                        self.clock.now()), "tell-administrators-store-lost")

    def _sources(self) -> list[tuple[str, Any]]:
        return [(sid, self.registry.sources[sc.type](sid, resolve_secrets(sc.options, self.config.base_dir), self._ctx))
                for sid, sc in self.config.sources.items()]

    async def _supervise(self, sid: str, source: Any) -> None:
        delay = SOURCE_BACKOFF_MIN
        while not self._stop.is_set():
            try:
                await source.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.last_error = f"source {sid} crashed: {type(e).__name__}"
                log.exception("source_crashed", source=sid, restart_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, SOURCE_BACKOFF_MAX)

    def _signals(self) -> None:
        """SIGTERM and SIGINT stop, SIGHUP re-reads the config (not in a test's thread)."""
        loop = self._loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop),
                             (signal.SIGHUP, self.reload)):
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (tests)

    async def _come_alive(self, call: Callable[..., Awaitable[Any]]) -> None:
        """Beat this node (alive before anything is claimed), then release the sends a crash of
        this node left in flight — its own only, other nodes' are theirs — through ``call``
        (a store-thread runner)."""
        await call(self.node.beat)
        released = await call(self.delivery.release_claims)
        if released:
            log.warning("sends_released_after_restart", count=released, node=self.node.name)

    async def run(self) -> None:
        """Run until :meth:`stop`: beat the node, release the sends a crash of this node left in
        flight (other nodes' are theirs), keep beating (:meth:`_beat`), start the sources and
        the HTTP API, report READY, run the lanes and the pulse; on stop, stop taking input,
        let the lanes finish what is in flight (sends: at most :data:`DRAIN_SECONDS`), close
        the store."""
        self._signals()
        if hasattr(self.store, "watch"):  # SQLite's file monitor; a server store has no files
            self.store.watch(self._lost)
        pulse = asyncio.create_task(self._pulse(), name="pulse")
        await self._come_alive(self.db)
        beat = asyncio.create_task(self._beat(), name="node-beat")
        self._inputs = [asyncio.create_task(self._supervise(sid, s), name=f"source:{sid}")
                        for sid, s in self._sources()]
        if self.config.replies is not None and self.config.replies.email is not None:
            self._inputs.append(asyncio.create_task(
                self._supervise("reply-mail", ReplyMailbox(self)), name="reply-mail"))
        if self.settings.http_listen not in ("", "off"):
            from escalator.web.server import ApiServer
            self._inputs.append(asyncio.create_task(self._supervise("http", ApiServer(self)),
                                                    name="http"))
        await self._until_listening()
        await self.database_health.check_now()  # a load balancer's first question has an answer
        dbcheck = asyncio.create_task(self.database_health.run(), name="database-check")
        self.pm.hook.startup(context=self._plugin_context("startup"))
        lanes = [asyncio.create_task(self._timer_lane(), name="timers")]
        child = self.delivery_process
        if child is None:
            lanes.append(asyncio.create_task(self._delivery_lane(), name="delivery"))
        else:  # stopped with the lanes below: stop() drains its sends in flight
            supervisor = asyncio.create_task(child.run(), name="delivery-process")
            if not await child.started(CHILD_START_SECONDS):  # READY once it delivers
                log.warning("delivery_process_slow_to_start", seconds=CHILD_START_SECONDS)
        log.info("escalator_started", database=self.settings.store_display, node=self.node.name,
                 inputs=[t.get_name() for t in self._inputs], channels=sorted(self.delivery.channels),
                 delivery_process=child.node if child is not None else None)
        await self._refresh_counts()
        self.notifier.ready(self._status_text())
        try:
            await self._stop.wait()
        finally:
            self.notifier.stopping()
            log.info("escalator_stopping")
            for t in self._inputs:  # stop taking input first
                t.cancel()
            await asyncio.gather(*self._inputs, return_exceptions=True)
            if child is not None:  # the delivery process drains its sends in flight
                lanes.append(asyncio.create_task(child.stop(DRAIN_SECONDS)))
            try:  # then let the lanes finish the sends in flight
                await asyncio.wait_for(asyncio.gather(*lanes), DRAIN_SECONDS
                                       + (STOP_GRACE if child is not None else 0.0))
            except TimeoutError:
                log.warning("drain_deadline_passed", seconds=DRAIN_SECONDS)
            if child is not None:
                supervisor.cancel()
                await asyncio.gather(supervisor, return_exceptions=True)
            try:
                self.pm.hook.shutdown(context=self._plugin_context("shutdown"))
            except Exception:
                log.exception("shutdown_hook_failed")
            await aclose_all(self.delivery.channels.values())  # their connections and clients
            pulse.cancel()
            beat.cancel()
            dbcheck.cancel()
            await asyncio.gather(pulse, beat, dbcheck, return_exceptions=True)
            if self._tasks:  # an administrators' notice under way gets a few seconds
                await asyncio.wait(list(self._tasks), timeout=5.0)
            await self.db(self.store.close)
            self.store_thread.close()
            self.database_health.close()
            self.notifier.close()
            log.info("escalator_stopped")

    async def run_delivery(self) -> None:
        """The delivery process's run (``role="delivery"``; :mod:`escalator.service.delivery_process`
        wires its wake-ups and reports): beat this node, release the sends a crash of this node
        left in flight, run the delivery lane alone until :meth:`stop` (SIGTERM), let the pass
        in flight finish (at most :data:`DRAIN_SECONDS`), close the channels and the store.
        SIGHUP re-reads the config (:meth:`reload`)."""
        self._signals()
        await self._come_alive(self.store_thread.urgent)
        beat = asyncio.create_task(self._beat(), name="node-beat")
        lane = asyncio.create_task(self._delivery_lane(), name="delivery")
        log.info("delivery_process_running", node=self.node.name, channels=sorted(self.delivery.channels))
        try:
            await self._stop.wait()
        finally:
            try:
                await asyncio.wait_for(lane, DRAIN_SECONDS)
            except TimeoutError:
                log.warning("drain_deadline_passed", seconds=DRAIN_SECONDS)
            await aclose_all(self.delivery.channels.values())
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            await self.db(self.store.close)
            self.store_thread.close()
            log.info("delivery_process_stopped", node=self.node.name,
                     passes=self.runloop.delivery_passes, claimed=self.runloop.delivery_claimed)

    def _plugin_context(self, hook: str) -> PluginContext:
        """The narrow view of the daemon that the ``startup``/``shutdown`` hooks get."""
        return PluginContext(config=self.config, clock=self.clock, submit=self.ingest,
                             log=structlog.get_logger("escalator.plugin").bind(plugin_hook=hook))

    async def _until_listening(self, timeout: float = 15.0) -> None:
        """Before READY: wait until the HTTP API accepts connections (or its task ended)."""
        http = next((t for t in self._inputs if t.get_name() == "http"), None)
        deadline = time.monotonic() + timeout
        while (http is not None and self.http_port is None and not http.done()
               and time.monotonic() < deadline):
            await asyncio.sleep(0.01)

    async def _timer_lane(self) -> None:
        """The timer lane: a timer pass (:meth:`RunLoop.timer_pass`), then sleep until the next
        timer, a wake-up or :data:`MAX_IDLE`. A failed pass is logged and tried again."""
        wake = self._wakes[0]
        while not self._stop.is_set():
            wake.clear()  # a wake-up during the pass below is kept for the sleep
            try:
                await self.runloop.timer_pass()
                self.last_loop_at = self.clock.now()
            except Exception as e:  # a store error must not kill the lane silently
                self._failed("timers", e)
                await asyncio.sleep(1.0)
            await self._sleep(wake, sends=False)

    async def _delivery_lane(self) -> None:
        """The delivery lane: delivery passes while they claim something (ends after the one in
        flight once stopping), then sleep like the timer lane."""
        wake = self._wakes[1]
        while not self._stop.is_set():
            wake.clear()
            try:
                while await self.runloop.delivery_pass() and not self._stop.is_set():
                    pass
            except Exception as e:
                self._failed("delivery", e)
                await asyncio.sleep(1.0)
            await self._sleep(wake, self.store_thread.urgent, steps=False)

    def _failed(self, lane: str, e: Exception) -> None:
        self.last_error = f"{lane}: {type(e).__name__}: {e}"
        log.error(f"{lane}_pass_failed", exc_info=e)

    async def step(self) -> None:
        """Both lanes' passes inline, in the caller's task, until nothing is due now (tests
        on a fake clock drive the daemon with it): the daily purge, every due timer, every
        due notification. Store errors are raised."""
        await self.runloop.settle()
        self.last_loop_at = self.clock.now()

    async def _pulse(self) -> None:
        """WATCHDOG=1 every WatchdogSec/4 and STATUS= every :data:`STATUS_INTERVAL`, from a task
        of its own: never behind a lane (a send, a long transaction). The STATUS counts are
        read through the store thread by a task of their own; the last known ones are sent."""
        watchdog = self.notifier.watchdog_seconds
        interval = min(PULSE_MAX, watchdog / 4) if watchdog else PULSE_MAX
        status_at = time.monotonic()
        refresh: asyncio.Task[None] | None = None
        while True:
            if watchdog:
                self.notifier.watchdog()
            now = time.monotonic()
            if self.notifier.enabled and now - status_at >= STATUS_INTERVAL:
                status_at = now
                self.notifier.status(self._status_text())
                if refresh is None or refresh.done():
                    refresh = self._spawn(self._refresh_counts(), "status-counts")
            await asyncio.sleep(interval)

    async def _refresh_counts(self) -> None:
        """Read the open incidents' counts for STATUS (through the store thread)."""
        def count() -> dict[str, int]:
            with self.store.transaction() as tx:
                return tx.count_incidents()
        try:
            self._counts = await self.db(count)
        except Exception as e:
            log.warning("status_counts_failed", error=f"{type(e).__name__}: {e}")

    def _status_text(self) -> str:
        """The STATUS line, from memory: the last counts read and the last error."""
        counts = self._counts
        text = (f"open incidents: {counts.get('triggered', 0)} triggered, "
                f"{counts.get('acknowledged', 0)} acknowledged")
        return text + (f"; last error: {self.last_error}" if self.last_error else "")

    async def _sleep(self, wake: asyncio.Event, db: Any = None, *, steps: bool = True,
                     sends: bool = True) -> None:
        """Sleep until the lane's next timer in the store (``steps``: the timer lane's,
        ``sends``: the delivery lane's; read through ``db``: the delivery lane's read goes
        before waiting group commits), ``wake`` or :data:`MAX_IDLE`. A lane never wakes for
        the other's timers: the timer lane would spin while sends are due."""
        try:
            due = await (db or self.db)(self.engine.next_due, steps=steps, sends=sends)
        except Exception:
            due = None
        timeout = MAX_IDLE
        if due is not None:
            timeout = max(0.0, min(MAX_IDLE, (due - self.clock.now()).total_seconds()))
        try:
            async with asyncio.timeout(timeout):
                await wake.wait()
        except TimeoutError:
            pass
