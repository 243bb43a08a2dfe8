"""Early warning from sickness absence: EARS signals on daily series per class, grade and
school, and the published per-disease outbreak thresholds at every scope (docs/early-warning.md).

A rule (:class:`EarlyWarningRule`, registered by the built-in school plugin
:mod:`escalator.school.plugin`, after the clusters rule); the engine knows nothing of it:

- ``on_event`` → :func:`on_case` — in the transaction that stores each triggering event routed
  normally (after :class:`~escalator.school.clusters.ClusterRule`): counts the case in the
  series (``ew_cases``), judges the series it touches on its day and every school day since (a
  late register for a past day updates that day), applies the fixed thresholds
  (:mod:`escalator.school.early_warning.outbreaks`) and links signals to open clusters.
- ``on_tick`` → :func:`on_tick` — in the transaction of ``Engine.tick``: once per school-local
  date (per rule object: a config reload makes a new one, which judges again — nothing is opened
  twice), after ``early_warning.evaluate_at``, judges today's value of every series (a
  reconcile: a series whose events came while early warning was off, or before a reload changed
  its parameters) and drops counted cases older than ``retention.personal_data_days``. The date
  is marked done before the work: a failure rolls back that tick (the daemon loop retries it,
  without early warning) and the next date tries again.

A signal opens one incident per series and school-local date (dedup key
``early_warning/<series>/<date>``, through :meth:`~escalator.engine.rules.EngineOps.open_incident`):
kind ``incident``, category ``infectious_disease``, ``early_warning.severity`` (default medium),
walking ``early_warning.policy`` or, by default, the policy ``early_warning`` the config adds —
one ``inform`` step to ``early_warning.notify`` (default: the school doctor; add
``district_cdc`` to tell the district CDC). Its summary and timeline (``early_warning_signal``)
name the series (三年级2班 / 三年级 / 全校 and the syndrome group), the observed count and rate,
the expected count, the method, its statistic and threshold — never a pupil. A second method
signalling the same series on the same day adds ``early_warning_method`` to that incident.
It never touches a cluster's walk: a cluster opened by the 2006 rule (``clusters``) opens and
walks as before; when a cluster is open in a class whose class, grade or school series signalled
in the last 7 days on a group the cluster shares (or ``all``), both incidents get
``early_warning_linked`` naming the other.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import structlog

from escalator.config.models import EARLY_WARNING_POLICY, Config
from escalator.engine.rules import EngineOps, Rule, StoredEvent
from escalator.events import Action, Category, Event, Kind
from escalator.school.early_warning import ears, outbreaks
from escalator.school.early_warning.series import (
    ALL,
    SchoolDays,
    SeriesKey,
    class_size_label,
    group_label,
    groups_of,
    is_sickness_absence,
    pupil_digest,
    scope_label,
    series_of,
    watched_groups,
)
from escalator.store.base import EwCase, Tx

log = structlog.get_logger("escalator.school.early_warning")

__all__ = ["LATE_DAYS", "LINK_DAYS", "EarlyWarningRule", "denominator", "evaluate", "on_case",
           "on_tick", "open_signal", "pupil_digest"]

ACTOR = "escalator"
LATE_DAYS = 10
"""A late case is judged on its own day and the school days after it only when its day is at
most this many school days back; older ones only update the counts."""
LINK_DAYS = 7
"""A cluster links to signals of the last this many calendar days (its day included)."""


class EarlyWarningRule(Rule):
    """Early warning as a rule (module docstring): every routed trigger event (not ledger-only)
    is counted (:func:`on_case`); the tick runs the daily reconcile (:func:`on_tick`)."""

    name = "early_warning"

    def __init__(self) -> None:
        self.evaluated: date | None = None
        """The school-local date whose daily reconcile ran (or was tried)."""

    def on_event(self, ops: EngineOps, tx: Tx, event: StoredEvent) -> None:
        if event.routed and event.event.action == Action.trigger and event.status != "ledger":
            on_case(ops, tx, event.event, event.id)

    def on_tick(self, ops: EngineOps, tx: Tx) -> int:
        cfg = ops.config.early_warning
        if cfg is None or not cfg.enabled:
            return 0
        local = ops.now.astimezone(ops.config.school.tz)
        if self.evaluated == local.date() or local.time().replace(tzinfo=None) < cfg.evaluate_at:
            return 0
        self.evaluated = local.date()
        return on_tick(ops, tx)


def on_case(ops: EngineOps, tx: Tx, ev: Event, event_id: str) -> None:
    """Count one stored triggering event (normalised: ``occurred_at`` aware UTC) in its
    transaction ``tx``. Does nothing unless ``early_warning`` is configured and enabled (module
    docstring)."""
    cfg = ops.config.early_warning
    if cfg is None or not cfg.enabled or ev.occurred_at is None or ev.subject is None:
        return
    now = ops.now
    tz = ops.config.school.tz
    day = ev.occurred_at.astimezone(tz).date()
    groups: list[str] = []
    if is_sickness_absence(cfg, ev):
        assert ev.class_id is not None
        groups = groups_of(ops.config, ev.symptoms)
        pupil, size = pupil_digest(ev.subject.id), class_size_label(ev)
        for g in groups:
            tx.ew_add_case(EwCase(event_id, g, day, ev.class_id, ev.grade, ev.dormitory, pupil,
                                  size))
        days = SchoolDays(ops.config)
        today = now.astimezone(tz).date()
        recent = days.before(today + timedelta(days=1), LATE_DAYS + 1, None)
        judged = [d for d in recent if d >= day] if recent and day >= recent[0] else []
        for d in judged:
            for key in series_of(cfg.scopes, ev.class_id, groups):
                evaluate(ops, tx, key, d, days)
    outbreaks.arrived(ops, tx, ev, event_id, day)
    if ev.class_id and not ev.drill:
        link(ops, tx, ev.class_id, [g for g in groups if g != ALL] or None, day)


def on_tick(ops: EngineOps, tx: Tx) -> int:
    """The daily reconcile (:class:`EarlyWarningRule` runs it once per school-local date, at or
    after ``early_warning.evaluate_at``): purge counted cases past the retention period and, on
    a school day, judge today's value of every series. Returns how many incidents it opened."""
    cfg = ops.config.early_warning
    assert cfg is not None
    today = ops.now.astimezone(ops.config.school.tz).date()
    tx.ew_purge(today - timedelta(days=ops.config.retention.personal_data_days))
    days = SchoolDays(ops.config)
    if not days.is_school_day(today):
        return 0
    keys: list[str] = []
    for cid in sorted(set(ops.config.school.classes) | set(tx.ew_classes())):
        for key in series_of(cfg.scopes, cid, watched_groups(ops.config)):
            if key not in keys:
                keys.append(key)
    return sum(evaluate(ops, tx, key, today, days) is not None for key in keys)


def series_start(tx: Tx, day: date, days: SchoolDays) -> date | None:
    """The first date of the series' history for ``day``: the start of the configured term
    containing it, or the first date any case was counted, whichever is later (None: neither)."""
    starts = [d for d in (days.term_start(day), tx.ew_first_date()) if d is not None]
    return max(starts) if starts else None


def denominator(config: Config, tx: Tx, scope: str, day: date) -> int | None:
    """Pupils in ``scope`` on ``day``: register 应到人数 (latest on or before ``day``) over
    ``school.class_sizes``; a grade or the school sums its classes; None when a class's size is
    unknown."""
    sizes = {**config.school.class_sizes, **tx.ew_register_sizes(day)}
    classes = sorted(set(config.school.classes) | set(tx.ew_classes()) | set(sizes))
    kind, _, value = scope.partition(":")
    chosen = ([value] if kind == "class" else
              [c for c in classes if c.split("-")[0] == value] if kind == "grade" else classes)
    if not chosen or any(c not in sizes for c in chosen):
        return None
    return sum(sizes[c] for c in chosen)


def evaluate(ops: EngineOps, tx: Tx, key: str, day: date, days: SchoolDays | None = None
             ) -> int | None:
    """Judge series ``key`` on school-local ``day`` with every enabled method; open (or add to)
    its incident on a signal. Returns the incident id when one was opened now, else None."""
    cfg = ops.config.early_warning
    assert cfg is not None
    now = ops.now
    days = days or SchoolDays(ops.config)
    if not days.is_school_day(day):
        return None
    sk = SeriesKey.parse(key)
    need = cfg.baseline_days + cfg.guard_days + 2
    history_days = days.before(day, need, series_start(tx, day, days))
    counts = tx.ew_daily_counts(sk.group, sk.scope, history_days[0] if history_days else day, day)
    x = counts.get(day, 0)
    if x == 0:
        return None
    history = [counts.get(d, 0) for d in history_days]
    found = []
    for name, m in cfg.methods.items():
        if not m.enabled:
            continue
        j = ears.judge(name, history, x, k=m.k, h=m.h, min_sd=cfg.min_sd,
                       baseline=cfg.baseline_days, guard=cfg.guard_days)
        if j is not None and j.signal:
            found.append(j)
    if not found:
        return None
    existing = tx.ew_signal(key, day)
    if existing is not None:
        incident_id, methods = existing
        new = [j for j in found if j.method not in methods]
        if new:
            tx.ew_record_signal(key, day, incident_id, methods + [j.method for j in new], now)
            if incident_id is not None:
                for j in new:
                    tx.add_timeline(incident_id, now, "early_warning_method", ACTOR,
                                    {"series": key, "date": day.isoformat(), **_detail(j)})
        return None
    incident_id = open_signal(ops, tx, key, day, found)
    tx.ew_record_signal(key, day, incident_id, [j.method for j in found], now)
    if incident_id is not None and sk.class_id:
        link(ops, tx, sk.class_id, None if sk.group == ALL else [sk.group], day)
    return incident_id


def _detail(j: ears.Judgement) -> dict[str, Any]:
    return {"method": j.method, "observed": j.observed, "expected": round(j.expected, 3),
            "sd": round(j.sd, 3), "statistic": round(j.statistic, 3), "threshold": j.threshold,
            **({"limit": round(j.limit, 3)} if j.limit is not None else {})}


def describe(config: Config, key: str, day: date, j: ears.Judgement, rate: float | None) -> str:
    """The signal in one line (zh / en by ``school.language``): series, observed (and rate),
    expected, method, statistic and threshold. No pupil."""
    lang = config.school.language
    sk = SeriesKey.parse(key)
    where, what = scope_label(sk.scope, lang), group_label(config, sk.group, lang)
    n = int(j.observed)
    if lang == "zh":
        share = f"（{rate:.1%}）" if rate is not None else ""
        rule = (f"EARS {j.method}：统计量{j.statistic:.1f}＞阈值{j.threshold:g}"
                + (f"，即超过{j.limit:.1f}人" if j.limit is not None else "（3个上课日累计）"))
        return (f"因病缺勤预警：{where}（{what}）{day.month}月{day.day}日{n}人{share}，"
                f"预期{j.expected:.1f}人；{rule}")
    share = f" ({rate:.1%})" if rate is not None else ""
    rule = (f"EARS {j.method}: statistic {j.statistic:.1f} > threshold {j.threshold:g}"
            + (f", i.e. above {j.limit:.1f}" if j.limit is not None else " (sum over 3 school days)"))
    return (f"Sickness-absence early warning: {where} ({what}) on {day.isoformat()}: {n} "
            f"pupils{share}, expected {j.expected:.1f}; {rule}")


def open_signal(ops: EngineOps, tx: Tx, key: str, day: date, found: list[ears.Judgement]
                ) -> int | None:
    """Open the ``early_warning`` incident of series ``key`` on ``day`` for the methods that
    signalled (``found``, the first is named in the summary). Returns its id (None when the
    configured policy is unknown: refused by check-config, never fails the intake)."""
    cfg = ops.config.early_warning
    assert cfg is not None
    now = ops.now
    policy = cfg.policy or EARLY_WARNING_POLICY
    if policy not in ops.config.policies:
        log.error("early_warning_policy_unknown", policy=policy, series=key)
        return None
    sk = SeriesKey.parse(key)
    pupils = denominator(ops.config, tx, sk.scope, day)
    rate = found[0].observed / pupils if pupils else None
    text = describe(ops.config, key, day, found[0], rate)
    details = "\n".join(describe(ops.config, key, day, j, rate) for j in found)
    event = Event(
        kind=Kind.incident, category=Category.infectious_disease, severity=cfg.severity,
        summary=text[:500], details=details[:4000],
        class_id=sk.class_id, grade=sk.grade,
        occurred_at=now,
        source=ACTOR, dedup_key=f"early_warning/{key}/{day.isoformat()}",
        labels={"early_warning": found[0].method, "series": key, "date": day.isoformat()},
    )
    result = ops.open_incident(event, policy=policy, source=ACTOR)
    if result.incident_id is None:
        return None
    tx.add_timeline(result.incident_id, now, "early_warning_signal", ACTOR,
                    {"series": key, "date": day.isoformat(), "pupils": pupils,
                     "rate": round(rate, 5) if rate is not None else None,
                     "methods": [_detail(j) for j in found],
                     "min_sd": cfg.min_sd, "baseline_days": cfg.baseline_days,
                     "guard_days": cfg.guard_days})
    log.warning("early_warning_signal", incident_id=result.incident_id, series=key,
                date=day.isoformat(), method=found[0].method, observed=found[0].observed,
                expected=round(found[0].expected, 2))
    return result.incident_id


def link(ops: EngineOps, tx: Tx, class_id: str, groups: list[str] | None, day: date) -> int:
    """Link an open cluster of class ``class_id`` sharing one of ``groups`` (None: any syndrome
    group) with the open signals of the last :data:`LINK_DAYS` days on the class's, its grade's
    and the school's series of the cluster's groups or ``all``: timeline
    ``early_warning_linked`` on both. Returns how many links were made."""
    now = ops.now
    scope = f"class:{class_id}"
    if groups is None:
        groups = watched_groups(ops.config)[1:]
        if ops.config.clusters is not None:
            groups += list(ops.config.clusters.diseases)
    cluster = tx.open_cluster(scope, groups) if groups else None
    if cluster is None:
        return 0
    shared = [g for g in tx.cluster_groups(cluster)]
    grade = class_id.split("-")[0]
    keys = [f"{s}/{g}" for s in (scope, f"grade:{grade}", "school") for g in [ALL, *shared]]
    made = 0
    for key, when, warning in tx.ew_open_signals(keys, day - timedelta(days=LINK_DAYS - 1), day):
        if warning == cluster or not tx.ew_link(warning, cluster, now):
            continue
        tx.add_timeline(warning, now, "early_warning_linked", ACTOR,
                        {"cluster_incident": cluster, "series": key, "date": when.isoformat()})
        tx.add_timeline(cluster, now, "early_warning_linked", ACTOR,
                        {"early_warning_incident": warning, "series": key,
                         "date": when.isoformat()})
        log.info("early_warning_linked", warning=warning, cluster=cluster, series=key)
        made += 1
    return made
