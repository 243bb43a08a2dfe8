"""The delivery lane in a process of its own (escalator/service/delivery_process.py), with real
processes: a real ``escalator run`` with ``ESCALATOR_DELIVERY_PROCESS=on``, a real SMS
gateway over HTTP, kill -9.

- The child sends (its node ``<node>/delivery`` claims the row), ``/healthz`` names it.
- kill -9 of the child while its message is in flight: ``/healthz`` names the lane until the
  daemon has started a new child, which sends the message again (at least once).
- SIGTERM to the daemon stops both; kill -9 of the daemon takes the child with it.
- When ``auto`` turns it on (unit tests of :func:`wanted`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from escalator.service.delivery_process import CountingMetrics, wanted
from tests.test_several_daemons import CONFIG, TOKEN, Gateway, free_port, wait_for

NODE = "school-a"


class Daemon:
    """One ``escalator run`` with a delivery process, on ``tmp``'s state folder."""

    def __init__(self, tmp: Path, gateway: Gateway) -> None:
        self.tmp = tmp
        self.db = tmp / "state" / "escalator.sqlite3"
        cfg = tmp / "escalator.yaml"
        cfg.write_text(CONFIG.format(url=gateway.url), encoding="utf-8")
        self.port = free_port()
        self.log = tmp / "daemon.log"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ESCALATOR_", "NOTIFY_SOCKET", "WATCHDOG_"))}
        env.update(ESCALATOR_CONFIG=str(cfg), ESCALATOR_STATE_DIR=str(tmp / "state"),
                   ESCALATOR_LOG_FORMAT="json", ESCALATOR_API_TOKEN=TOKEN, ESCALATOR_NODE=NODE,
                   ESCALATOR_HTTP_LISTEN=f"127.0.0.1:{self.port}",
                   ESCALATOR_DELIVERY_PROCESS="on", PYTHONUNBUFFERED="1")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "escalator.cli", "run"], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
        wait_for("the daemon's delivery process reports", lambda: self.child() is not None, 60)

    def health(self) -> tuple[int, dict[str, Any]]:
        r = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5)
        return r.status_code, r.json()

    def child(self) -> dict[str, Any] | None:
        """``/healthz``'s ``delivery_process`` once it runs and answers 200, else None."""
        assert self.proc.poll() is None, self.log_text()
        try:
            status, body = self.health()
        except httpx.HTTPError:
            return None
        process = body.get("delivery_process") or {}
        return process if status == 200 and process.get("running") else None

    def send(self, key: str) -> int:
        r = httpx.post(f"http://127.0.0.1:{self.port}/api/v1/events", timeout=10,
                       headers={"Authorization": f"Bearer {TOKEN}"},
                       json={"kind": "incident", "category": "accident", "summary": key,
                             "class_id": "3-2", "dedup_key": key})
        assert r.status_code == 202, r.text
        return int(r.json()["incident_id"])

    def row(self, incident_id: int) -> tuple[str, str | None]:
        """The incident's one notification: (status, claimed_by)."""
        import sqlite3

        with sqlite3.connect(self.db, timeout=30) as c:
            return c.execute("SELECT status, claimed_by FROM notifications WHERE incident_id = ?",
                             (incident_id,)).fetchone()

    def log_text(self) -> str:
        return self.log.read_text("utf-8", "replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


@pytest.fixture
def daemon(tmp_path: Path):
    gateway = Gateway()
    d = None
    try:
        d = Daemon(tmp_path, gateway)
        d.gateway = gateway  # type: ignore[attr-defined]
        yield d
    finally:
        if d is not None:
            d.close()
        gateway.close()


@pytest.mark.slow
def test_the_child_sends_is_restarted_after_kill_9_and_stops_with_the_daemon(daemon):
    gw: Gateway = daemon.gateway
    first = daemon.child()
    assert first is not None and first["node"] == f"{NODE}/delivery" and first["restarts"] == 0
    pid = first["pid"]
    assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(daemon.proc.pid)

    # the child sends: its node claims the row
    gw.hold.set()
    incident = daemon.send("process/1")
    assert gw.held.wait(20), "the message never reached the gateway"
    assert daemon.row(incident) == ("sending", f"{NODE}/delivery")

    # kill -9 of the child, its message in flight: /healthz names the lane until a new child runs
    os.kill(pid, signal.SIGKILL)
    wait_for("the daemon saw its child die", lambda: gone(pid), 10)
    status, body = daemon.health()
    if body["delivery_process"]["running"] is False:  # not restarted yet (0.5 s)
        assert status == 503 and "delivery" in body["failing"], body
    wait_for("a new delivery process", lambda: (daemon.child() or {}).get("restarts") == 1, 30)
    second = daemon.child()
    assert second is not None and second["pid"] != pid and second["last_exit"] == -signal.SIGKILL

    # the new child released the killed one's claim and sends the message again (at least once)
    gw.release.set()
    wait_for("the message sent again", lambda: gw.count("process/1") >= 2, 20)
    wait_for("the row delivered", lambda: daemon.row(incident)[0] == "delivered", 20)
    daemon.send("process/2")
    wait_for("the next message sent", lambda: gw.count("process/2") == 1, 20)

    # SIGTERM stops both: the child drains and exits 0, then the daemon
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(40) == 0, daemon.log_text()
    assert gone(second["pid"])
    log = daemon.log_text()
    assert '"delivery_process_stopped"' in log and '"exit_code": 0' in log, log
    assert "delivery_process_ended" in log  # the kill -9, logged with its exit code


@pytest.mark.slow
def test_kill_9_of_the_daemon_takes_its_delivery_process_with_it(daemon):
    pid = daemon.child()["pid"]
    daemon.proc.kill()
    daemon.proc.wait(10)
    wait_for("the delivery process gone with its daemon", lambda: gone(pid), 10)


def test_wanted_on_only_when_asked_and_with_a_config_file(tmp_path: Path):
    cfg = tmp_path / "escalator.yaml"
    assert wanted("on", config_file=cfg)
    assert not wanted("auto", config_file=cfg)  # one process: what the benchmark measured
    assert not wanted("off", config_file=cfg)
    with pytest.raises(ValueError, match="delivery_process"):
        wanted("on", config_file=None)


def test_the_childs_counts_go_to_the_parent_once():
    m = CountingMetrics()
    m.notification("sms", "delivered")
    m.notification("sms", "delivered", 2)
    m.notification("mail", "failed_retryable")
    assert sorted(m.take()) == [("mail", "failed_retryable", 1), ("sms", "delivered", 3)]
    assert m.take() == []
