"""Early warning from sickness absence (escalator/school/early_warning/, docs/early-warning.md): EARS
C1/C2/C3 on daily series per class, grade and school on school days only; the published
per-disease outbreak thresholds at school scope; side by side with the 2006 cluster rule.
Fake clock, real SQLite, no sleeps."""

from __future__ import annotations

import statistics
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from escalator.clock import FakeClock
from escalator.config import load_config
from escalator.config.models import Config
from escalator.school.early_warning import ears
from escalator.school.early_warning.series import SchoolDays
from escalator.testing import Harness

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "early_warning.yaml"
SH = ZoneInfo("Asia/Shanghai")
CLASSES = ["3-1", "3-2", "5-1", "5-2"]


@pytest.fixture
def config() -> Config:
    return load_config(FIXTURE)


def at(day: date, hhmm: str = "08:00") -> datetime:
    return datetime.fromisoformat(f"{day.isoformat()}T{hhmm}").replace(tzinfo=SH)


@pytest.fixture
def h(config, tmp_path):
    harness = Harness(config, tmp_path / "db.sqlite3", clock=FakeClock(at(date(2026, 9, 1), "07:00")))
    yield harness
    harness.close()


def absence(sid: str, cid: str, day: date, symptoms: tuple[str, ...] = ("fever", "cough"),
            **extra: Any) -> dict[str, Any]:
    """A sickness absence (因病缺勤) of pupil ``sid`` in class ``cid`` on ``day``."""
    return {"kind": "absence", "category": "infectious_disease", "summary": "1名学生因病缺勤",
            "subject": {"id": sid}, "class_id": cid, "symptoms": list(symptoms),
            "occurred_at": at(day).isoformat(), "source": "absence-register",
            "labels": {"register": "absence", "reason": "sick"}, **extra}


async def feed(h: Harness, day: date, cases: dict[str, list[tuple[str, ...]]],
               hhmm: str = "10:30") -> None:
    """The day's register at ``hhmm``: ``cases`` per class, one symptom tuple per pupil."""
    h.clock.set(at(day, hhmm))
    from escalator.events import Event
    events = [Event.model_validate(absence(f"{cid}-{day.isoformat()}-{i}", cid, day, s))
              for cid, pupils in cases.items() for i, s in enumerate(pupils)]
    if events:
        h.engine.ingest_many(events, source="absence-register")
    await h.settle()


def school_days(config: Config, first: date, n: int) -> list[date]:
    days = SchoolDays(config)
    out, d = [], first
    while len(out) < n:
        if days.is_school_day(d):
            out.append(d)
        d += timedelta(days=1)
    return out


def incidents(h: Harness, prefix: str) -> list[Any]:
    with h.store.transaction() as tx:
        return [i for i in tx.list_incidents(("triggered", "acknowledged", "resolved"), 1000)
                if i.dedup_key.startswith(prefix)]


def steady(i: int) -> dict[str, list[tuple[str, ...]]]:
    """A steady term: per class 0–2 pupils a day in a fixed cycle, symptoms alternating."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for k, cid in enumerate(CLASSES):
        n = (i + k) % 3
        out[cid] = [("fever", "cough") if (i + j) % 2 else ("vomiting",) for j in range(n)]
    return out


# ----------------------------------------------------------------------------- the methods


def test_ears_definitions_by_hand():
    history = [1, 0, 2, 1, 0, 1, 1, 0, 1, 2, 0]  # oldest first; today is after the last
    # C1: the 7 days before: [0, 1, 1, 0, 1, 2, 0] → mean 5/7, sample sd 0.7559
    assert history[-7:] == [0, 1, 1, 0, 1, 2, 0]
    assert statistics.stdev(history[-7:]) == pytest.approx(0.7559, abs=1e-4)
    j = ears.judge("C1", history, 4, k=0.5, h=2.0, min_sd=0.5)
    assert j is not None and j.signal
    assert j.expected == pytest.approx(5 / 7)
    assert j.sd == pytest.approx(0.7559, abs=1e-4)
    assert j.statistic == pytest.approx((4 - 5 / 7) / 0.7559 - 0.5, abs=1e-3)
    assert j.limit == pytest.approx(5 / 7 + 2.5 * 0.7559, abs=1e-3)
    # C2: the 7 days t-9..t-3: [2, 1, 0, 1, 1, 0, 1] → mean 6/7
    j2 = ears.judge("C2", history, 2, k=0.5, h=3.0, min_sd=0.5)
    assert j2 is not None and not j2.signal and j2.expected == pytest.approx(6 / 7)
    # a floor on the sd: a week of zeros and one pupil is z = 1 / 0.5 = 2
    j = ears.judge("C1", [0] * 7, 1, k=0.5, h=2.0, min_sd=0.5)
    assert j is not None and j.statistic == pytest.approx(1.5) and not j.signal
    # with the default floor of 1 pupil, 3 in a quiet class signal by C1, 4 by C2
    assert ears.judge("C1", [0] * 7, 3, k=0.5, h=2.0, min_sd=1.0).signal
    assert not ears.judge("C2", [0] * 9, 3, k=0.5, h=3.0, min_sd=1.0).signal
    assert ears.judge("C2", [0] * 9, 4, k=0.5, h=3.0, min_sd=1.0).signal
    # C3 sums the C2 statistic over the day and the two before it
    flat = [0] * 11
    j3 = ears.judge("C3", flat[:-2] + [2, 2], 2, k=0.5, h=5.0, min_sd=0.5)
    assert j3 is not None and j3.statistic == pytest.approx(3 * 3.5) and j3.signal
    # no full baseline: no verdict (no signal in a series' first 7 school days)
    assert ears.judge("C1", [0] * 6, 9, k=0.5, h=2.0, min_sd=0.5) is None
    assert ears.judge("C2", [0] * 8, 9, k=0.5, h=3.0, min_sd=0.5) is None
    assert ears.judge("C3", [0] * 10, 9, k=0.5, h=5.0, min_sd=0.5) is None


def test_config_defaults_carry_their_sources(config):
    ew = config.early_warning
    assert {m: (ew.methods[m].k, ew.methods[m].h) for m in ew.methods} == {
        "C1": (0.5, 2.0), "C2": (0.5, 3.0), "C3": (0.5, 5.0)}
    assert all("Qin" in m.source for m in ew.methods.values())
    rules = ew.outbreaks.rules
    assert [(t.scope, t.count, t.days) for t in rules["hfmd"].thresholds] == [
        ("school", 5, 7), ("class", 2, 7), ("dormitory", 2, 7)]
    assert [(t.count, t.days) for t in rules["measles"].thresholds] == [(2, 10)]
    assert [(t.count, t.days) for t in rules["bacillary_dysentery"].thresholds] == [(10, 3)]
    assert all(r.source and "湖州" in r.source for r in rules.values())
    assert config.school.class_sizes == {"3-1": 40, "3-2": 45, "5-1": 42, "5-2": 50}
    assert config.school.classes == CLASSES


# ----------------------------------------------------------------------------- the four


async def test_a_steady_term_gives_no_signal(h, config):
    days = school_days(config, date(2026, 9, 1), 30)
    for i, day in enumerate(days):
        await feed(h, day, steady(i))
    assert incidents(h, "early_warning/") == []
    with h.store.transaction() as tx:  # the series were counted: school days only
        counts = tx.ew_daily_counts("all", "school", days[0], days[-1])
    assert sum(counts.values()) == sum(sum(len(v) for v in steady(i).values())
                                       for i in range(30))
    assert set(counts) <= set(days)


async def test_a_rise_in_one_class_signals_by_c2_before_the_2006_rule(h, config):
    days = school_days(config, date(2026, 9, 1), 16)
    for i, day in enumerate(days[:12]):
        cases = {cid: [("vomiting",)] * ((i + k) % 2) for k, cid in enumerate(["3-1", "5-1", "5-2"])}
        cases["3-2"] = [("vomiting",)] if i == 3 else []  # a quiet class
        await feed(h, day, cases)
    assert incidents(h, "early_warning/") == []
    # day 13: four pupils of 3-2 absent sick — two with no symptom written (病假), one with
    # fever and cough, one vomiting: no three "with similar symptoms", so no 2006 cluster
    await feed(h, days[12], {"3-2": [(), (), ("fever", "cough"), ("vomiting",)]})
    assert incidents(h, "cluster/") == []
    warnings = incidents(h, "early_warning/class:3-2/")
    assert warnings, "no early warning on class 3-2"
    with h.store.transaction() as tx:
        entries = [t for w in warnings for t in tx.timeline(w.id)]
        notes = [n for w in warnings for n in tx.notifications_of(w.id)]
    # the third pupil crossed C1's limit; the fourth C2's (added to the same incident)
    methods = [m["method"] for t in entries if t.type == "early_warning_signal"
               for m in t.detail["methods"]]
    methods += [t.detail["method"] for t in entries if t.type == "early_warning_method"]
    assert "C2" in methods
    first = warnings[0]
    assert first.summary.startswith("因病缺勤预警：三年级2班")
    assert "预期" in first.summary and "EARS" in first.summary
    assert first.policy_id == "early_warning" and first.kind == "incident"
    assert {n.recipient_name for n in notes} == {"赵校医"}  # inform the school doctor
    for w in warnings:  # never a pupil
        text = w.summary + str([t.detail for t in h.store.transaction().__enter__().timeline(w.id)])
        assert "3-2-2026" not in text
    # day 14: three more — now the 2006 rule fires; the cluster opens and walks as ever, and is
    # linked to the warning that came first
    await feed(h, days[13], {"3-2": [("fever", "cough")] * 3})
    [cluster] = incidents(h, "cluster/")
    assert cluster.policy_id == "cluster"
    assert min(w.created_at for w in warnings) < cluster.created_at
    assert "early_warning_linked" in h.timeline(cluster.id)
    assert any("early_warning_linked" in h.timeline(w.id) for w in warnings)
    await h.advance(20 * 60)
    with h.store.transaction() as tx:
        told = [n.recipient_name for n in tx.notifications_of(cluster.id)]
    assert told == ["赵校医", "张校长", "区疾控", "区教育局"]


async def test_a_holiday_week_inside_the_baseline_does_not_signal(h, config):
    # two pupils of 3-2 every school day, across National Day (10-01..10-07 off; Saturday
    # 10-10 is a make-up school day). Counted on calendar days the holiday's zeros would make
    # the baseline 0 and every day after it a signal.
    days = [d for d in school_days(config, date(2026, 9, 14), 20)]
    assert date(2026, 10, 10) in days and date(2026, 10, 5) not in days
    for i, day in enumerate(days):
        cases = {"3-2": [("fever",), ("vomiting",)], "5-1": [("rash",)] * (i % 2)}
        await feed(h, day, cases)
    assert incidents(h, "early_warning/") == []


async def test_a_new_terms_first_week_stays_quiet(h, config):
    spring = school_days(config, date(2026, 6, 8), 15)  # the end of the spring term: quiet
    for day in spring:
        await feed(h, day, {"3-1": [("vomiting",)]})
    autumn = school_days(config, date(2026, 9, 1), 8)
    for day in autumn[:7]:  # the first week back: many absences, but no baseline yet
        await feed(h, day, {"3-2": [("fever",), ("vomiting",)], "5-2": [("rash",)] * 2})
    assert incidents(h, "early_warning/") == []
    # the 8th school day of the term: C1 has its 7 days, and a jump in 5-1 signals
    await feed(h, autumn[7], {"3-2": [("fever",), ("vomiting",)], "5-2": [("rash",)] * 2,
                              "5-1": [("cough",)] * 3})
    assert incidents(h, "early_warning/class:5-1/")


# ----------------------------------------------------------------------------- the details


async def test_one_series_signals_once_a_day_and_late_registers_update_their_day(h, config):
    days = school_days(config, date(2026, 9, 1), 12)
    for i, day in enumerate(days[:11]):
        await feed(h, day, {"3-1": [("vomiting",)] * (i % 2)})
    await feed(h, days[11], {"3-2": [("cough",)] * 4})
    before = len(incidents(h, "early_warning/class:3-2/all/"))
    await feed(h, days[11], {"3-2": [("cough",)] * 6}, hhmm="11:00")  # more the same day
    assert before == 1 and len(incidents(h, "early_warning/class:3-2/all/")) == 1
    # a late register for a past day counts on that day
    await feed(h, days[11] + timedelta(days=1), {})
    h.clock.set(at(days[11] + timedelta(days=3), "09:00"))
    from escalator.events import Event
    h.engine.ingest(Event.model_validate(absence("late-1", "5-2", days[5], ("rash",))))
    with h.store.transaction() as tx:
        assert tx.ew_daily_counts("rash", "class:5-2", days[5], days[5]) == {days[5]: 1}


async def test_rates_use_the_registers_class_size_over_the_config(h, config):
    from escalator.school.early_warning import denominator
    day = date(2026, 9, 1)
    await feed(h, day, {"3-2": [("fever",)]})
    with h.store.transaction() as tx:
        assert denominator(config, tx, "class:3-2", day) == 45
        assert denominator(config, tx, "grade:5", day) == 92
        assert denominator(config, tx, "school", day) == 177
    from escalator.events import Event
    h.engine.ingest(Event.model_validate(absence(
        "x", "3-2", day, ("fever",), labels={"reason": "sick", "class_size": "44"})))
    with h.store.transaction() as tx:
        assert denominator(config, tx, "class:3-2", day) == 44


async def test_a_personal_or_unexplained_absence_is_not_counted(h):
    from escalator.events import Event
    h.clock.set(at(date(2026, 9, 1), "10:00"))
    for reason in ("personal", "unknown"):
        h.engine.ingest(Event.model_validate(absence(
            f"p-{reason}", "3-2", date(2026, 9, 1), (), labels={"reason": reason})))
    with h.store.transaction() as tx:
        assert tx.ew_daily_counts("all", "school", date(2026, 9, 1), date(2026, 9, 1)) == {}


def diagnosed(sid: str, cid: str, day: date, diagnosis: str) -> dict[str, Any]:
    return {"kind": "suspected_case", "category": "infectious_disease", "summary": "学生病例",
            "subject": {"id": sid}, "class_id": cid, "diagnosis": diagnosis,
            "occurred_at": at(day).isoformat(), "source": "school-doctor"}


async def test_school_level_outbreak_threshold_varicella_five_in_seven_days(h, config):
    days = [date(2026, 9, 1) + timedelta(days=i) for i in (0, 1, 2, 6)]
    h.clock.set(at(days[-1], "12:00"))
    for n, (cid, day) in enumerate(zip(CLASSES, days, strict=True)):
        await h.send(diagnosed(f"v{n}", cid, day, "水痘"))
    assert incidents(h, "outbreak/") == []  # 4 in 7 days, one per class: no class rule
    await h.send(diagnosed("v9", "3-1", days[-1], "水痘（临床诊断）"))
    [out] = incidents(h, "outbreak/")
    assert out.dedup_key == "outbreak/varicella/school/2026-09-01"
    assert out.summary == "全校 7天内5名学生为水痘病例（达到聚集性疫情标准：7天内≥5例）"
    assert out.policy_id == "cluster" and out.deadline_rule == "school_cluster"
    assert "outbreak_threshold_reached" in h.timeline(out.id)
    # a sixth case adds to it, no second incident
    await h.send(diagnosed("v10", "5-2", days[-1], "水痘"))
    assert len(incidents(h, "outbreak/")) == 1 and h.incident(out.id).event_count == 6


async def test_measles_window_is_ten_days_and_german_measles_is_rubella(h):
    h.clock.set(at(date(2026, 9, 20), "12:00"))
    await h.send(diagnosed("m1", "3-1", date(2026, 9, 8), "German measles"))
    await h.send(diagnosed("m2", "5-1", date(2026, 9, 17), "German measles"))
    assert incidents(h, "outbreak/") == []  # rubella needs 5; not measles
    await h.send(diagnosed("m3", "3-1", date(2026, 9, 8), "麻疹"))
    await h.send(diagnosed("m4", "5-1", date(2026, 9, 19), "measles"))
    assert incidents(h, "outbreak/") == []  # 12 days apart
    await h.send(diagnosed("m5", "5-2", date(2026, 9, 17), "麻疹"))
    [out] = incidents(h, "outbreak/")
    assert out.dedup_key.startswith("outbreak/measles/school/")


async def test_ili_counts_by_its_case_definition(h):
    from escalator.events import Event
    from escalator.school.early_warning.outbreaks import is_ili
    ev = Event.model_validate({**absence("a", "3-2", date(2026, 9, 1), ("fever", "cough")),
                               "labels": {"temperature": "37.6"}})
    assert not is_ili(ev)
    assert is_ili(ev.model_copy(update={"labels": {"temperature": "38.2"}}))
    assert is_ili(ev.model_copy(update={"labels": {}}))  # no temperature recorded: fever
    assert not is_ili(ev.model_copy(update={"symptoms": ["fever"], "labels": {}}))


async def test_off_without_the_section(tmp_path):
    config = load_config(Path(__file__).resolve().parent / "fixtures" / "clusters.yaml")
    assert config.early_warning is None
    h = Harness(config, tmp_path / "db.sqlite3", clock=FakeClock(at(date(2026, 11, 30), "10:30")))
    try:
        from escalator.events import Event
        h.engine.ingest(Event.model_validate(absence("a", "3-2", date(2026, 11, 30))))
        with h.store.transaction() as tx:
            assert tx.ew_first_date() is None
    finally:
        h.close()


# ----------------------------------------------------------------------------- registers, CLI


def test_registers_carry_class_size_and_reason(config):
    from escalator.intake.registers import parse_register
    absence_csv = ("日期,班级,学号,缺勤原因,症状,应到人数\n"
                   "2026-09-01,3-2,S1,病假,发热,44\n2026-09-01,3-2,S2,事假,,44\n").encode()
    subs = parse_register(absence_csv, config, key=b"k")
    assert [s.event.labels.get("class_size") for s in subs] == ["44", "44"]
    assert [s.event.labels["reason"] for s in subs] == ["sick", "personal"]
    check_csv = ("晨检日期,班级,姓名,是否出勤,发热,咳嗽,其他\n"
                 "2026-09-01,3-2,张三,否,√,,\n2026-09-01,3-2,李四,否,,,\n"
                 "2026-09-01,3-2,王五,否,,,事假\n").encode()
    subs = parse_register(check_csv, config, key=b"k")
    assert [s.event.labels["reason"] for s in subs] == ["sick", "unknown", "personal"]
    bad = ("日期,班级,学号,缺勤原因,应到人数\n2026-09-01,3-2,S1,病假,很多\n").encode()
    from escalator.intake.registers import RegisterError
    with pytest.raises(RegisterError) as e:
        parse_register(bad, config, key=b"k")
    assert e.value.errors[0]["column"] == "应到人数"


def main(argv: list[str]) -> int:
    """The CLI's command in this process, without ``escalator.cli.main``'s logging setup (which
    would bind structlog to pytest's captured stdout for the later tests)."""
    from escalator.cli import EXIT_USAGE, UsageError, build_parser
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError:
        return EXIT_USAGE


def test_cli_backtest_synthetic_is_deterministic(capsys):
    args = ["warning", "backtest", "--synthetic", "--seed", "7", "--terms", "2", "--format", "json"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    import json
    report = json.loads(first)
    assert [r["method"] for r in report["rows"]] == ["C1", "C2", "C3", "2006 rule"]
    assert report["rows"][0]["outbreaks"] == 8
    assert main(["warning", "backtest"]) == 2  # neither --registers nor --synthetic


def test_cli_backtest_over_a_folder_of_registers(tmp_path, capsys):
    from escalator.school.early_warning.synthetic import school_days
    folder = tmp_path / "registers"
    folder.mkdir()
    for n, day in enumerate(school_days(date(2026, 9, 1), date(2026, 10, 30))):
        rows = [f"{day},3-1,S{n}a,病假,发热"]
        if day >= date(2026, 10, 26):
            rows += [f"{day},3-2,S{n}{k},病假,咳嗽" for k in "bcdef"]
        (folder / f"{day}.csv").write_text("日期,班级,学号,缺勤原因,症状\n" + "\n".join(rows) + "\n",
                                           encoding="utf-8")
    (folder / "notes.csv").write_text("hello\n", encoding="utf-8")
    assert main(["warning", "backtest", "--registers", str(folder), "--config", str(FIXTURE)]) == 0
    out = capsys.readouterr()
    assert "notes.csv" in out.err
    c1 = next(line for line in out.out.splitlines() if line.startswith("C1"))
    assert int(c1.split()[4]) > 0  # signals on the late-October rise


def test_backtest_names_each_bad_row_and_skips_what_is_not_a_file(tmp_path, config):
    from escalator.school.early_warning.backtest import terms_from_registers

    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "bad.csv").write_text("日期,班级,学号,缺勤原因\n2026-11-30,7-3,S1,病假 发热\n",
                                      encoding="utf-8")
    _, problems = terms_from_registers(tmp_path, config)
    assert "folder.csv: not a file" in problems
    [bad] = [p for p in problems if p.startswith("bad.csv")]
    assert "row 1 (班级): unknown class '7-3'" in bad
