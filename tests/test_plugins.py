"""Plugins: every hook documented; a third-party channel from a plugins folder works end to end;
track hooks see transitions and deliveries; a misspelled hook fails loudly."""

from __future__ import annotations

import inspect
import json
import re

import pytest

from escalator import hookspecs
from escalator.clock import FakeClock
from escalator.config import load_config
from escalator.config.settings import Settings
from escalator.events import Event
from escalator.hookspecs import hookimpl
from escalator.plugins import PluginError, collect, describe, get_plugin_manager
from escalator.service.daemon import Daemon

from .conftest import FIXTURES, ROOT

HOOKS = sorted(name for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
               if hasattr(f, "escalator_spec"))


def test_every_hook_is_documented_with_signature_and_example():
    doc = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert len(HOOKS) >= 7
    for name in HOOKS:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        heading = f"### `{name}({params})`"
        assert heading in doc, f"docs/plugins.md lacks {heading}"
        section = doc.split(heading, 1)[1].split("\n### ", 1)[0]
        assert "```python" in section and "@hookimpl" in section, f"{name}: no example"


def test_a_misspelled_hook_fails_loudly():
    class Typo:
        @hookimpl
        def register_chanels(self, register):  # sic
            pass

    with pytest.raises(PluginError, match="register_chanels"):
        get_plugin_manager(entry_points=False, extra=(Typo(),))


async def test_third_party_channel_from_plugins_dir_end_to_end(tmp_path):
    out = tmp_path / "messages.jsonl"
    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8").replace(
        "main: {type: console}", f"main: {{type: jsonl_file, options: {{path: '{out}'}}}}")
    text += f"plugins_dir: {FIXTURES.parent / 'plugins'}\n"
    cfg = tmp_path / "escalator.yaml"
    cfg.write_text(text, encoding="utf-8")
    config = load_config(cfg)
    daemon = Daemon(config, Settings(state_dir=tmp_path / "state", http_listen="off"),
                    clock=FakeClock())
    plugin = daemon.pm.get_plugin("escalator_local_plugins.file_channel")
    plugin.TRACKED.clear()
    seen = []

    class Tracker:
        @hookimpl
        def track_delivery(self, notification, result):
            seen.append((notification.recipient_id, result.status.value))

    daemon.pm.register(Tracker())
    origins = {p["name"]: p["origin"] for p in describe(daemon.pm)}
    assert origins["escalator_local_plugins.file_channel"].startswith("plugins_dir")
    assert "jsonl_file" in collect(daemon.pm).channels

    result = await daemon.ingest([Event(
        kind="incident", category="accident", summary="五年级1班 学生摔伤", class_id="5-1")], "test")
    await daemon.step()
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [m["name"] for m in lines] == ["李老师"]
    assert re.search(r"#1", lines[0]["title"]) and "五年级1班" in lines[0]["body"]
    assert ("t-li", "delivered") in seen
    types = [t for i, t in plugin.TRACKED if i == result[0].incident_id]
    assert types[:2] == ["triggered", "step_fired"] and "notified" in types
    daemon.store.close()


async def test_a_render_plugin_answers_before_the_builtin_templates(harness, engine_config, tmp_path):
    from escalator.delivery.render import Rendered, template_vars

    class Short:
        @hookimpl
        def render_notification(self, context):
            v = template_vars(context)
            return Rendered(f"#{v['id']}", f"{v['category']} {v['class_id']}", None)

    pm = get_plugin_manager(entry_points=False, extra=(Short(),))
    harness.delivery.render = lambda ctx: pm.hook.render_notification(context=ctx)
    await harness.send({"kind": "incident", "category": "accident", "summary": "摔伤",
                        "class_id": "5-1"})
    assert [(m.title, m.body) for m in harness.channel.sent] == [("#1", "意外伤害 5-1")]


async def test_a_crashed_source_is_restarted_with_backoff_and_the_others_go_on(tmp_path, monkeypatch):
    import asyncio

    import escalator.service.daemon as daemon_module

    monkeypatch.setattr(daemon_module, "SOURCE_BACKOFF_MIN", 0.01)
    runs: list[str] = []
    steady_ran = asyncio.Event()
    recovered = asyncio.Event()

    class Flaky:
        type_name = "flaky"

        def __init__(self, source_id, options, context):
            self.ctx = context

        async def run(self):
            runs.append("flaky")
            if len(runs) < 3:
                raise RuntimeError("boom")
            await self.ctx.ingest([Event(kind="incident", category="other", summary="恢复")], "flaky")
            recovered.set()
            await asyncio.Event().wait()

    class Steady:
        type_name = "steady"

        def __init__(self, source_id, options, context):
            pass

        async def run(self):
            steady_ran.set()
            await asyncio.Event().wait()

    class Sources:
        @hookimpl
        def register_sources(self, register):
            register(Flaky)
            register(Steady)

    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8")
    text += "sources:\n  a: {type: flaky}\n  b: {type: steady}\n"
    cfg = tmp_path / "escalator.yaml"
    cfg.write_text(text, encoding="utf-8")
    pm = get_plugin_manager(entry_points=False, extra=(Sources(),))
    daemon = Daemon(load_config(cfg), Settings(state_dir=tmp_path / "s", http_listen="off"),
                    clock=FakeClock(), plugin_manager=pm)
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(10):
        await recovered.wait()
        await steady_ran.wait()
    assert runs == ["flaky", "flaky", "flaky"]
    assert "source a crashed" in (daemon.last_error or "")
    daemon.stop()
    async with asyncio.timeout(10):
        await task


async def test_channels_are_closed_after_a_reload_replaced_them_and_at_stop(tmp_path):
    """The channel contract's ``aclose``: the daemon closes the old channels once a reload has
    put new ones in place, and every channel when it stops; a channel without ``aclose``
    (a plugin written before it) is skipped."""
    import asyncio

    from escalator.testing import RecordingChannel

    closed: list[object] = []
    started = asyncio.Event()

    class Closing(RecordingChannel):
        type_name = "closing"

        async def aclose(self):
            closed.append(self)

    class Plain(RecordingChannel):  # no aclose (RecordingChannel has none): skipped
        type_name = "plain"

    class Plugin:
        @hookimpl
        def register_channels(self, register):
            register(Closing)
            register(Plain)

        @hookimpl
        def startup(self, context):
            started.set()

    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8").replace(
        "main: {type: console}", "main: {type: closing}").replace(
        "backup: {type: console}", "backup: {type: plain}")
    cfg = tmp_path / "escalator.yaml"
    cfg.write_text(text, encoding="utf-8")
    pm = get_plugin_manager(entry_points=False, extra=(Plugin(),))
    daemon = Daemon(load_config(cfg), Settings(state_dir=tmp_path / "s", http_listen="off"),
                    clock=FakeClock(), plugin_manager=pm)
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(10):
        await started.wait()
    first = daemon.delivery.channels["main"]
    assert closed == []
    assert daemon.reload()
    second = daemon.delivery.channels["main"]
    assert second is not first
    async with asyncio.timeout(10):
        while closed != [first]:
            await asyncio.sleep(0.01)
    daemon.stop()
    async with asyncio.timeout(10):
        await task
    assert closed == [first, second]
