"""The shipped configs (config/demo.yaml, config/example.yaml) load without errors and hang together."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from escalator.config import load_config
from escalator.config.models import StepMode
from escalator.engine.targets import parse_target, resolve

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
SHIPPED = ["demo.yaml", "example.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_loads_without_errors(name: str) -> None:
    config = load_config(CONFIG_DIR / name)  # raises ConfigError on any error
    assert config.school.name == "示例小学"
    assert config.school.timezone == "Asia/Shanghai"


def test_demo_routes_name_existing_policies() -> None:
    config = load_config(CONFIG_DIR / "demo.yaml")
    for route in config.routes:
        assert route.policy == "none" or route.policy in config.policies, route
    assert sum(r.default for r in config.routes) == 1


def test_demo_infectious_disease_is_four_report_steps() -> None:
    policy = load_config(CONFIG_DIR / "demo.yaml").policies["infectious_disease"]
    assert len(policy.steps) == 4
    assert all(step.mode is StepMode.report for step in policy.steps)


def test_demo_uses_only_the_console() -> None:
    config = load_config(CONFIG_DIR / "demo.yaml")
    assert {c.type for c in config.channels.values()} == {"console"}
    for who in [*config.people, *config.units]:
        assert who.contacts, who.id
        assert {m.channel for m in who.contacts} == {"console"}, who.id


@pytest.mark.parametrize("name", SHIPPED)
def test_every_target_resolves_at_every_hour(name: str) -> None:
    config = load_config(CONFIG_DIR / name)
    monday = datetime(2026, 11, 30, tzinfo=ZoneInfo(config.school.timezone))
    targets = {t for p in config.policies.values() for s in p.steps for t in s.targets}
    for cls in config.school.classes:
        for hour in range(7 * 24):
            at = monday + timedelta(hours=hour, minutes=30)
            for text in targets:
                if text == "guardian":
                    continue
                found = resolve(parse_target(text, config), config, class_id=cls, grade=None, at=at)
                assert found, (text, cls, at)
                assert all(r.contacts for r in found), (text, cls, at)
