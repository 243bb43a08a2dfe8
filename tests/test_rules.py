"""Rules (escalator/engine/rules.py): the engine imports no rule; the school rules and a
district's own reach it through the plugin manager; a rule's error rolls its transaction back;
startup/shutdown hooks get the narrow plugin context."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import pytest

from escalator.clock import FakeClock
from escalator.config import load_config
from escalator.config.settings import Settings
from escalator.engine.rules import Rule
from escalator.events import Event
from escalator.hookspecs import PluginContext, hookimpl
from escalator.plugins import PluginError, collect_rules, get_plugin_manager
from escalator.service.daemon import Daemon
from escalator.testing import Harness

from .conftest import FIXTURES, ROOT

SCHOOL_RULES = ["heartbeats", "deadlines", "clusters", "early_warning", "zero_reports", "guardians",
                "drills", "roster"]


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_the_engine_imports_nothing_from_the_school_rules():
    modules = sorted((ROOT / "escalator" / "engine").glob("*.py"))
    assert len(modules) >= 5
    for path in modules:
        bad = [n for n in _imports(path) if n == "escalator.school" or n.startswith("escalator.school.")]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_school_rules_call_no_private_engine_method():
    school = ROOT / "escalator" / "school"
    paths = [school / f"{name}.py" for name in
             ("clusters", "deadlines", "heartbeats", "drills", "guardians", "plugin")]
    paths += sorted((school / "early_warning").glob("*.py"))
    for path in paths:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\bengine\._", text) and "type: ignore" not in text, path.name


def test_the_school_rules_come_from_a_builtin_plugin_in_a_fixed_order(engine_config):
    pm = get_plugin_manager(entry_points=False)
    assert [r.name for r in collect_rules(pm, engine_config)] == SCHOOL_RULES


def district_config(tmp_path: Path):
    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8").replace(
        "policies:\n", "policies:\n  missing_pupil:\n    steps:\n"
        "      - {targets: [leadership], timeout: 60, mode: escalate}\n", 1)
    text += f"plugins_dir: {FIXTURES.parent / 'plugins'}\n"
    cfg = tmp_path / "escalator.yaml"
    cfg.write_text(text, encoding="utf-8")
    return load_config(cfg)


ABSENCE = {"kind": "absence", "category": "other", "summary": "缺勤", "class_id": "3-2",
           "subject": {"id": "S-2023-0142"}}


async def test_a_district_rule_from_a_plugins_dir_opens_an_incident(tmp_path):
    config = district_config(tmp_path)
    h = Harness(config, tmp_path / "db.sqlite3")
    try:
        assert [r.name for r in h.engine.rules] == [*SCHOOL_RULES, "district_unreachable_family"]
        quiet = await h.send(ABSENCE)
        assert h.told() == ["王老师"]  # no label: the district rule does nothing

        lost = await h.send({**ABSENCE, "subject": {"id": "S-2023-0143"},
                             "labels": {"contact": "lost"}})
        with h.store.transaction() as tx:
            opened = tx.open_incident_by_key(f"unreachable-family/{lost.incident_id}")
        assert opened is not None and opened.id not in (quiet.incident_id, lost.incident_id)
        assert opened.policy_id == "missing_pupil" and opened.category == "public_security"
        assert h.timeline(opened.id)[:3] == ["triggered", "step_fired", "district_rule"]
        # the class teacher and the rule's policy, whose incident is "high": its message goes
        # first (delivery claims the most urgent first, docs/delivery.md)
        assert h.told() == ["王老师", "张校长", "王老师"]
    finally:
        h.close()
    daemon = Daemon(config, Settings(state_dir=tmp_path / "state", http_listen="off"),
                    clock=FakeClock())  # the daemon gets the same rules the same way
    assert [r.name for r in daemon.engine.rules][-1] == "district_unreachable_family"
    daemon.store.close()


async def test_an_error_in_a_rule_rolls_the_event_back(engine_config, tmp_path):
    class Boom(Rule):
        name = "boom"

        def on_event(self, ops, tx, event):
            raise RuntimeError("boom")

    class Plugin:
        @hookimpl
        def escalator_rules(self, config):
            return [Boom()]

    pm = get_plugin_manager(entry_points=False, extra=(Plugin(),))
    h = Harness(engine_config, tmp_path / "db.sqlite3", plugin_manager=pm)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            h.engine.ingest(Event.model_validate({**ABSENCE, "kind": "incident"}))
        with h.store.transaction() as tx:
            assert tx.count_incidents() == {} and tx.events_of(1) == []
        assert h.told() == []
    finally:
        h.close()


def test_two_rules_with_one_name_are_refused(engine_config):
    class Again:
        @hookimpl
        def escalator_rules(self, config):
            class Clusters(Rule):
                name = "clusters"
            return [Clusters()]

    with pytest.raises(PluginError, match="share a name"):
        collect_rules(get_plugin_manager(entry_points=False, extra=(Again(),)), engine_config)


async def test_startup_and_shutdown_get_the_plugin_context(tmp_path):
    seen: list[tuple[str, PluginContext]] = []
    submitted = asyncio.Event()

    class Hello:
        @hookimpl
        def startup(self, context):
            seen.append(("startup", context))

            async def hello():
                await context.submit([Event(kind="incident", category="other",
                                            summary="插件启动", class_id="5-1")], "hello")
                submitted.set()

            asyncio.get_running_loop().create_task(hello())

        @hookimpl
        def shutdown(self, context):
            seen.append(("shutdown", context))

    cfg = tmp_path / "escalator.yaml"
    cfg.write_text((FIXTURES / "engine.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    clock = FakeClock()
    pm = get_plugin_manager(entry_points=False, extra=(Hello(),))
    daemon = Daemon(load_config(cfg), Settings(state_dir=tmp_path / "s", http_listen="off"),
                    clock=clock, plugin_manager=pm)
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(10):
        await submitted.wait()
    daemon.stop()
    async with asyncio.timeout(10):
        await task
    assert [hook for hook, _ in seen] == ["startup", "shutdown"]
    context = seen[0][1]
    assert context.config is daemon.config and context.clock is clock
    assert not hasattr(context, "store") and not hasattr(context, "engine")


def test_the_worked_example_in_the_docs_is_the_plugin_the_tests_run():
    doc = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    example = doc.split("## Writing a rule", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    plugin = (ROOT / "tests" / "plugins" / "district_rule.py").read_text(encoding="utf-8")
    assert example.strip() in plugin
