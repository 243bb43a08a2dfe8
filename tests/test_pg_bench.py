"""bench/pg_bench.py (issue 15, point 5) stays runnable: its timestamp helpers read and write
both stores' formats (a mismatch would park or fire the wrong incidents), and — marker
``bench``, deselected by default and not run by ``.ci/run`` — one tiny load on SQLite prints
its table. Benchmarks are never timed here: nothing below asserts a figure."""

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def pg_bench():
    sys.path.insert(0, str(BENCH))
    try:
        import pg_bench
    finally:
        sys.path.pop(0)
    return pg_bench


@pytest.mark.parametrize("sample", ["2026-12-07T02:15:00.000001Z",
                                    "2026-12-07 02:15:00.000001+00",
                                    "2026-12-07T02:15:00.000001+00:00"])
def test_a_due_time_is_written_in_the_stores_own_format_and_read_back(pg_bench, sample):
    at = datetime(2027, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    text = pg_bench.fmt_like(at, sample)
    assert (len(text), text[10], text[-3:]) == (len(sample), sample[10], sample[-3:])
    assert pg_bench.parse_ts(text) == at
    assert pg_bench.parse_ts(sample) == datetime(2026, 12, 7, 2, 15, 0, 1, tzinfo=UTC)


@pytest.mark.bench
def test_a_tiny_load_on_sqlite_prints_its_row():
    out = subprocess.run(
        [sys.executable, str(BENCH / "pg_bench.py"), "--parts", "load", "--configs", "sqlite-1",
         "--events", "50", "--runs", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    [row] = [line for line in out.stdout.splitlines() if line.startswith("| sqlite-1 |")]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[8:12] == ["50", "0", "0", "0"]  # steps fired, fired twice, messages twice, missing
