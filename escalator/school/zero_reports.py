"""零报告与登记不符: a daily zero report that contradicts the day's records.

The zero report (传染病疫情零报告, a heartbeat monitor with ``zero_report`` — by default every
monitor of category ``infectious_disease``, :mod:`escalator.school.heartbeats`) says "no new
case today". When the school's own records say otherwise it must not pass silently: the school
doctor, who files it, and the leadership group, who answer for it, are told
(《学校和托幼机构传染病疫情报告工作规范（试行）》2006: the school's epidemic reporter reports
every case found by 晨午检 and 因病缺勤追踪; a 零报告 is only true when there is none).

A zero report for school-local day D, received at time R (its ``occurred_at``), contradicts the
records when

- pupils had a recorded case that occurred on D before R (:meth:`SchoolTx.cases_between`: a
  suspected case or a sickness absence of category ``infectious_disease``, not a drill, not
  personal leave), or
- a cluster incident (not a drill) is open at R;

and, the other way round, a case recorded *after* the zero report that occurred on D before R
(a register entered late) contradicts it too. A report carrying an ``affected_count`` above 0
is not a zero report. The incident (dedup key ``zero-report-mismatch/<monitor>/<D>``: one per
monitor and day, later contradictions counted on it) walks ``zero_report_mismatch`` — added to
the config with one ``inform`` step to ``mismatch_notify`` (default ``school_doctor`` and
``leadership``) — else the monitor's own policy. It names counts only, never a pupil.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import structlog

from escalator.config.models import ZERO_REPORT_MISMATCH_POLICY, Config, Heartbeat
from escalator.engine.rules import EngineOps, Rule, StoredEvent
from escalator.events import Action, Event, Kind
from escalator.school.heartbeats import monitor_for
from escalator.store.base import Tx

log = structlog.get_logger("escalator.school.zero_reports")

ACTOR = "escalator"
CASE_KINDS = (Kind.suspected_case, Kind.absence)


def dedup_key(monitor: str, day: date) -> str:
    """The dedup key of the contradiction incident of ``monitor`` for ``day``."""
    return f"zero-report-mismatch/{monitor}/{day.isoformat()}"


def _day_start(day: date, config: Config) -> datetime:
    return datetime.combine(day, time(0), config.school.tz)


def contradicted(ops: EngineOps, tx: Tx, monitor: str, day: date, reported_at: datetime) -> None:
    """Check the zero report of ``monitor`` for ``day`` made at ``reported_at`` (aware) against
    the records; open (or count on) the contradiction incident when they disagree."""
    config = ops.config
    start = _day_start(day, config)
    end = min(max(reported_at, start), start + timedelta(days=1))
    cases = tx.cases_between(start, end + timedelta(microseconds=1))
    clusters = tx.open_clusters()
    if cases == 0 and not clusters:
        return
    _flag(ops, config, monitor, day, cases, len(clusters))


def late_case(ops: EngineOps, tx: Tx, ev: Event) -> None:
    """A case recorded after a zero report of its day that it contradicts (it occurred before
    the report was made)."""
    config = ops.config
    assert ev.occurred_at is not None
    day = ev.occurred_at.astimezone(config.school.tz).date()
    for mid, monitor in config.heartbeats.items():
        if not monitor.is_zero_report:
            continue
        row = tx.heartbeat_day(mid, day)
        if row is None or row.received_at is None or ev.occurred_at > row.received_at:
            continue
        start = _day_start(day, config)
        cases = tx.cases_between(start, row.received_at + timedelta(microseconds=1))
        _flag(ops, config, mid, day, cases, 0)


def _flag(ops: EngineOps, config: Config, mid: str, day: date, cases: int, clusters: int) -> None:
    monitor: Heartbeat = config.heartbeats[mid]
    policy = (ZERO_REPORT_MISMATCH_POLICY if ZERO_REPORT_MISMATCH_POLICY in config.policies
              else monitor.policy)
    if policy not in config.policies:  # refused by check-config; never crash intake
        log.error("zero_report_mismatch_unrouted", monitor=mid, date=day.isoformat())
        return
    name = monitor.name or mid
    if config.school.language == "zh":
        found = "、".join(x for x in (f"{cases} 名学生病例" if cases else "",
                                      f"{clusters} 起聚集性疫情未解除" if clusters else "") if x)
        summary = (f"零报告与登记不符：{name} {day.isoformat()} 报告“无新发病例”，但当日登记有"
                   f"{found}；请核实并更正报告")
    else:
        found = " and ".join(x for x in (f"{cases} pupil case(s)" if cases else "",
                                         f"{clusters} open cluster(s)" if clusters else "") if x)
        summary = (f"Zero report contradicts the records: {name} for {day.isoformat()} says no "
                   f"new case, but the records show {found}; please check and correct it")
    event = Event(kind="incident", category="other", severity="high", summary=summary,
                  source=ACTOR, dedup_key=dedup_key(mid, day),
                  labels={"zero_report_mismatch": mid, "date": day.isoformat(),
                          "cases": str(cases), "open_clusters": str(clusters)})
    result = ops.open_incident(event, policy=policy, source=ACTOR)
    log.warning("zero_report_mismatch", monitor=mid, date=day.isoformat(), cases=cases,
                open_clusters=clusters, incident_id=result.incident_id, status=result.status)


class ZeroReportRule(Rule):
    """零报告与登记不符 as a rule: a zero report checked against the records when it arrives
    (:func:`contradicted`), and every later case against the zero reports of its day
    (:func:`late_case`). After :class:`~escalator.school.heartbeats.HeartbeatRule` (which
    records the report) and :class:`~escalator.school.clusters.ClusterRule` (which may open a
    cluster for the case)."""

    name = "zero_reports"

    def on_event(self, ops: EngineOps, tx: Tx, event: StoredEvent) -> None:
        ev = event.event
        if ev.action != Action.trigger or ev.drill or event.status == "ledger" or not event.routed:
            return
        if ev.kind == Kind.heartbeat:
            mid = monitor_for(ops.config, ev, event.source)
            if (mid is None or not ops.config.heartbeats[mid].is_zero_report
                    or (ev.affected_count or 0) > 0):
                return
            assert ev.occurred_at is not None
            day = ev.occurred_at.astimezone(ops.config.school.tz).date()
            contradicted(ops, tx, mid, day, ev.occurred_at)
        elif (ev.kind in CASE_KINDS and ev.category.value == "infectious_disease"
              and ev.labels.get("reason") != "personal" and ops.config.heartbeats):
            late_case(ops, tx, ev)
