"""Runtime settings: ESCALATOR_LOG_LEVEL filters log lines; ESCALATOR_EVENT_LOOP picks the loop."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from escalator.config.settings import load_settings
from escalator.service import logs


@pytest.fixture
def restored_logging():
    """structlog as it was before the test (``logs.configure`` binds the captured stderr)."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_log_level_setting_filters_lines(capsys, monkeypatch, restored_logging):
    monkeypatch.setenv("ESCALATOR_LOG_LEVEL", "warning")
    settings = load_settings()
    assert settings.log_level == "warning"
    logs.configure("json", settings.log_level)
    log = structlog.get_logger("t")
    log.info("below_the_level")
    log.warning("at_the_level")
    err = capsys.readouterr().err
    assert "at_the_level" in err and "below_the_level" not in err


def test_bad_log_level_is_refused(monkeypatch):
    monkeypatch.setenv("ESCALATOR_LOG_LEVEL", "chatty")
    with pytest.raises(ValueError, match="log_level"):
        load_settings()


def test_event_loop_choice():
    import uvloop  # a dependency (pyproject.toml)

    assert logs.loop_factory("asyncio") is None
    assert logs.loop_factory("auto") is uvloop.new_event_loop
    with asyncio.Runner(loop_factory=logs.loop_factory("auto")) as runner:
        assert runner.run(_loop_type()) is uvloop.Loop


async def _loop_type():
    return type(asyncio.get_running_loop())
