"""Retention: purge pupils' personal data after ``retention.personal_data_days``.

PIPL Art. 19: personal information is kept for the shortest time its purpose needs; Art. 47:
it is deleted when that time has passed. The ledger's figures — counts, times, categories,
severities, deadlines met or missed, who of the staff acted — are not personal data of a pupil
and stay, so :func:`escalator.school.ledger.monthly_report` gives the same figures after a purge.

What is purged (docs/privacy.md, "Retention"), once it is older than the retention period —
an event without an incident by the time it was received, everything of an incident by the
time it was **resolved** (an open incident keeps its data: the school is still acting on it):

- ``events.body``: ``subject`` (id, name, guardian phone, sex, age), ``details`` (free text that
  may name a pupil) and ``reported_by`` are removed;
- a subject id in a dedup key (``…/subject:<id>/<date>``, in ``events``, ``incidents`` and
  timeline details) becomes ``subject:-``; timeline detail keys ``subject``, ``subject_id``,
  ``subject_ids``, ``subjects`` are removed;
- ``events.row_key`` (a register's type/date/pupil id) becomes a one-way digest
  (:func:`escalator.store.sqlite.row_key_digest`), so a re-dropped register still adds nothing;
- notifications to a guardian: ``recipient_name`` and ``address`` become :data:`PURGED`, and so
  does the ``detail`` of their delivery attempts;
- every delivery attempt's ``body`` (the text sent, which holds the summary) becomes
  :data:`PURGED`;
- pupil ids in the cluster tables (``case_facts``, ``cluster_members``, when present) become
  ``purged-<row>``.

:func:`purge` is idempotent (a purged row no longer matches) and logs counts only. The daemon
runs it once per school-local day from its engine loop (:class:`DailyPurge`, on the injected
clock, like the heartbeat check); ``escalator purge [--dry-run]`` runs it on demand.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

import structlog

from escalator.config.models import Config
from escalator.school.ledger import GUARDIAN, PURGED
from escalator.store.base import Store
from escalator.store.sqlite import row_key_digest, to_db

log = structlog.get_logger("escalator.school.retention")

PERSONAL_BODY_FIELDS = ("subject", "details", "reported_by")
"""Keys removed from a stored event body."""
PERSONAL_DETAIL_KEYS = frozenset({"subject", "subject_id", "subject_ids", "subjects"})
"""Keys removed from the timeline details of an old incident."""
_SUBJECT_KEY = re.compile(r"subject:(?!-/)[^/]*(?:/[^/]*)*?(?=/\d{4}-\d{2}-\d{2}$)")
_ROW_KEY_DIGESTED = "sha256:"


def scrub_dedup_key(key: str) -> str:
    """``…/subject:<id>/<date>`` → ``…/subject:-/<date>``; other keys unchanged."""
    return _SUBJECT_KEY.sub("subject:-", key)


@dataclass
class PurgeCounts:
    """How many rows a purge changed (or would change, with ``dry_run``)."""

    events: int = 0
    incidents: int = 0
    timeline: int = 0
    notifications: int = 0
    deliveries: int = 0
    case_facts: int = 0
    cluster_members: int = 0
    held_open: int = 0
    """Incidents opened before the cutoff and still open: their data is kept until resolved."""

    @property
    def changed(self) -> int:
        return (self.events + self.incidents + self.timeline + self.notifications
                + self.deliveries + self.case_facts + self.cluster_members)


def cutoff(config: Config, now: datetime) -> datetime:
    """Data older than this (aware UTC) is purged."""
    return now - timedelta(days=config.retention.personal_data_days)


def purge(store: Store, config: Config, now: datetime, *, dry_run: bool = False) -> PurgeCounts:
    """Purge personal data older than the retention period, in one transaction. With
    ``dry_run`` nothing is written (the transaction rolls back) and the counts say what
    would change. Logs ``personal_data_purged`` with the counts (never a value)."""
    limit = to_db(cutoff(config, now))
    counts = PurgeCounts()

    class _DryRun(Exception):
        pass

    try:
        with store.transaction() as tx:
            c = tx.c  # type: ignore[attr-defined]  # the SQLite store's connection
            c.execute("CREATE TEMP TABLE IF NOT EXISTS purge_old (id INTEGER PRIMARY KEY)")
            c.execute("DELETE FROM purge_old")
            c.execute("INSERT INTO purge_old SELECT id FROM incidents "
                      "WHERE state = 'resolved' AND resolved_at < ?", (limit,))
            counts.held_open = c.execute(
                "SELECT COUNT(*) FROM incidents WHERE state != 'resolved' AND created_at < ?",
                (limit,)).fetchone()[0]
            _events(c, limit, counts)
            for r in c.execute("SELECT id, dedup_key FROM incidents WHERE id IN "
                               "(SELECT id FROM purge_old) AND dedup_key LIKE '%subject:%'"
                               ).fetchall():
                new = scrub_dedup_key(r["dedup_key"])
                if new != r["dedup_key"]:
                    c.execute("UPDATE incidents SET dedup_key = ? WHERE id = ?", (new, r["id"]))
                    counts.incidents += 1
            for r in c.execute("SELECT id, detail FROM timeline WHERE incident_id IN "
                               "(SELECT id FROM purge_old) AND detail LIKE '%subject%'"
                               ).fetchall():
                detail = json.loads(r["detail"])
                new = {k: scrub_dedup_key(v) if isinstance(v, str) else v
                       for k, v in detail.items() if k not in PERSONAL_DETAIL_KEYS}
                if new != detail:
                    c.execute("UPDATE timeline SET detail = ? WHERE id = ?",
                              (json.dumps(new, ensure_ascii=False, sort_keys=True), r["id"]))
                    counts.timeline += 1
            counts.notifications = c.execute(
                "UPDATE notifications SET recipient_name = ?, address = ? "
                "WHERE incident_id IN (SELECT id FROM purge_old) AND recipient_kind = ? "
                "AND (recipient_name != ? OR address != ?)",
                (PURGED, PURGED, GUARDIAN, PURGED, PURGED)).rowcount
            counts.deliveries = c.execute(
                "UPDATE deliveries SET body = ?, detail = CASE WHEN notification_id IN "
                " (SELECT id FROM notifications WHERE recipient_kind = ?) THEN ? ELSE detail END "
                "WHERE notification_id IN (SELECT n.id FROM notifications n "
                " WHERE n.incident_id IN (SELECT id FROM purge_old)) AND body NOT IN (?, '')",
                (PURGED, GUARDIAN, PURGED, PURGED)).rowcount
            _clusters(c, limit, counts)
            c.execute("DELETE FROM purge_old")
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    log.info("personal_data_purged" if not dry_run else "personal_data_purge_dry_run",
             retention_days=config.retention.personal_data_days, **asdict(counts))
    if counts.held_open:
        log.warning("personal_data_held_open", incidents=counts.held_open,
                    retention_days=config.retention.personal_data_days)
    return counts


def _events(c: Any, limit: str, counts: PurgeCounts) -> None:
    """Strip personal fields from the bodies, dedup keys and row keys of old events."""
    has = " OR ".join(f"json_type(body, '$.{k}') IS NOT NULL" for k in PERSONAL_BODY_FIELDS)
    rows = c.execute(
        "SELECT id, body, dedup_key, row_key FROM events WHERE received_at < ? "
        "AND (incident_id IS NULL OR incident_id IN (SELECT id FROM purge_old)) "
        f"AND ({has} OR (dedup_key LIKE '%subject:%' AND dedup_key NOT LIKE '%subject:-/%') "
        f"OR (row_key IS NOT NULL AND row_key NOT LIKE '{_ROW_KEY_DIGESTED}%'))",
        (limit,)).fetchall()
    for r in rows:
        body = json.loads(r["body"])
        for k in PERSONAL_BODY_FIELDS:
            body.pop(k, None)
        key = scrub_dedup_key(r["dedup_key"])
        row_key = r["row_key"]
        if row_key is not None and not row_key.startswith(_ROW_KEY_DIGESTED):
            row_key = row_key_digest(row_key)
        new_body = json.dumps(body, ensure_ascii=False, sort_keys=True)
        if (new_body, key, row_key) != (r["body"], r["dedup_key"], r["row_key"]):
            c.execute("UPDATE events SET body = ?, dedup_key = ?, row_key = ? WHERE id = ?",
                      (new_body, key, row_key, r["id"]))
            counts.events += 1


def _clusters(c: Any, limit: str, counts: PurgeCounts) -> None:
    """Pupil ids in the cluster tables (when the store has them): each old row's id becomes
    ``purged-<row>``, distinct per row, so a count of distinct pupils stays the same."""
    tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "case_facts" in tables:
        counts.case_facts = c.execute(
            "UPDATE case_facts SET subject_id = 'purged-' || rowid "
            "WHERE subject_id NOT LIKE 'purged-%' AND event_id IN (SELECT id FROM events "
            " WHERE received_at < ? AND (incident_id IS NULL "
            "  OR incident_id IN (SELECT id FROM purge_old)))", (limit,)).rowcount
    if "cluster_members" in tables:
        counts.cluster_members = c.execute(
            "UPDATE cluster_members SET subject_id = 'purged-' || rowid "
            "WHERE subject_id NOT LIKE 'purged-%' AND incident_id IN (SELECT id FROM purge_old)"
        ).rowcount


class DailyPurge:
    """Runs :func:`purge` at the first pass of the engine loop on each school-local date
    (after a start, then once a day), on the engine's clock and its current config. A failed
    purge is logged and tried again at the next date; it never stops the loop."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.last_day: date | None = None

    def run_if_due(self) -> PurgeCounts | None:
        config: Config = self.engine.config
        now = self.engine.clock.now()
        today = now.astimezone(config.school.tz).date()
        if today == self.last_day:
            return None
        self.last_day = today
        try:
            return purge(self.engine.store, config, now)
        except Exception:
            log.exception("personal_data_purge_failed")
            return None
