"""What each console page shows, read from the store (each function runs on the daemon's
store thread: ``await in_store(daemon, today, daemon, viewer, lang)``) and the running config.
Times are school-local; levels are numbered from 1; people are shown by name; pupils' personal
data only to whom :meth:`~escalator.web.console.access.Viewer.sees_pupils` allows.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from escalator.engine.engine import assignee
from escalator.labels import CATEGORY, KIND, ROLE, SEVERITY, STATE
from escalator.school import clusters, drills
from escalator.school.ledger import deadline_status, month_bounds, monthly_report, report_tables
from escalator.school.roster import roster_roles, shifts_between
from escalator.store.base import OPEN_STATES, Incident
from escalator.web.console.access import Viewer
from escalator.web.console.words import UI, timeline_text

SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")
CONFIRM_TYPES = ("acknowledged", "step_confirmed", "step_confirmed_late")
NOTIFICATION_STATUS = {
    "zh": {"pending": "待发送", "sending": "发送中", "delivered": "已送达", "failed": "失败",
           "cancelled": "已取消"},
    "en": {},
}
HEALTH_DAYS = 7
"""The settings page counts channel failures over this many days."""


def names_of(config: Any) -> dict[str, str]:
    """Person and unit ids → names (how the console shows an actor or recipient)."""
    out = {u.id: u.name for u in config.units}
    out.update({p.id: p.name for p in config.people})
    return out


def local(dt: datetime | None, config: Any, fmt: str = "%m-%d %H:%M") -> str:
    """An aware time as school-local text; ``""`` for None."""
    return dt.astimezone(config.school.tz).strftime(fmt) if dt else ""


def duration(seconds: float, lang: str) -> str:
    """``1小时20分`` / ``1 h 20 min`` (minutes rounded down; under a minute: ``<1``)."""
    minutes = int(max(seconds, 0) // 60)
    h, m = divmod(minutes, 60)
    if lang == "zh":
        return (f"{h}小时" if h else "") + (f"{m}分" if m or not h else "") if minutes else "不足1分"
    return (f"{h} h " if h else "") + (f"{m} min" if m or not h else "") if minutes else "<1 min"


def incident_card(inc: Incident, timeline: list[Any], config: Any, viewer: Viewer,
                  now: datetime, lang: str) -> dict[str, Any]:
    """What a list shows of one incident: words, the level being told now, time to the legal
    deadline, who confirmed, the assignee; the summary only for those who see pupils' data."""
    names = names_of(config)
    ui = UI[lang]
    steps = inc.policy.get("steps", [])
    level = None
    if 0 <= inc.step_index < len(steps):
        step = steps[inc.step_index]
        level = ui["level"].format(n=inc.step_index + 1) + (f" · {step['name']}"
                                                             if step.get("name") else "")
    deadline = None
    status = deadline_status(inc.deadline_at, inc.deadline_met_at, now)
    if inc.deadline_at is not None:
        if status == "met":
            deadline = ("met", ui["deadline_met"])
        elif now > inc.deadline_at:
            deadline = ("over", ui["deadline_over"])
        else:
            deadline = ("left", f"{ui['deadline_left']} {duration((inc.deadline_at - now).total_seconds(), lang)}")
    confirmed = []
    for t in timeline:
        if t.type in CONFIRM_TYPES and t.actor:
            who = names.get(t.actor, t.actor)
            if who not in confirmed:
                confirmed.append(who)
    owner = assignee(timeline)
    private = not viewer.sees_pupils(config, inc)
    return {
        "id": inc.id, "state": inc.state, "state_word": STATE[lang].get(inc.state, inc.state),
        "severity": inc.severity, "severity_word": SEVERITY[lang].get(inc.severity, inc.severity),
        "category_word": CATEGORY[lang].get(inc.category, inc.category),
        "kind_word": KIND[lang].get(inc.kind, inc.kind), "drill": bool(inc.drill),
        "class_id": inc.class_id, "place": inc.place, "events": inc.event_count,
        "summary": None if private else inc.summary, "opened": local(inc.created_at, config),
        "level": level, "deadline": deadline, "confirmed": confirmed,
        "assignee": names.get(owner, owner) if owner else None,
    }


def _open_sorted(tx: Any) -> list[Incident]:
    found = tx.list_incidents(OPEN_STATES, 500)
    rank = {s: i for i, s in enumerate(SEVERITY_ORDER)}
    return sorted(found, key=lambda i: (rank.get(i.severity, 9), i.created_at, i.id))


def today(daemon: Any, viewer: Viewer, lang: str) -> dict[str, Any]:
    """The Today page: open incidents by severity; today's zero reports; sickness absence per
    class from today's registers (cases counted today); clusters forming (open cluster
    incidents); drills under way."""
    config, now = daemon.config, daemon.clock.now()
    tz = config.school.tz
    day = now.astimezone(tz).date()
    ui = UI[lang]
    with daemon.store.transaction() as tx:
        found = _open_sorted(tx)
        cards = [incident_card(i, tx.timeline(i.id), config, viewer, now, lang) for i in found]
        cluster_ids = {i.id for i in found if i.dedup_key.startswith("cluster/")}
        monitors = []
        for mid, hb in config.heartbeats.items():
            got = tx.heartbeat_day(mid, day)
            if got is not None and got.received_at is not None:
                state = ("ok", f"{ui['received']} {local(got.received_at, config, '%H:%M')}")
            elif got is not None and got.missed_incident_id is not None:
                state = ("missed", f"{ui['missed']} #{got.missed_incident_id}")
            else:
                state = ("wait", ui["not_yet"].format(by=hb.expect_by.strftime("%H:%M")))
            monitors.append({"name": hb.name or mid, "state": state})
        absence = tx.absence_by_class(day)
    real = [c for c in cards if not c["drill"]]
    groups = [(s, SEVERITY[lang].get(s, s), [c for c in real if c["severity"] == s])
              for s in SEVERITY_ORDER]
    forming = [c for c in real if c["id"] in cluster_ids]
    return {"groups": [g for g in groups if g[2]], "open_count": len(real),
            "monitors": monitors, "absence": sorted(absence.items()), "clusters": forming,
            "drills": [c for c in cards if c["drill"]], "now": local(now, config, "%H:%M:%S"),
            "date": day.isoformat()}


def incident(daemon: Any, viewer: Viewer, incident_id: int, lang: str) -> dict[str, Any] | None:
    """The Incident page, or None when there is no such incident: the card, the timeline in
    the console's words (school-local times, levels from 1), cluster members, messages with
    their delivery state, the people one may assign it to."""
    config, now = daemon.config, daemon.clock.now()
    names = names_of(config)
    with daemon.store.transaction() as tx:
        inc = tx.get_incident(incident_id)
        if inc is None:
            return None
        timeline = tx.timeline(inc.id)
        private = not viewer.sees_pupils(config, inc)
        card = incident_card(inc, timeline, config, viewer, now, lang)
        lines = [{"at": local(t.at, config, "%m-%d %H:%M:%S"),
                  "who": names.get(t.actor, t.actor) if t.actor else "",
                  "text": timeline_text(t.type, t.detail, lang, names=names, private=private),
                  "type": t.type} for t in timeline]
        members = clusters.member_rows(tx, inc.id)
        runs: dict[int, int] = {}
        messages = []
        for n in tx.notifications_of(inc.id):
            if n.step_run_id and n.step_run_id not in runs:
                run = tx.get_step_run(n.step_run_id)
                runs[n.step_run_id] = run.step_index + 1 if run else 0
            hidden = n.recipient_kind not in ("person", "unit") and private
            messages.append({
                "level": runs.get(n.step_run_id or 0) or "", "channel": n.channel,
                "recipient": UI[lang]["hidden"] if hidden else n.recipient_name,
                "status": NOTIFICATION_STATUS[lang].get(n.status, n.status),
                "status_code": n.status, "attempts": n.attempts, "error": n.last_error or "",
                "at": local(n.created_at, config, "%m-%d %H:%M:%S")})
    mode = None
    steps = inc.policy.get("steps", [])
    if inc.state == "triggered" and 0 <= inc.step_index < len(steps):
        mode = steps[inc.step_index].get("mode")
    return {"card": card, "timeline": lines, "members": members, "messages": messages,
            "mode": mode, "open": inc.state != "resolved",
            "people": [(p.id, p.name, p.title or "") for p in config.people]}


def ledger_page(daemon: Any, day_from: date, day_to: date, month: str, lang: str
                ) -> dict[str, Any]:
    """The Ledger & reports page: the monthly report's tables, drills opened in the date
    range (links to their reports). Raises ``ValueError`` for a bad month."""
    config, now = daemon.config, daemon.clock.now()
    month_bounds(month)
    report = monthly_report(daemon.store, config, month, now)
    tables = report_tables(report, config)
    tz = config.school.tz
    lo = datetime.combine(day_from, datetime.min.time(), tz)
    hi = datetime.combine(day_to + timedelta(days=1), datetime.min.time(), tz)
    with daemon.store.transaction() as tx:
        drill_rows = [{"id": i.id, "opened": local(i.created_at, config),
                       "category_word": CATEGORY[lang].get(i.category, i.category),
                       "state_word": STATE[lang].get(i.state, i.state)}
                      for i in tx.incidents_occurred(lo, hi) if i.drill]
    return {"tables": tables, "drills": drill_rows}


def drill_page(daemon: Any, incident_id: int, lang: str) -> dict[str, Any]:
    """A drill's report (:func:`escalator.school.drills.drill_report`). Raises
    :class:`~escalator.engine.engine.NotFound` and :class:`~escalator.school.drills.NotADrill`."""
    config = daemon.config
    report = drills.drill_report(daemon.store, incident_id)
    return {"id": incident_id, "header": drills.format_header(report, config, lang),
            "headers": drills.TEXT[lang]["headers"],
            "rows": drills.report_rows(report, config, lang),
            "silent": drills.format_silent(report, lang)}


def roster(daemon: Any, viewer: Viewer, lang: str) -> dict[str, Any]:
    """The Roster page: for each roster-backed role (``duty_officer`` and the rotations' roles;
    docs/rosters.md) who is on duty now and who is next — rotations, ``duty_roster`` and the
    overrides and swaps in the store (:func:`escalator.school.roster.shifts_between`) — and the
    people with titles and roles (contact addresses only for administrators)."""
    config, now = daemon.config, daemon.clock.now()
    today_ = now.astimezone(config.school.tz).date()
    names = names_of(config)

    def role_word(r: str) -> str:
        defined = config.roles.get(r)
        return (defined.name if defined and defined.name else None) or ROLE[lang].get(r, r)

    roles = roster_roles(config)
    with daemon.store.transaction() as tx:
        shifts = shifts_between(tx, config, today_ - timedelta(days=1),
                                today_ + timedelta(days=8), roles)
    duty = []
    for role in roles:
        mine = [s for s in shifts if s.role == role]
        cur = next((s for s in mine if s.start <= now < s.end), None)
        nxt = next((s for s in mine if s.start > now
                    and (cur is None or s.people != cur.people)), None)
        duty.append({"role": role_word(role),
                     "now": [names.get(p, p) for p in cur.people] if cur else [],
                     "next": [names.get(p, p) for p in nxt.people] if nxt else None,
                     "next_at": local(nxt.start, config, "%m-%d %H:%M") if nxt else ""})
    people = [{"name": p.name, "title": p.title or "",
               "roles": "、".join(role_word(r) for r in p.roles),
               "classes": ", ".join(p.classes), "access": UI[lang].get(p.access, p.access),
               "contact": (p.contacts[0].to if p.contacts else "") if viewer.is_admin else None}
              for p in config.people]
    return {"duty": duty, "people": people}


def settings(daemon: Any, lang: str) -> dict[str, Any]:
    """The Settings page (administrators): the last config reload's result, the running
    config's check-config warnings (found when it was loaded), each channel's last delivery and failures over
    :data:`HEALTH_DAYS` days."""
    config, now = daemon.config, daemon.clock.now()
    reload = getattr(daemon, "last_reload", None)
    findings = [{"level": getattr(w, "level", "warning"), "text": str(w)} for w in config.warnings]
    with daemon.store.transaction() as tx:
        health = {h.channel: h for h in tx.channel_health(now - timedelta(days=HEALTH_DAYS))}
    channels = []
    for cid, ch in config.channels.items():
        h = health.get(cid)
        channels.append({"id": cid, "type": ch.type,
                         "last_delivered": local(h.last_delivered_at, config) if h else "",
                         "failures": h.failures if h else 0,
                         "last_failure": local(h.last_failure_at, config) if h else "",
                         "last_error": (h.last_error or "") if h else ""})
    return {"reload": reload and {"at": local(reload[0], config, "%m-%d %H:%M:%S"),
                                  "ok": reload[1], "text": reload[2]},
            "last_error": getattr(daemon, "last_error", None), "findings": findings,
            "channels": channels, "source": str(config.source or "")}
