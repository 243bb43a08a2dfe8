"""``escalator demo`` for a newcomer (issue 13 point 7), as a real subprocess: it prints its
administrator token and the address it really listens on, and the token works on the API; a
taken port stops the start with a clear message and exit code 1 instead of a broken API."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from escalator.service.demo import PortTaken, claim_listen, demo_token

EXE = [sys.executable, "-m", "escalator.cli"]


def env_for(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATOR_")}
    env.update(PYTHONUNBUFFERED="1", ESCALATOR_LOG_FORMAT="json", **extra)
    return env


def read_stderr_until(proc: subprocess.Popen, pattern: str, seconds: float = 30) -> str:
    """The process's stderr up to the first match of ``pattern`` (bounded by ``seconds``)."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    seen, deadline = "", time.monotonic() + seconds
    while not re.search(pattern, seen):
        left = deadline - time.monotonic()
        if left <= 0 or not sel.select(left):
            raise AssertionError(f"{pattern!r} not seen; stderr so far:\n{seen}")
        chunk = os.read(proc.stderr.fileno(), 65536).decode("utf-8", "replace")
        if not chunk:
            raise AssertionError(f"process ended; stderr:\n{seen}")
        seen += chunk
    return seen


@pytest.fixture
def taken_port():
    """A port another program is listening on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize(("lang", "words"), [("zh_CN.UTF-8", "已被占用"),
                                              ("en_US.UTF-8", "is already in use")])
def test_a_taken_port_stops_the_demo_with_a_clear_message(tmp_path, taken_port, lang, words):
    listen = f"127.0.0.1:{taken_port}"
    r = subprocess.run([*EXE, "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env=env_for(ESCALATOR_HTTP_LISTEN=listen, LANG=lang))
    assert r.returncode == 1
    first = r.stderr.strip().splitlines()[0]
    assert first.startswith(f"escalator: {listen}") and words in first
    assert "ESCALATOR_HTTP_LISTEN=" in first  # what to do about it
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "escalator-demo" / "state" / "escalator.sqlite3").exists()


def test_a_taken_port_stops_run_too(tmp_path, taken_port):
    from .conftest import FIXTURES

    r = subprocess.run([*EXE, "run"], capture_output=True, text=True, timeout=60, env=env_for(
        ESCALATOR_CONFIG=str(FIXTURES / "engine.yaml"), ESCALATOR_STATE_DIR=str(tmp_path),
        ESCALATOR_HTTP_LISTEN=f"127.0.0.1:{taken_port}"))
    assert r.returncode == 1 and "is already in use" in r.stderr


def test_the_demo_prints_its_token_and_real_address_and_the_token_works(tmp_path):
    proc = subprocess.Popen([*EXE, "demo", "--lang", "en"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env_for(ESCALATOR_HTTP_LISTEN="127.0.0.1:0"))
    try:
        seen = read_stderr_until(proc, r"  stop:")
        token = re.search(r"administrator token: (\S+)", seen).group(1)
        base = re.search(r"API: +(http://127\.0\.0\.1:(\d+))/docs", seen)
        assert base is not None and base.group(2) != "0"  # the port really bound, not "0"
        assert f"curl -H \"Authorization: Bearer {token}\" {base.group(1)}/api/v1/incidents" in seen
        assert (tmp_path / "escalator-demo" / "api-token").read_text().strip() == token
        assert oct((tmp_path / "escalator-demo" / "api-token").stat().st_mode & 0o777) == "0o600"
        ok = httpx.get(f"{base.group(1)}/api/v1/incidents",
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)
        # none but, after 09:30 school time, the demo's own zero-report reminder (heartbeat)
        assert ok.status_code == 200
        assert [i for i in ok.json() if i["kind"] != "heartbeat"] == []
        wrong = httpx.get(f"{base.group(1)}/api/v1/incidents",
                          headers={"Authorization": "Bearer not-the-token"}, timeout=10)
        assert wrong.status_code == 401
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_token_is_kept_for_the_next_start(tmp_path):
    first = demo_token(tmp_path / "escalator-demo")
    assert len(first) >= 40 and demo_token(tmp_path / "escalator-demo") == first


def test_claim_listen_names_the_free_port_it_found(taken_port):
    host, port = claim_listen("127.0.0.1:0").rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    with pytest.raises(PortTaken):
        claim_listen(f"127.0.0.1:{taken_port}")


def test_the_printed_curl_works_when_the_token_comes_from_the_environment(tmp_path):
    """With ESCALATOR_API_TOKEN set the banner does not show the token; the curl it prints
    must let the shell put it in (double quotes, not single)."""
    import shlex
    import subprocess

    from escalator.service.demo import banner

    text = banner(config_source="c.yaml", state_dir=tmp_path, spool_dir=tmp_path,
                  listen="127.0.0.1:8765", token=None)
    line = next(ln for ln in text.splitlines() if "curl -H" in ln)
    command = line[line.index("curl"):]
    words = subprocess.run(["bash", "-c", f"printf '%s\\n' {command[len('curl '):]}"],
                           env={"ESCALATOR_API_TOKEN": "t0ken", "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert words[:2] == ["-H", "Authorization: Bearer t0ken"], (command, words)
    assert shlex.split(command)[0] == "curl"
