"""Shared fixtures: the sample inputs in ``examples/`` (in this repository) and small configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from escalator.config import load_config
from escalator.testing import Harness

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


CASES = ROOT / "examples"


def case(name: str) -> dict:
    """A sample event from examples/ (``events/fever_single.json``)."""
    return json.loads((CASES / name).read_text(encoding="utf-8"))


@pytest.fixture
def engine_config():
    return load_config(FIXTURES / "engine.yaml")


@pytest.fixture
def harness(engine_config, tmp_path):
    h = Harness(engine_config, tmp_path / "escalator.sqlite3")
    yield h
    h.close()
