"""The ``escalator`` command line, run as a real subprocess against real files."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import CASES, FIXTURES, ROOT

EXE = [sys.executable, "-m", "escalator.cli"]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATOR_")}
    full_env.update(env or {})
    return subprocess.run([*EXE, *args], capture_output=True, text=True, env=full_env, cwd=cwd,
                          timeout=60)


@pytest.fixture
def state(tmp_path):
    return {"ESCALATOR_STATE_DIR": str(tmp_path / "state"),
            "ESCALATOR_CONFIG": str(FIXTURES / "engine.yaml")}


def test_help_lists_exit_codes():
    r = run("--help")
    assert r.returncode == 0
    assert "exit codes" in r.stdout and "3  no such incident" in r.stdout


def test_run_without_config_is_a_usage_error_and_never_falls_back_to_the_demo():
    r = run("run")
    assert r.returncode == 2
    assert "no config file" in r.stderr


def test_check_config_ok_and_errors_with_lines():
    ok = run("check-config", "--config", str(FIXTURES / "engine.yaml"))
    assert ok.returncode == 0, ok.stderr
    bad = run("check-config", "--config", str(FIXTURES / "config" / "several_problems.yaml"))
    assert bad.returncode == 1
    assert "(line " in bad.stderr and "error(s)" in bad.stderr


def test_check_config_reports_unknown_channel_type(tmp_path):
    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8").replace(
        "backup: {type: console}", "backup: {type: carrier_pigeon}")
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    r = run("check-config", "--config", str(p))
    assert r.returncode == 1
    assert "channels.backup.type: unknown channel type 'carrier_pigeon'" in r.stderr


def test_demo_config_checks_clean():
    r = run("check-config", "--demo")
    assert r.returncode == 0, r.stderr + r.stdout


def test_simulate_prints_who_is_told_when_and_sends_nothing(state, tmp_path):
    r = run("simulate", "--event", str(CASES / "events/fever_single.json"), env=state)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["t+", "local", "time"]
    assert "+0:00:00" in lines[1] and "王老师" in lines[1]
    assert "+0:01:00" in lines[2] and "赵校医" in lines[2]
    assert "+0:03:00" in lines[3] and "张校长" in lines[3]
    assert "+0:08:00" in lines[4] and "区疾控" in lines[4]
    assert not (tmp_path / "state").exists()  # nothing stored, nothing sent


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, state, tmp_path):
    """``state``, with the database in the state folder's SQLite file or, through
    ``ESCALATOR_DATABASE_URL``, in a scratch PostgreSQL schema (then no file is made)."""
    if request.param == "sqlite":
        yield state
        return
    pg_url = request.getfixturevalue("pg_url")
    yield {**state, "ESCALATOR_DATABASE_URL": pg_url}
    assert not (tmp_path / "state" / "escalator.sqlite3").exists()


def test_send_ack_resolve_incidents_on_the_state_database(any_store):
    state = any_store
    r = run("send", str(CASES / "events/fever_single.json"), env=state)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "created" and out["incident_id"] == 1
    again = json.loads(run("send", str(CASES / "events/fever_single.json"), env=state).stdout)
    assert again["status"] == "deduplicated" and again["incident_id"] == 1
    listing = run("incidents", env=state)
    assert listing.stdout.splitlines()[1].split()[:2] == ["1", "triggered"]  # as it is typed
    ack = run("ack", "1", env=state)
    assert ack.returncode == 0 and "step_confirmed" in ack.stdout  # a report step: level confirmed
    show = run("incidents", "1", env=state)
    assert "step_confirmed" in show.stdout and "cli:" in show.stdout
    res = run("resolve", "1", env=state)
    assert res.returncode == 0 and "resolved" in res.stdout
    assert len(run("incidents", env=state).stdout.splitlines()) == 1  # the header only
    assert run("incidents", "--all", env=state).stdout.splitlines()[1].split()[:2] == [
        "1", "resolved"]
    missing = run("ack", "42", env=state)
    assert missing.returncode == 3 and "no incident 42" in missing.stderr


def test_send_rejects_bad_input_naming_fields(state):
    r = run("send", str(CASES / "bad/wrong_types.json"), env=state)
    assert r.returncode == 1
    assert "severity" in r.stderr and "occurred_at" in r.stderr


def test_plugins_lists_builtins_and_their_hooks():
    r = run("plugins")
    assert r.returncode == 0
    assert "escalator_plugins.console" in r.stdout and "built-in" in r.stdout
    assert "register_channels" in r.stdout and "register_sources" in r.stdout
    types = next(line for line in r.stdout.splitlines() if line.startswith("channel types:"))
    assert "console" in types.split(":", 1)[1].replace(",", " ").split()


def _read_until(proc: subprocess.Popen, needle: str, deadline: float) -> str:
    """Read the process's stdout until ``needle`` appears or ``deadline`` (monotonic) passes."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    seen = ""
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not sel.select(left):
            raise AssertionError(f"{needle!r} not seen; output so far:\n{seen}")
        chunk = os.read(proc.stdout.fileno(), 65536).decode("utf-8", "replace")
        if not chunk:
            raise AssertionError(f"process ended; output:\n{seen}")
        seen += chunk
    return seen


def test_daemon_takes_a_spool_file_tells_the_teacher_and_stops_on_sigterm(tmp_path):
    spool = tmp_path / "spool"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATOR_")}
    env.update(ESCALATOR_CONFIG=str(FIXTURES / "engine.yaml"), ESCALATOR_STATE_DIR=str(tmp_path / "state"),
               ESCALATOR_SPOOL_DIR=str(spool), ESCALATOR_LOG_FORMAT="json", PYTHONUNBUFFERED="1",
               ESCALATOR_HTTP_LISTEN="127.0.0.1:0")
    cfg = (FIXTURES / "engine.yaml").read_text(encoding="utf-8") + "sources:\n  spool: {type: spool}\n"
    (tmp_path / "c.yaml").write_text(cfg, encoding="utf-8")
    env["ESCALATOR_CONFIG"] = str(tmp_path / "c.yaml")
    (spool / "incoming").mkdir(parents=True)
    shutil.copy(CASES / "events/fever_single.json", spool / "incoming" / "fever_single.json")
    proc = subprocess.Popen([*EXE, "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out = _read_until(proc, "王老师", time.monotonic() + 30)
        assert "三年级2班" in out and "escalator ack 1" in out
        assert list((spool / "processed").rglob("fever_single.json"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_check_config_validates_channel_options_without_reading_secrets(tmp_path):
    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8").replace(
        "backup: {type: console}",
        "backup: {type: email, options: {host: 127.0.0.1, from_addr: a@b.example, passwrd_env: X}}")
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    r = run("check-config", "--config", str(p))
    assert r.returncode == 1
    assert "channels.backup.options" in r.stderr and "passwrd" in r.stderr


def test_commands_on_a_missing_database_say_so_instead_of_creating_one(tmp_path, state):
    r = run("incidents", env=state)
    assert r.returncode == 2 and "no escalator database" in r.stderr
    demo = run("send", str(CASES / "events/bullying.json"), "--demo", cwd=tmp_path)
    assert demo.returncode == 2 and "escalator demo" in demo.stderr
    assert not (tmp_path / "escalator-demo").exists()


def test_a_database_that_cannot_be_used_is_an_error_message_not_a_traceback(tmp_path, state):
    db = tmp_path / "state" / "escalator.sqlite3"
    db.parent.mkdir()
    db.write_bytes(b"not a database\n" * 512)  # deliberately corrupt
    r = run("incidents", env=state)
    assert r.returncode == 1, r.stderr
    assert "database error" in r.stderr and "Traceback" not in r.stderr
    assert "sqlite3." not in r.stderr


def test_plugins_and_check_config_read_the_configs_plugins_dir(tmp_path):
    cfg = tmp_path / "escalator.yaml"
    cfg.write_text("plugins_dir: district.d\n" + (FIXTURES / "engine.yaml").read_text("utf-8"),
                   encoding="utf-8")
    r = run("check-config", "--config", str(cfg))
    assert r.returncode == 1 and "plugins_dir" in r.stderr and "not a folder" in r.stderr
    (tmp_path / "district.d").mkdir()
    shutil.copy(ROOT / "tests" / "plugins" / "district_rule.py", tmp_path / "district.d")
    assert run("check-config", "--config", str(cfg)).returncode == 0
    listed = run("plugins", "--config", str(cfg))
    assert listed.returncode == 0 and "district_rule" in listed.stdout
    assert "district_rule" not in run("plugins").stdout


def test_silence_add_list_expire_on_the_state_database(state, tmp_path):
    from datetime import datetime, timedelta

    fire = tmp_path / "fire.json"
    fire.write_text(json.dumps({"kind": "incident", "category": "fire", "summary": "1号楼 火警",
                                "place": "1号楼"}, ensure_ascii=False), encoding="utf-8")
    ends = (datetime.now().astimezone() + timedelta(hours=2)).isoformat(timespec="minutes")
    run("send", str(fire), env=state)  # makes the database
    bad = run("silence", "add", "-m", "place", "--comment", "检修", "--ends", ends, env=state)
    assert bad.returncode == 1 and "matchers" in bad.stderr
    made = run("silence", "add", "-m", 'place="1号楼"', "--comment", "1号楼消防改造",
               "--ends", ends, env=state)
    assert made.returncode == 0, made.stderr
    sid = made.stdout.split()[1]
    fire.write_text(fire.read_text(encoding="utf-8").replace("火警", "烟雾"), encoding="utf-8")
    held = json.loads(run("send", str(fire), env=state).stdout)
    assert "silenced 已静默" in run("incidents", str(held["incident_id"]), "--lang", "zh",
                                 env=state).stdout
    listing = run("silence", "list", env=state)
    assert sid in listing.stdout and "1号楼消防改造" in listing.stdout and "active" in listing.stdout
    expired = run("silence", "expire", sid, env=state)
    assert expired.returncode == 0 and "1 held" in expired.stdout
    assert run("silence", "expire", sid, env=state).returncode == 3
    assert sid not in run("silence", "list", env=state).stdout
    assert sid in run("silence", "list", "--all", env=state).stdout


def test_note_assign_and_login_link(state):
    assert run("send", str(CASES / "events/fever_single.json"), env=state).returncode == 0
    r = run("note", "1", "已电话联系家长，居家观察", env=state)
    assert r.returncode == 0 and "noted" in r.stdout, r.stderr
    r = run("assign", "1", "doc", env=state)
    assert r.returncode == 0 and "assigned (doc)" in r.stdout, r.stderr
    show = run("incidents", "1", env=state).stdout
    assert "已电话联系家长" in show and "assigned" in show and "doc" in show
    bad = run("assign", "1", "ghost", env=state)
    assert bad.returncode == 1 and "person_id" in bad.stderr and "ghost" in bad.stderr
    empty = run("note", "1", "  ", env=state)
    assert empty.returncode == 1 and "text" in empty.stderr
    assert run("note", "42", "x", env=state).returncode == 3
    link = run("login-link", "doc", env=state)
    assert link.returncode == 0, link.stderr
    assert link.stdout.strip().startswith("http://127.0.0.1:8765/login/")
    assert run("login-link", "ghost", env=state).returncode == 1
