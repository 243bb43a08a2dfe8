"""Levels are numbered from 1 in every text a person reads, and a copy (an ``inform`` step, e.g.
to the guardians) between two levels does not count as one: the school doctor after the class
teacher and the guardians' copy reads 第2级, not 第3级 (issue 13 point 8)."""

from __future__ import annotations

import pytest

from escalator.config import load_config
from escalator.labels import level_numbers, level_of, levels_in
from escalator.testing import Harness

from .conftest import ROOT, case


@pytest.mark.parametrize(("modes", "numbers"), [
    (["report", "report", "report"], [1, 2, 3]),
    (["report", "inform", "report", "report"], [1, 1, 2, 3]),
    (["inform", "escalate"], [1, 1]),
    (["inform", "inform", "escalate", "inform"], [1, 1, 1, 1]),
    (["report", "report", "inform"], [1, 2, 2]),
    ([], []),
])
def test_level_numbers(modes, numbers):
    assert level_numbers(modes) == numbers
    steps = [{"mode": m} for m in modes]
    assert [level_of(steps, i) for i in range(len(modes))] == numbers
    assert levels_in(steps) == (numbers[-1] if numbers else 0)


async def test_the_school_doctor_after_the_guardians_copy_reads_level_2(tmp_path):
    demo = load_config(ROOT / "config" / "demo.yaml")
    steps = demo.policies["suspected_case"].steps
    assert [s.mode for s in steps][:3] == ["report", "inform", "report"]  # the shipped chain
    h = Harness(demo, tmp_path / "db.sqlite3")
    try:
        await h.send(case("events/fever_single.json"))
        await h.advance(steps[0].timeout + 1)  # the class teacher did not confirm
        staff = [m for m in h.channel.sent if "环节：" in m.body]
        levels = [line for m in staff for line in m.body.splitlines() if line.startswith("环节：")]
        assert levels[0].startswith("环节：第1级")
        doctor = [line for line in levels if steps[2].name in line]
        assert doctor and all(line.startswith("环节：第2级") for line in doctor)
        numbers = sorted({int(line.split("第")[1].split("级")[0]) for line in levels})
        assert numbers == list(range(1, len(numbers) + 1))  # no level skipped
    finally:
        h.close()
