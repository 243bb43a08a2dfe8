"""Per-disease fixed outbreak thresholds at every scope they are published for — school, grade,
class, dormitory — each with its own window (docs/early-warning.md "Fixed thresholds").

Data with sources: ``early_warning.outbreaks.rules`` (defaults in
:data:`escalator.config.early_warning_defaults.OUTBREAK_RULES`). :func:`arrived` runs in the
transaction that stores each case (from :func:`escalator.school.early_warning.on_case`):

1. **Which events.** ``suspected_case`` or ``absence`` triggers with a pupil, not drills.
2. **Which diseases.** Each rule whose ``diagnoses`` the event's ``diagnosis`` names (as
   ``clusters`` matches names; of nested names only the longer counts: German measles is
   rubella, not measles), and a rule with ``ili`` when the case meets the influenza-like-illness
   definition (cough or sore throat, and a recorded ``labels.temperature`` ≥ 38 ℃ — without a
   recorded temperature, fever). One ``ew_cases`` row per disease (group ``disease:<rule>``).
3. **Count.** For each threshold ``{scope, count, days}``: ≥ ``count`` distinct pupils in some
   window of ``days`` consecutive school-local dates containing the case's date, in the case's
   school / grade / class / dormitory — not counting cases up to the date the last outbreak
   incident of that rule and scope was resolved (reported once). At class and dormitory scope a
   rule whose id is also in ``clusters.diseases`` is left to ``clusters`` (one incident, not two).
4. **Incident.** While an outbreak incident of the rule and scope is open, a new case adds to it
   (``outbreak_case_added``, event count). Otherwise reaching the threshold opens one: kind
   ``incident``, category ``infectious_disease``, ``outbreaks.severity``, walking
   ``outbreaks.policy`` (default ``clusters.policy``, else ``cluster``) with the
   ``outbreaks.deadline`` rule (default ``school_cluster``, 24 h) counted from the case that
   reached it; dedup key ``outbreak/<rule>/<scope>/<first date of the window>``; timeline
   ``outbreak_threshold_reached`` (rule, scope, count, window, source). Its summary names the
   scope, count and disease — never a pupil.
"""

from __future__ import annotations

from datetime import date, timedelta

import structlog

from escalator.config.models import Config, OutbreakRule, OutbreakThreshold
from escalator.engine.rules import EngineOps
from escalator.events import Category, Event, Kind, Symptom
from escalator.school import deadlines
from escalator.school.clusters import mentions
from escalator.school.early_warning.series import pupil_digest, scope_label
from escalator.store.base import EwCase, Tx

log = structlog.get_logger("escalator.school.early_warning")

ACTOR = "escalator"
ILI_TEMPERATURE = 38.0
"""Influenza-like illness: ≥ 38 ℃ with sore throat or cough (《全国流感监测方案》; the Huzhou page
quotes the same definition)."""


def is_ili(ev: Event) -> bool:
    """Whether ``ev`` meets the influenza-like-illness case definition (module docstring)."""
    if not ({Symptom.cough, Symptom.sore_throat} & set(ev.symptoms)):
        return False
    text = ev.labels.get("temperature")
    try:
        return float(text) >= ILI_TEMPERATURE if text else Symptom.fever in ev.symptoms
    except ValueError:
        return Symptom.fever in ev.symptoms


def diseases_of(rules: dict[str, OutbreakRule], ev: Event) -> list[str]:
    """The rule ids the case counts under (module docstring, point 2), in rule order."""
    text = ev.diagnosis or ""
    found: dict[str, str] = {}
    for rid, rule in rules.items():
        names = [n for n in rule.diagnoses if text and mentions(text, n)]
        if names:
            found[rid] = max(names, key=len)
    kept = {rid for rid, name in found.items()
            if not any(name.casefold() != other.casefold() and name.casefold() in other.casefold()
                       for other in found.values())}
    return [rid for rid, rule in rules.items() if rid in kept or (rule.ili and is_ili(ev))]


def _scope(t: OutbreakThreshold, ev: Event) -> str | None:
    if t.scope == "school":
        return "school"
    if t.scope == "grade":
        return f"grade:{ev.grade}" if ev.grade else None
    if t.scope == "class":
        return f"class:{ev.class_id}" if ev.class_id else None
    return f"dormitory:{ev.dormitory}" if ev.dormitory else None


def policy_id(config: Config) -> str:
    """The policy an outbreak incident walks: ``early_warning.outbreaks.policy``, else
    ``clusters.policy``, else ``cluster``."""
    ew = config.early_warning
    if ew is not None and ew.outbreaks.policy:
        return ew.outbreaks.policy
    return config.clusters.policy if config.clusters is not None else "cluster"


def arrived(ops: EngineOps, tx: Tx, ev: Event, event_id: str, day: date) -> list[int]:
    """Count the case for the fixed thresholds and open or add to outbreak incidents (module
    docstring). ``ev`` is normalised; ``day`` its school-local date. Returns the incidents
    opened."""
    cfg = ops.config.early_warning
    if (cfg is None or not cfg.outbreaks.enabled or ev.drill or ev.subject is None
            or ev.kind not in (Kind.suspected_case, Kind.absence)):
        return []
    rules = cfg.outbreaks.rules
    found = diseases_of(rules, ev)
    if not found:
        return []
    pupil = pupil_digest(ev.subject.id)
    left_to_clusters = set(ops.config.clusters.diseases) if ops.config.clusters else set()
    opened: list[int] = []
    for rid in found:
        tx.ew_add_case(EwCase(event_id, f"disease:{rid}", day, ev.class_id, ev.grade,
                              ev.dormitory, pupil))
        for t in rules[rid].thresholds:
            scope = _scope(t, ev)
            if scope is None or (t.scope in ("class", "dormitory") and rid in left_to_clusters):
                continue
            if (open_id := tx.ew_open_outbreak(rid, scope)) is not None:
                _add(ops, tx, open_id, rid, scope, event_id, day)
                continue
            window = _reached(ops.config, tx, rid, scope, t, day)
            if window is not None:
                got = _open(ops, tx, ev, rid, rules[rid], t, scope, window)
                if got is not None:
                    opened.append(got)
    return opened


def _reached(config: Config, tx: Tx, rid: str, scope: str, t: OutbreakThreshold,
             day: date) -> tuple[date, date, int] | None:
    since = tx.ew_outbreak_since(rid, scope)
    floor = (since.astimezone(config.school.tz).date() + timedelta(days=1)
             if since is not None else None)
    for offset in range(t.days):
        first = day - timedelta(days=t.days - 1 - offset)
        last = first + timedelta(days=t.days - 1)
        start = max(first, floor) if floor else first
        if start > day:
            continue
        n = tx.ew_window_count(f"disease:{rid}", scope, start, last)
        if n >= t.count:
            return start, last, n
    return None


def _add(ops: EngineOps, tx: Tx, incident_id: int, rid: str, scope: str, event_id: str,
         day: date) -> None:
    now = ops.now
    inc = tx.get_incident(incident_id)
    if inc is None:
        return
    tx.update_incident(incident_id, event_count=inc.event_count + 1, updated_at=now)
    tx.add_timeline(incident_id, now, "outbreak_case_added", ACTOR,
                    {"rule": rid, "scope": scope, "event_id": event_id, "date": day.isoformat(),
                     "count": inc.event_count + 1})


def summary(config: Config, rule: OutbreakRule, rid: str, t: OutbreakThreshold, scope: str,
            n: int) -> str:
    """The outbreak incident's summary (no pupil): scope, count, disease, the standard."""
    lang = config.school.language
    where = scope_label(scope, lang)
    if lang == "zh":
        name = rule.name or rid
        return (f"{where} {t.days}天内{n}名学生为{name}病例（达到聚集性疫情标准：{t.days}天内"
                f"≥{t.count}例）")
    name = rule.name_en or rule.name or rid
    return (f"{where}: {n} pupils with {name} within {t.days} days (outbreak standard: "
            f"≥ {t.count} in {t.days} days)")


def _open(ops: EngineOps, tx: Tx, ev: Event, rid: str, rule: OutbreakRule,
          t: OutbreakThreshold, scope: str, window: tuple[date, date, int]) -> int | None:
    cfg = ops.config.early_warning
    assert cfg is not None
    now = ops.now
    pid = policy_id(ops.config)
    if pid not in ops.config.policies:  # refused by check-config; never fail the intake
        log.error("outbreak_policy_unknown", policy=pid, rule=rid, scope=scope)
        return None
    first, last, n = window
    kind = scope.partition(":")[0]
    value = scope.partition(":")[2]
    event = Event(
        kind=Kind.incident, category=Category.infectious_disease, severity=cfg.outbreaks.severity,
        summary=summary(ops.config, rule, rid, t, scope, n),
        details=rule.source[:4000] if rule.source else None,
        class_id=value if kind == "class" else None,
        grade=(value if kind == "grade" else value.split("-")[0] if kind == "class" else None),
        dormitory=value if kind == "dormitory" else None,
        occurred_at=ev.occurred_at, source=ACTOR,
        dedup_key=f"outbreak/{rid}/{scope}/{first.isoformat()}",
        labels={"outbreak": rid, "scope": scope},
    )
    result = ops.open_incident(event, policy=pid, source=ACTOR)
    if result.incident_id is None:
        return None
    tx.ew_add_outbreak(result.incident_id, rid, scope, first, now)
    tx.update_incident(result.incident_id, event_count=n)
    tx.add_timeline(result.incident_id, now, "outbreak_threshold_reached", ACTOR,
                    {"rule": rid, "scope": scope, "count": n, "threshold": t.count,
                     "days": t.days, "first_date": first.isoformat(),
                     "last_date": min(last, now.astimezone(ops.config.school.tz).date()).isoformat(),
                     **({"source": rule.source} if rule.source else {})})
    assert ev.occurred_at is not None
    deadlines.apply(ops, tx, result.incident_id, cfg.outbreaks.deadline, ev.occurred_at)
    log.warning("outbreak_threshold_reached", incident_id=result.incident_id, rule=rid,
                scope=scope, count=n)
    return result.incident_id
