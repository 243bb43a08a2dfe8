"""Shared fixtures: the sample inputs in ``examples/`` (in this repository) and small configs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from escalator.config import load_config
from escalator.store.pg_scratch import ServerUnreachable, scratch_schema
from escalator.testing import Harness

# The suite's assertions on CLI, check-config and spool text are in English (escalator speaks
# Chinese by default: escalator/i18n.py); the tests of the Chinese text choose it themselves
# (tests/test_i18n.py). Set before anything reads it, and inherited by the CLI subprocesses.
for _var in ("LC_ALL", "LC_MESSAGES"):
    os.environ.pop(_var, None)
os.environ["LANG"] = "en_US.UTF-8"

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


@pytest.fixture
def pg_url():
    """A ``postgresql://`` URL of a fresh, empty scratch schema on the tests' PostgreSQL server
    (``$ESCALATOR_TEST_PG``, default ``postgresql://postgres@127.0.0.1:5432/postgres``), dropped
    after the test. Fails (never skips) when the server cannot be reached."""
    try:
        with scratch_schema() as url:
            yield url
    except ServerUnreachable as e:
        pytest.fail(str(e), pytrace=False)
