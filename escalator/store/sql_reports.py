"""SQL of both backends: the ledger and report reads and the purge of personal data.

The queries of :class:`~escalator.store.base.ReportReads` and
:class:`~escalator.store.base.RetentionTx`, mixed into
:class:`~escalator.store.sql_core.SQLTx`. What to show and what counts as personal data is
decided in :mod:`escalator.school.ledger` and :mod:`escalator.school.retention`; here are only
the rows.
"""

from __future__ import annotations

import json
from datetime import date, datetime

from escalator.store.base import (
    Delivery,
    DeliveryRow,
    HeartbeatDay,
    Incident,
    Notification,
    NotificationRow,
    PurgeCounts,
    PurgeRules,
    TimelineEntry,
)
from escalator.store.sql_dialect import Connection, Dialect
from escalator.store.sql_rows import ROW_KEY_DIGESTED, from_db, row_key_digest, row_to, to_db


def _marks(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join("?" * len(values))


class SQLReports:
    """Ledger reads and the purge on the connection ``c`` of a transaction."""

    c: Connection
    d: Dialect

    # ------------------------------------------------------------------ ledger and report reads

    def incidents_occurred(self, start: datetime, end: datetime) -> list[Incident]:
        # the time of the incident's first event (occurred_at, ISO text in its body), else
        # when it was opened; the dialect's instant() compares the two text forms as instants
        d = self.d
        occurred, path = d.json_text("e.body", "occurred_at")
        when = f"COALESCE({d.instant(occurred)}, {d.instant('i.created_at')})"
        rows = self.c.execute(
            f"SELECT i.* FROM (SELECT i.*, {when} AS occurred_when FROM incidents i"
            " LEFT JOIN events e ON e.id = i.first_event_id) AS i"
            f" WHERE i.occurred_when >= {d.instant('?')} AND i.occurred_when < {d.instant('?')}"
            " ORDER BY i.occurred_when, i.id",
            (*path, to_db(start), to_db(end)))
        return [row_to(Incident, r) for r in rows]

    # ------------------------------------------------------------------ the zero-report check

    def cases_between(self, start: datetime, end: datetime) -> int:
        d = self.d
        subject, a1 = d.json_text("body", "subject", "id")
        drill, a2 = d.json_text("body", "drill")
        reason, a3 = d.json_text("body", "labels", "reason")
        occurred, a4 = d.json_text("body", "occurred_at")
        rows = self.c.execute(
            f"SELECT COUNT(DISTINCT COALESCE({subject}, id)) FROM events"
            " WHERE kind IN ('suspected_case', 'absence') AND category = 'infectious_disease'"
            "   AND action = 'trigger' AND outcome != 'ledger'"
            f"   AND COALESCE({drill}, '0') IN ('0', 'false')"
            f"   AND COALESCE({reason}, '') != 'personal'"
            f"   AND {d.instant(occurred)} >= {d.instant('?')}"
            f"   AND {d.instant(occurred)} < {d.instant('?')}",
            (*a1, *a2, *a3, *a4, to_db(start), *a4, to_db(end)))
        return int(rows.fetchone()[0])

    def open_clusters(self) -> list[int]:
        rows = self.c.execute(
            "SELECT DISTINCT g.incident_id FROM cluster_groups g JOIN incidents i"
            " ON i.id = g.incident_id WHERE i.state != 'resolved' AND i.drill = 0"
            " ORDER BY g.incident_id")
        return [int(r[0]) for r in rows]

    def first_timeline_entry(self, incident_id: int, types: tuple[str, ...]) -> TimelineEntry | None:
        row = self.c.execute(
            f"SELECT * FROM timeline WHERE incident_id = ? AND type IN ({_marks(types)})"
            " ORDER BY at, id LIMIT 1", (incident_id, *types)).fetchone()
        return None if row is None else row_to(TimelineEntry, row)

    def timeline_between(self, start: datetime, end: datetime,
                         types: tuple[str, ...]) -> list[TimelineEntry]:
        rows = self.c.execute(
            f"SELECT * FROM timeline WHERE at >= ? AND at < ? AND type IN ({_marks(types)})"
            " ORDER BY at, id", (to_db(start), to_db(end), *types))
        return [row_to(TimelineEntry, r) for r in rows]

    def notifications_created(self, start: datetime, end: datetime) -> list[NotificationRow]:
        rows = self.c.execute(
            "SELECT n.*, i.category AS inc_category, s.step_index, s.mode FROM notifications n"
            " JOIN incidents i ON i.id = n.incident_id"
            " LEFT JOIN step_runs s ON s.id = n.step_run_id"
            " WHERE n.created_at >= ? AND n.created_at < ? ORDER BY n.created_at, n.id",
            (to_db(start), to_db(end)))
        return [NotificationRow(row_to(Notification, r), r["inc_category"], r["step_index"],
                                r["mode"]) for r in rows]

    def deliveries_between(self, start: datetime, end: datetime) -> list[DeliveryRow]:
        rows = self.c.execute(
            "SELECT d.id AS d_id, d.at AS d_at, d.outcome AS d_outcome, d.detail AS d_detail,"
            " d.body AS d_body, n.* FROM deliveries d JOIN notifications n"
            " ON n.id = d.notification_id WHERE d.at >= ? AND d.at < ? ORDER BY d.at, d.id",
            (to_db(start), to_db(end)))
        out = []
        for r in rows:
            n = row_to(Notification, r)
            d = Delivery(r["d_id"], n.id, from_db(r["d_at"]), r["d_outcome"],  # type: ignore[arg-type]
                         r["d_detail"], r["d_body"])
            out.append(DeliveryRow(d, n))
        return out

    def heartbeat_days_between(self, first: date, last: date) -> list[HeartbeatDay]:
        rows = self.c.execute(
            "SELECT * FROM heartbeat_days WHERE local_date >= ? AND local_date <= ?"
            " ORDER BY local_date, monitor", (first.isoformat(), last.isoformat()))
        return [row_to(HeartbeatDay, r) for r in rows]

    # ------------------------------------------------------------------ the purge

    def purge_personal_data(self, before: datetime, rules: PurgeRules) -> PurgeCounts:
        c = self.c
        limit = to_db(before)
        counts = PurgeCounts()
        # the incidents whose data goes: resolved before the limit
        c.execute("CREATE TEMP TABLE IF NOT EXISTS purge_old (id INTEGER PRIMARY KEY)")
        c.execute("DELETE FROM purge_old")
        c.execute("INSERT INTO purge_old SELECT id FROM incidents "
                  "WHERE state = 'resolved' AND resolved_at < ?", (limit,))
        counts.held_open = c.execute(
            "SELECT COUNT(*) FROM incidents WHERE state != 'resolved' AND created_at < ?",
            (limit,)).fetchone()[0]
        self._purge_events(limit, rules, counts)
        marker = f"%{rules.key_marker}%"
        for r in c.execute("SELECT id, dedup_key FROM incidents WHERE id IN "
                           "(SELECT id FROM purge_old) AND dedup_key LIKE ?", (marker,)).fetchall():
            new = rules.scrub_key(r["dedup_key"])
            if new != r["dedup_key"]:
                c.execute("UPDATE incidents SET dedup_key = ? WHERE id = ?", (new, r["id"]))
                counts.incidents += 1
        likes = (rules.key_marker, *sorted(rules.detail_keys))
        for r in c.execute("SELECT id, detail FROM timeline WHERE incident_id IN "
                           "(SELECT id FROM purge_old) AND ("
                           + " OR ".join("detail LIKE ?" for _ in likes) + ")",
                           tuple(f"%{x}%" for x in likes)).fetchall():
            detail = json.loads(r["detail"])
            new = {k: rules.scrub_key(v) if isinstance(v, str) else v
                   for k, v in detail.items() if k not in rules.detail_keys}
            if new != detail:
                c.execute("UPDATE timeline SET detail = ? WHERE id = ?",
                          (json.dumps(new, ensure_ascii=False, sort_keys=True), r["id"]))
                counts.timeline += 1
        p, guardian = rules.purged, rules.guardian_kind
        counts.notifications = c.execute(
            "UPDATE notifications SET recipient_name = ?, address = ? "
            "WHERE incident_id IN (SELECT id FROM purge_old) AND recipient_kind = ? "
            "AND (recipient_name != ? OR address != ?)", (p, p, guardian, p, p)).rowcount
        counts.deliveries = c.execute(
            "UPDATE deliveries SET body = ?, detail = CASE WHEN notification_id IN "
            " (SELECT id FROM notifications WHERE recipient_kind = ?) THEN ? ELSE detail END "
            "WHERE notification_id IN (SELECT n.id FROM notifications n "
            " WHERE n.incident_id IN (SELECT id FROM purge_old)) AND body NOT IN (?, '')",
            (p, guardian, p, p)).rowcount
        # pupil ids in the cluster tables: each old row's id becomes purged-<row>, distinct per
        # row, so a count of distinct pupils stays the same
        counts.case_facts = c.execute(
            "UPDATE case_facts SET subject_id = 'purged-' || rowid "
            "WHERE subject_id NOT LIKE 'purged-%' AND event_id IN (SELECT id FROM events "
            " WHERE received_at < ? AND (incident_id IS NULL "
            "  OR incident_id IN (SELECT id FROM purge_old)))", (limit,)).rowcount
        counts.cluster_members = c.execute(
            "UPDATE cluster_members SET subject_id = 'purged-' || rowid "
            "WHERE subject_id NOT LIKE 'purged-%' AND incident_id IN (SELECT id FROM purge_old)"
        ).rowcount
        c.execute("DELETE FROM purge_old")
        return counts

    def _purge_events(self, limit: str | None, rules: PurgeRules, counts: PurgeCounts) -> None:
        """Strip personal fields from the bodies, dedup keys and row keys of old events."""
        tests = [self.d.json_has("body", k) for k in rules.body_fields]
        has = " OR ".join(sql for sql, _ in tests) or "1 = 0"
        rows = self.c.execute(
            "SELECT id, body, dedup_key, row_key FROM events WHERE received_at < ? "
            "AND (incident_id IS NULL OR incident_id IN (SELECT id FROM purge_old)) "
            f"AND ({has} OR (dedup_key LIKE ? AND dedup_key NOT LIKE ?) "
            "OR (row_key IS NOT NULL AND row_key NOT LIKE ?))",
            (limit, *(a for _, args in tests for a in args), f"%{rules.key_marker}%",
             f"%{rules.scrubbed_marker}%", f"{ROW_KEY_DIGESTED}%")).fetchall()
        for r in rows:
            body = json.loads(r["body"])
            for k in rules.body_fields:
                body.pop(k, None)
            key = rules.scrub_key(r["dedup_key"])
            row_key = r["row_key"]
            if row_key is not None and not row_key.startswith(ROW_KEY_DIGESTED):
                row_key = row_key_digest(row_key)
            new_body = json.dumps(body, ensure_ascii=False, sort_keys=True)
            if (new_body, key, row_key) != (r["body"], r["dedup_key"], r["row_key"]):
                self.c.execute("UPDATE events SET body = ?, dedup_key = ?, row_key = ? WHERE id = ?",
                               (new_body, key, row_key, r["id"]))
                counts.events += 1
