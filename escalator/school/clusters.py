"""Sickness absence and symptom clusters (聚集性疫情), and notifiable diagnoses
(docs/school-rules.md "Symptom clusters").

Source of the rule: 《学校和托幼机构传染病疫情报告工作规范（试行）》 (卫生部、教育部, 2006): in one class
or dormitory, ≥ 3 pupils with similar symptoms in one day, or ≥ 5 within three consecutive
days, is reported to the district CDC and the education bureau within 24 h. Thresholds, syndrome
groups, per-disease rules and the notifiable list are config data (``clusters:``,
:class:`~escalator.config.models.ClustersConfig`; defaults with their sources in
:mod:`escalator.config.school_defaults`).

:func:`arrived` runs inside the transaction that stores each routed triggering event
(:class:`ClusterRule` ``on_event``), after the event's own incident was opened or joined (that
case incident is unchanged):

1. **Notifiable diagnosis.** A ``diagnosis`` naming a disease of
   ``clusters.notifiable.diagnoses`` (Chinese names as substrings, English names and
   abbreviations on word boundaries, case-insensitive: :func:`mentions`) gives the event's
   incident the deadline rule ``clusters.notifiable.deadline`` (default: district CDC at once;
   :mod:`escalator.school.deadlines`).
2. **Which events are cases.** ``kind`` ``suspected_case`` or ``absence``, with a ``subject.id``
   and a ``class_id`` and/or ``dormitory``, and either category ``infectious_disease`` or (an
   absence) symptoms. Drill events count only with drill events.
3. **Groups.** A case belongs to EVERY group it touches: each disease of ``clusters.diseases``
   its diagnosis names (e.g. hand-foot-mouth disease, with the disease's thresholds), and each
   syndrome group listing one of its symptoms (with ``clusters.thresholds``) — a pupil with
   fever and cough counts under "respiratory" and under "fever". No group: not counted.
4. **Facts.** One ``case_facts`` row per scope (``class:<id>``, ``dorm:<name>``) and group:
   subject, group, school-local date of ``occurred_at``, event id. Counting is a query over
   these rows; one pupil counts once per group.
5. **Join or open.** For each scope: the case joins every open cluster of that scope sharing a
   group with it (the pupil is listed once; ``cluster_member_joined``); the groups of those
   clusters are covered. Of the case's other groups, the first (diseases first, then syndrome
   groups in config order) for which some threshold holds — ≥ ``count``
   distinct pupils in some window of ``days`` consecutive local days containing the case's day,
   not counting cases a cluster of the scope and group already lists (reported) — opens a
   cluster incident (at most one per event): dedup key
   ``cluster/<group>/<scope>/<first local day>`` (a drill's: ``drill/cluster/<group>/…``),
   kind ``incident``, category
   ``infectious_disease``, ``clusters.severity``, walking ``clusters.policy``, listing the
   window's pupils (``cluster_opened``: ``members`` with event ids and dates, and the pupil ids
   under ``subjects``), with the ``clusters.deadline`` rule counted from the first member's
   ``occurred_at``. The cluster's groups (``cluster_groups``; ``groups`` in ``cluster_opened``)
   are the union of the groups of its founding members' cases, the opening group first: three
   pupils with fever and cough open a "respiratory" cluster that a later case of fever alone
   joins. Its summary names the class or dormitory, the count and the symptoms (or the
   disease of the opening group), never a pupil; its ``event_count`` is its member count. A
   resolved cluster lists no one new; new cases that meet a threshold again open a new one.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

import structlog

from escalator.config.models import ClustersConfig, Config, Threshold
from escalator.engine.rules import EngineOps, Rule, StoredEvent
from escalator.events import Action, Category, Event, Kind
from escalator.labels import SYMPTOM
from escalator.school import deadlines
from escalator.store.base import CaseFact, Tx

log = structlog.get_logger("escalator.school.clusters")

ACTOR = "escalator"
CHINESE_NUMBERS = "一二三四五六七八九十"


def mentions(text: str, name: str) -> bool:
    """Whether ``text`` (a diagnosis) names ``name``, case-insensitively: as a substring for a
    name with non-ASCII characters (Chinese: 手足口病 in 手足口病（临床诊断）), on word boundaries
    for an ASCII name (HFMD in "HFMD (clinical)" or 疑似HFMD, but not flu in influenza, SARS in
    SARS-CoV-2 only together with the longer name, typhoid not in paratyphoid)."""
    needle, text = name.strip().casefold(), text.casefold()
    if not needle:
        return False
    if not needle.isascii():
        return needle in text
    return re.search(rf"(?<![0-9a-z]){re.escape(needle)}(?![0-9a-z])", text) is not None


def notifiable(cfg: ClustersConfig, diagnosis: str | None) -> str | None:
    """The notifiable disease named in ``diagnosis`` (the configured name; the longest one when
    several match: 副伤寒 over 伤寒, German measles over measles), or None."""
    if not diagnosis:  # most events have none: no pattern is tried
        return None
    found = [d for d in cfg.notifiable.diagnoses if mentions(diagnosis, d)]
    return max(found, key=lambda d: len(d.strip())) if found else None


def groups_of(cfg: ClustersConfig, ev: Event) -> list[tuple[str, list[Threshold]]]:
    """Every group of the case with its thresholds: the diseases its diagnosis names (config
    order), then every syndrome group listing one of its symptoms (config order)."""
    text = ev.diagnosis or ""
    out = [(did, disease.thresholds) for did, disease in cfg.diseases.items()
           if text and any(mentions(text, d) for d in disease.diagnoses)]
    return out + [(gid, cfg.thresholds) for gid, syndrome in cfg.syndromes.items()
                  if any(s in syndrome.symptoms for s in ev.symptoms)]


def is_case(ev: Event) -> bool:
    """Whether ``ev`` (normalised) counts for clusters (module docstring, point 2)."""
    return (ev.kind in (Kind.suspected_case, Kind.absence) and ev.subject is not None
            and bool(ev.class_id or ev.dormitory)
            and (ev.category == Category.infectious_disease
                 or (ev.kind == Kind.absence and bool(ev.symptoms))))


def scopes(ev: Event) -> list[str]:
    """``class:<id>`` and/or ``dorm:<name>``, with ``drill/`` in front for a drill."""
    prefix = "drill/" if ev.drill else ""
    out = [f"{prefix}class:{ev.class_id}"] if ev.class_id else []
    return out + ([f"{prefix}dorm:{ev.dormitory}"] if ev.dormitory else [])


def threshold_met(facts: list[CaseFact], thresholds: list[Threshold], day: date
                  ) -> list[CaseFact] | None:
    """The first fact of each pupil in the first window (of any threshold) containing ``day``
    that holds ≥ ``count`` distinct pupils within ``days`` consecutive days; else None."""
    for t in thresholds:
        for offset in range(t.days):
            first = day - timedelta(days=t.days - 1 - offset)
            last = first + timedelta(days=t.days - 1)
            members: dict[str, CaseFact] = {}
            for f in facts:
                if first <= f.local_date <= last:
                    members.setdefault(f.subject_id, f)
            if len(members) >= t.count:
                return list(members.values())
    return None


def arrived(ops: EngineOps, tx: Tx, ev: Event, src: str, event_id: str,
            incident_id: int | None) -> None:
    """Apply the notifiable rule and count the case (module docstring). ``ev`` is normalised."""
    cfg = ops.config.clusters
    if cfg is None:
        return
    now = ops.now
    if incident_id is not None and (disease := notifiable(cfg, ev.diagnosis)) is not None:
        tx.add_timeline(incident_id, now, "notifiable_disease", src,
                        {"diagnosis": disease, "event_id": event_id})
        deadlines.apply(ops, tx, incident_id, cfg.notifiable.deadline, now)
    if not is_case(ev) or not (groups := groups_of(cfg, ev)):
        return
    assert ev.occurred_at is not None and ev.subject is not None
    gids = [gid for gid, _ in groups]
    day = ev.occurred_at.astimezone(ops.config.school.tz).date()
    opened = False
    for scope in scopes(ev):
        facts = {gid: CaseFact(event_id, scope, gid, ev.subject.id, day, ev.occurred_at)
                 for gid in gids}
        for fact in facts.values():
            tx.add_case_fact(fact)
        covered: set[str] = set()  # the groups of the open clusters this case joined
        while (cluster := tx.open_cluster(scope, [g for g in gids if g not in covered])):
            shared = tx.cluster_groups(cluster)
            _join(ops, tx, cluster, facts[next(g for g in gids if g in shared)])
            covered.update(shared)
        if opened:
            continue
        for gid, thresholds in groups:
            if gid in covered:
                continue
            span = max(t.days for t in thresholds)
            found = tx.case_facts(scope, gid, day - timedelta(days=span - 1),
                                  day + timedelta(days=span - 1))
            members = threshold_met(found, thresholds, day)
            if members is not None:
                _open(ops, tx, ev, gid, scope, members)
                opened = True
                break


def _label(scope: str, lang: str) -> str:
    """``class:3-2`` → 三年级2班 (zh) / class 3-2 (en); ``dorm:B301`` → 宿舍B301 / dormitory B301."""
    kind, _, name = scope.removeprefix("drill/").partition(":")
    if kind == "class":
        grade, _, number = name.partition("-")
        if lang != "zh":
            return f"class {name}"
        g = int(grade)
        word = (CHINESE_NUMBERS[g - 1] if 1 <= g <= 10
                else "十" + CHINESE_NUMBERS[g - 11] if 11 <= g <= 19 else grade)
        return f"{word}年级{number}班"
    return f"宿舍{name}" if lang == "zh" else f"dormitory {name}"


def summary(config: Config, tx: Tx, gid: str, scope: str, members: list[CaseFact]) -> str:
    """The cluster's summary: place, count and symptoms (or disease) — never a pupil."""
    cfg = config.clusters
    assert cfg is not None
    lang = config.school.language
    where, n = _label(scope, lang), len(members)
    if gid in cfg.diseases:
        disease = cfg.diseases[gid]
        name = disease.name or gid
        diagnosed = sum(
            any(mentions((tx.get_event(m.event_id) or {}).get("body", {}).get("diagnosis") or "", d)
                for d in disease.diagnoses) for m in members)
        if diagnosed == n:
            return (f"{where} {n}名学生诊断为{name}（聚集性疫情）" if lang == "zh"
                    else f"{where}: {n} pupils diagnosed with {name} (school cluster)")
        # later cases with the founders' symptoms but no diagnosis (yet) join it too
        return (f"{where} {n}名学生：{diagnosed}名诊断为{name}，其余有相似症状（聚集性疫情）"
                if lang == "zh" else
                f"{where}: {n} pupils, {diagnosed} diagnosed with {name}, the others with "
                "similar symptoms (school cluster)")
    seen: list[str] = []
    for m in members:
        body = (tx.get_event(m.event_id) or {}).get("body", {})
        for s in body.get("symptoms", []):
            if s not in seen:
                seen.append(s)
    words = [SYMPTOM[lang].get(s, s.replace("_", " ")) for s in seen[:3]]
    if lang == "zh":
        return f"{where} {n}名学生出现{'、'.join(words)}等相似症状（聚集性疫情）"
    return f"{where}: {n} pupils with similar symptoms ({', '.join(words)}) (school cluster)"


def _members_detail(members: list[CaseFact]) -> list[dict[str, str]]:
    """Timeline detail of members: no pupil id (those go under the top-level ``subjects`` /
    ``subject`` keys, which the retention purge removes)."""
    return [{"event_id": m.event_id, "date": m.local_date.isoformat(),
             "occurred_at": m.occurred_at.isoformat()} for m in members]


def _open(ops: EngineOps, tx: Tx, ev: Event, gid: str, scope: str, members: list[CaseFact]
          ) -> int | None:
    cfg = ops.config.clusters
    assert cfg is not None
    now = ops.now
    if cfg.policy not in ops.config.policies:  # refused by check-config; never fail the intake
        log.error("cluster_policy_unknown", policy=cfg.policy, scope=scope, group=gid)
        return None
    first = min(members, key=lambda m: m.occurred_at)
    first_day = min(m.local_date for m in members)
    kind, _, name = scope.removeprefix("drill/").partition(":")
    symptoms = []
    for m in members:
        for s in (tx.get_event(m.event_id) or {}).get("body", {}).get("symptoms", []):
            if s not in symptoms:
                symptoms.append(s)
    event = Event(
        kind=Kind.incident, category=Category.infectious_disease, severity=cfg.severity,
        summary=summary(ops.config, tx, gid, scope, members),
        class_id=name if kind == "class" else None, grade=ev.grade if kind == "class" else None,
        dormitory=name if kind == "dorm" else None, symptoms=symptoms,
        occurred_at=first.occurred_at, source=ACTOR,
        # a drill's key gets ``drill/`` in front (Event.derived_dedup_key): not twice
        dedup_key=f"cluster/{gid}/{scope.removeprefix('drill/')}/{first_day.isoformat()}",
        drill=ev.drill,
        labels={"cluster": gid, "scope": scope},
    )
    result = ops.open_incident(event, policy=cfg.policy, source=ACTOR)
    if result.incident_id is None:
        return None
    for m in members:
        tx.add_cluster_member(result.incident_id, m, now)
    found = set(tx.fact_groups(scope, [m.event_id for m in members]))
    groups = [gid] + [g for g in (*cfg.diseases, *cfg.syndromes) if g in found and g != gid]
    tx.add_cluster_groups(result.incident_id, scope, groups)
    # a cluster's event count is its member count (the messages' 相关事件数), kept current
    tx.update_incident(result.incident_id, event_count=len(members))
    tx.add_timeline(result.incident_id, now, "cluster_opened", ACTOR,
                    {"group": gid, "groups": groups, "scope": scope, "count": len(members),
                     "members": _members_detail(members),
                     "subjects": [m.subject_id for m in members]})
    deadlines.apply(ops, tx, result.incident_id, cfg.deadline, first.occurred_at)
    log.warning("cluster_opened", incident_id=result.incident_id, group=gid, scope=scope,
                count=len(members))
    return result.incident_id


def _join(ops: EngineOps, tx: Tx, cluster: int, fact: CaseFact) -> None:
    now = ops.now
    if not tx.add_cluster_member(cluster, fact, now):
        return  # this pupil is listed already: one pupil counts once
    members = tx.cluster_members(cluster)
    inc = tx.get_incident(cluster)
    assert inc is not None
    gid = tx.cluster_groups(cluster)[0]  # the group that opened it
    tx.update_incident(cluster, summary=summary(ops.config, tx, gid, fact.scope, members),
                       event_count=len(members), updated_at=now)
    tx.add_timeline(cluster, now, "cluster_member_joined", ACTOR,
                    {**_members_detail([fact])[0], "group": fact.syndrome,
                     "subject": fact.subject_id, "count": len(members)})
    log.info("cluster_member_joined", incident_id=cluster, count=len(members))


def member_rows(tx: Tx, incident_id: int) -> list[dict[str, object]]:
    """The member cases of a cluster incident, first case first (empty for any other incident):
    ``event_id``, ``incident_id`` (the case's own incident, or None), ``date`` (school-local),
    ``occurred_at`` (UTC). No pupil id: the API and CLI show this list to administrators, and the
    pupil stays in the stored event."""
    out: list[dict[str, object]] = []
    for m in tx.cluster_members(incident_id):
        ev = tx.get_event(m.event_id) or {}
        out.append({"event_id": m.event_id, "incident_id": ev.get("incident_id"),
                    "date": m.local_date.isoformat(), "occurred_at": m.occurred_at})
    return out


class ClusterRule(Rule):
    """Notifiable diagnoses and symptom clusters as a rule: every routed trigger event
    (not ledger-only) is checked and counted (:func:`arrived`)."""

    name = "clusters"

    def on_event(self, ops: EngineOps, tx: Tx, event: StoredEvent) -> None:
        if event.routed and event.event.action == Action.trigger and event.status != "ledger":
            arrived(ops, tx, event.event, event.source, event.id, event.incident_id)
