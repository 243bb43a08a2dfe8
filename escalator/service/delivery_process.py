"""The delivery lane in a process of its own (docs/ARCHITECTURE.md, "Lanes": why a process).

One interpreter running intake, timers and delivery on one GIL is CPU-bound under a burst, and
delivery gets what intake leaves (bench/README.md). With ``Settings.delivery_process`` on, the
daemon (the *parent*) starts a second process of itself (the *child*) that runs only the
delivery lane, as a node of its own, ``<node>/delivery``, on the same database: it claims
notification rows with that name, re-checks them before each send (an acknowledgement still
cancels pending sends in its own transaction), records the sends and beats its node row. The
parent keeps intake, the timers, the web, the watchdog and the daily jobs, and supervises it:

- **start**: :data:`COMMAND`, with a private pipe for reports (``pass_fds``). The first line on
  the child's stdin carries what it needs (:func:`child_main`): the daemon's resolved settings
  without the API token (pickled, base64: never on the command line or in the environment), the
  config file's path, the report pipe and the parent's pid. The child builds the daemon from the
  config file as ``escalator run`` does (its own plugins, channels and store connection).
- **wake-ups**: :meth:`DeliveryProcess.wake` (a commit, an action) writes a byte to the child's
  stdin, skipped while earlier bytes are unread; the child's lane also sleeps at most
  ``MAX_IDLE`` (1 s), as in one process.
- **reports**: every :data:`REPORT_EVERY` seconds one JSON line on the report pipe: the child's
  delivery lane (``busy``, ``stuck_for`` seconds) and its delivery counts since the last line,
  added to the parent's ``/metrics``.
- **restart**: a child that ends while the daemon runs is started again after
  :data:`RESTART_MIN` seconds (doubled for each child that lived less than :data:`RESTART_RESET`
  seconds, up to :data:`RESTART_MAX`); the new child releases its node's claims at its start,
  so the sends its predecessor had in flight go again (at least once, as after a crash).
- **/healthz**: ``delivery`` is failing while the child is not running, when its reports stop
  for ``stuck_seconds``, or when its lane has had work without progress that long
  (:meth:`DeliveryProcess.failing`); the answer names the process (:meth:`DeliveryProcess.describe`).
- **stop** (SIGTERM to the daemon): the parent stops taking input, then sends SIGTERM to the
  child, which finishes the sends in flight (at most ``DRAIN_SECONDS``) and exits; it is killed
  if it takes longer.
- **the child dies with the parent**: ``PR_SET_PDEATHSIG`` (Linux) and, anywhere, the end of
  its stdin end it at once, so a kill -9 of the daemon stops its sends as it did in one
  process, and the restarted daemon's child re-sends them without a second sender alive.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import ctypes
import json
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from escalator.config.settings import Settings

log = structlog.get_logger("escalator.service.delivery_process")

COMMAND: list[str] = [sys.executable, "-m", "escalator.service.delivery_process"]
"""How the child is started (``bench/run_daemon.py`` puts itself here, so its patches apply)."""
REPORT_EVERY = 0.5
"""Seconds between the child's reports."""
RESTART_MIN = 0.5
"""First restart delay (seconds) after the child ended."""
RESTART_MAX = 30.0
"""Longest restart delay (seconds)."""
RESTART_RESET = 60.0
"""A child that lived this long (seconds) restarts after :data:`RESTART_MIN` again."""
STOP_GRACE = 5.0
"""Seconds, after the drain deadline, before a child that has not exited is killed."""
SUFFIX = "/delivery"
"""The child's node name is the daemon's with this suffix."""
CHILD_ENV_DROP = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
"""systemd's variables: the watchdog and READY stay the parent's."""


def wanted(choice: str, *, config_file: Path | None) -> bool:
    """Whether the daemon runs its delivery lane in a child process. ``choice``: the
    ``delivery_process`` setting. ``on``: yes (``ValueError`` without a config file: the child
    builds its daemon from it, with the plugins and channels it names — a daemon handed other
    plugins or a fake clock in code cannot be rebuilt there); ``off``: no; ``auto`` (the
    default): no, one process — measured on the 2-CPU machine of bench/README.md ("Delivery in
    its own process"; load averages 2 and 10–20), the child sent a few more messages while
    intake ran but cost 0.3–1.8 ms more CPU per event and slowed intake by a quarter to a half
    (two writers taking turns at SQLite's write lock, two interpreters and store threads). ``auto`` stays the name of
    the default so that it can turn on where a measurement shows a gain."""
    if choice == "on":
        if config_file is None:
            raise ValueError("delivery_process: 'on' needs a config file (the delivery process reads it)")
        return True
    return False


class DeliveryProcess:
    """The parent's side: starts, wakes, restarts and stops the child, keeps what it reported.

    ``settings``: the daemon's (the child gets a copy with ``node`` = :attr:`node`,
    ``delivery_process`` off and no API token); ``config_file``: the config the child loads;
    ``count``: called with (channel id, outcome, n) for the child's delivery counts (the
    daemon's :meth:`~escalator.service.metrics.Metrics.notification`)."""

    def __init__(self, settings: Settings, config_file: Path,
                 count: Callable[[str, str, int], None] | None = None) -> None:
        self.node = settings.node_name + SUFFIX
        self.settings = settings.model_copy(update={"node": self.node, "delivery_process": "off",
                                                    "api_token": None})
        self.config_file = Path(config_file)
        self.count = count
        self.pid: int | None = None
        self.restarts = 0
        self.last_exit: int | None = None
        """The last child's exit code (negative: killed by that signal), or None."""
        self.started_at: float | None = None
        self.report_at: float | None = None
        """``time.monotonic()`` of the last report (or of the start, before the first)."""
        self.busy = False
        self.stuck_for: float | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._reported: asyncio.Event | None = None

    async def started(self, timeout: float) -> bool:
        """Wait until a child has sent its first report (it is delivering), at most ``timeout``
        seconds; whether it has."""
        if self._reported is None:
            self._reported = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._reported.wait()
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------------ supervision

    async def run(self) -> None:
        """Start the child and start it again whenever it ends, until :meth:`stop`."""
        delay = RESTART_MIN
        while not self._stopping:
            try:
                await self._start()
            except OSError as e:
                log.error("delivery_process_not_started", error=f"{type(e).__name__}: {e}",
                          restart_in=delay)
            else:
                rc = await self._watch()
                if self._stopping:
                    return
                lived = time.monotonic() - (self.started_at or 0.0)
                log.error("delivery_process_ended", pid=self.pid, exit_code=rc,
                          restart_in=delay if lived < RESTART_RESET else RESTART_MIN)
                if lived >= RESTART_RESET:
                    delay = RESTART_MIN
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX)
            if not self._stopping:
                self.restarts += 1

    async def _start(self) -> None:
        read_fd, write_fd = os.pipe()
        try:
            env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROP}
            self._proc = await asyncio.create_subprocess_exec(
                *COMMAND, stdin=asyncio.subprocess.PIPE, pass_fds=(write_fd,), env=env)
            hello = {"settings": self.settings, "config": str(self.config_file),
                     "report_fd": write_fd, "parent": os.getpid()}
            assert self._proc.stdin is not None
            self._proc.stdin.write(base64.b64encode(pickle.dumps(hello)) + b"\n")
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the child has its copy
        self._report_fd = read_fd
        self.pid = self._proc.pid
        self.started_at = self.report_at = time.monotonic()
        self.busy, self.stuck_for = False, None
        log.info("delivery_process_started", pid=self.pid, node=self.node)

    def reload(self) -> None:
        """Tell the child to re-read the config file (SIGHUP), after the daemon's own reload
        succeeded."""
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(signal.SIGHUP)

    async def _watch(self) -> int:
        """Read the child's reports until its pipe closes; return its exit code."""
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(self._report_fd, "rb", 0))
        try:
            while line := await reader.readline():
                self._report(line)
        finally:
            transport.close()
        rc = await self._proc.wait()
        self.last_exit = rc
        return rc

    def _report(self, line: bytes) -> None:
        try:
            report = json.loads(line)
        except ValueError:
            log.warning("delivery_process_bad_report", length=len(line))
            return
        self.report_at = time.monotonic()
        if self._reported is None:
            self._reported = asyncio.Event()
        self._reported.set()
        self.busy = bool(report.get("busy"))
        self.stuck_for = report.get("stuck_for")
        if self.count is not None:
            for channel, outcome, n in report.get("counts", ()):
                self.count(channel, outcome, n)

    def wake(self) -> None:
        """Wake the child's delivery lane (something became due); never blocks."""
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return
        transport = proc.stdin.transport
        if transport.is_closing() or transport.get_write_buffer_size():
            return  # a wake-up is on its way already
        try:
            proc.stdin.write(b"w")
        except (ConnectionError, RuntimeError):
            pass  # it is ending: the supervisor restarts it

    async def stop(self, drain: float) -> None:
        """Stop the child: SIGTERM, then wait up to ``drain`` + :data:`STOP_GRACE` seconds for
        it to finish its sends in flight; killed after that."""
        self._stopping = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        try:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), drain + STOP_GRACE)
        except TimeoutError:
            log.warning("delivery_process_killed", pid=proc.pid, seconds=drain + STOP_GRACE)
            proc.kill()
            await proc.wait()
        except ProcessLookupError:
            pass
        self.last_exit = proc.returncode
        log.info("delivery_process_stopped", pid=proc.pid, exit_code=proc.returncode)

    # ------------------------------------------------------------------ health

    @property
    def running(self) -> bool:
        """Whether a child is running now."""
        return self._proc is not None and self._proc.returncode is None

    def failing(self, stuck_seconds: float) -> str | None:
        """Why ``/healthz`` should name the delivery lane (``None``: healthy): the child is not
        running, its reports stopped for more than ``stuck_seconds``, or its lane has had work
        without progress for more than ``stuck_seconds``."""
        if not self.running:
            if self.last_exit is None:
                return "the delivery process has not started"
            return f"the delivery process ended (exit code {self.last_exit}); restarting"
        quiet = time.monotonic() - (self.report_at or time.monotonic())
        if quiet > stuck_seconds:
            return f"no report from the delivery process for {quiet:.0f} s"
        if self.stuck_for is not None and self.stuck_for > stuck_seconds:
            return f"the delivery lane has had work for {self.stuck_for:.0f} s without progress"
        return None

    def describe(self) -> dict[str, Any]:
        """The child for ``/healthz``: ``pid`` (None while not running), ``node``, ``running``,
        ``restarts`` (since the daemon started), ``last_exit`` (exit code; negative: signal)."""
        return {"pid": self.pid if self.running else None, "node": self.node,
                "running": self.running, "restarts": self.restarts, "last_exit": self.last_exit}


# ---------------------------------------------------------------------- the child


class CountingMetrics:
    """The child's stand-in for the daemon's metrics: delivery counts kept until the next report."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def notification(self, channel: str, outcome: str, count: int = 1) -> None:
        """Count ``count`` delivery attempts through channel id ``channel``."""
        self.counts[(channel, outcome)] += count

    def take(self) -> list[tuple[str, str, int]]:
        """The counts since the last call, as (channel id, outcome, n)."""
        out = [(c, o, n) for (c, o), n in self.counts.items()]
        self.counts.clear()
        return out


def die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (``PR_SET_PDEATHSIG``), then exit at
    once if the parent ``parent`` (a pid) is already gone. Elsewhere only the check."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)


async def serve(daemon: Any, report_fd: int) -> None:
    """The child's run: the daemon's delivery lane alone (:meth:`Daemon.run_delivery`), wake-ups
    from stdin (its end: the parent is gone, exit at once), a report every
    :data:`REPORT_EVERY` seconds on ``report_fd``."""
    loop = asyncio.get_running_loop()
    metrics = CountingMetrics()
    daemon.delivery.metrics = metrics
    report = os.fdopen(report_fd, "wb", 0)
    inbox = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(inbox),
                                 os.fdopen(sys.stdin.fileno(), "rb", 0, closefd=False))

    async def wakes() -> None:
        while await inbox.read(4096):
            daemon.wake()
        log.error("delivery_process_parent_gone")
        os._exit(1)  # as a kill -9 of one process: the restarted daemon re-sends

    async def reports() -> None:
        lane = daemon.runloop.delivery_lane
        while True:
            now = daemon.clock.now()
            line = {"busy": lane.busy, "stuck_for": lane.stuck_for(now), "counts": metrics.take()}
            try:
                report.write(json.dumps(line).encode() + b"\n")
            except (BrokenPipeError, OSError):
                os._exit(1)
            await asyncio.sleep(REPORT_EVERY)

    tasks = [loop.create_task(wakes()), loop.create_task(reports())]
    try:
        await daemon.run_delivery()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        report.close()


def child_main() -> int:
    """Entry point of the child (:data:`COMMAND`): read the first stdin line (see the module
    docstring), build the daemon from the config file with the parent's settings and run
    :func:`serve`. Returns the exit code."""
    from escalator.config import load_config
    from escalator.service import logs
    from escalator.service.daemon import Daemon

    hello = pickle.loads(base64.b64decode(sys.stdin.buffer.raw.readline()))
    die_with_parent(hello["parent"])
    settings: Settings = hello["settings"]
    logs.configure(settings.log_format, settings.log_level)
    structlog.contextvars.bind_contextvars(process="delivery")
    daemon = Daemon(load_config(Path(hello["config"])), settings, role="delivery")
    with asyncio.Runner(loop_factory=logs.loop_factory(settings.event_loop)) as runner:
        runner.run(serve(daemon, hello["report_fd"]))
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
