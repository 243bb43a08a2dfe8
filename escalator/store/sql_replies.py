"""SQL of both backends: the reply codes (docs/replies.md) — the rows of
:class:`~escalator.store.base.ReplyTx`, mixed into :class:`~escalator.store.sql_core.SQLTx`
(the table ``reply_codes`` is created by its migration in
:data:`escalator.store.sqlite.MIGRATIONS`). Which code a message gets and what a reply does is
decided in :mod:`escalator.delivery.reply_codes`; here are only the rows.
"""

from __future__ import annotations

from typing import Any

from escalator.store.base import ReplyCode
from escalator.store.sql_dialect import Connection, Dialect
from escalator.store.sql_rows import from_db, to_db

_SELECT = (
    "SELECT r.recipient_kind, r.recipient_id, r.code, r.incident_id, r.notification_id,"
    " r.ack_token, r.assigned_at, i.state FROM reply_codes r"
    " LEFT JOIN incidents i ON i.id = r.incident_id"
)


def _row(row: Any) -> ReplyCode:
    kind, rid, code, incident_id, notification_id, token, at, state = tuple(row)
    return ReplyCode(kind, rid, code, int(incident_id), int(notification_id), token,
                     from_db(at), state)  # type: ignore[arg-type]


class SQLReplies:
    """The reply-code rows on the connection ``c`` of a transaction."""

    c: Connection
    d: Dialect

    def reply_codes_of(self, recipient_kind: str, recipient_id: str) -> list[ReplyCode]:
        rows = self.c.execute(
            f"{_SELECT} WHERE r.recipient_kind = ? AND r.recipient_id = ?"
            " ORDER BY length(r.code), r.code", (recipient_kind, recipient_id))
        return [_row(r) for r in rows]

    def reply_code(self, recipient_kind: str, recipient_id: str, code: str) -> ReplyCode | None:
        row = self.c.execute(
            f"{_SELECT} WHERE r.recipient_kind = ? AND r.recipient_id = ? AND r.code = ?",
            (recipient_kind, recipient_id, code)).fetchone()
        return _row(row) if row else None

    def put_reply_code(self, row: ReplyCode) -> None:
        self.c.execute(
            "DELETE FROM reply_codes WHERE recipient_kind = ? AND recipient_id = ?"
            " AND (incident_id = ? OR code = ?)",
            (row.recipient_kind, row.recipient_id, row.incident_id, row.code))
        self.c.execute(
            "INSERT INTO reply_codes (recipient_kind, recipient_id, code, incident_id,"
            " notification_id, ack_token, assigned_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row.recipient_kind, row.recipient_id, row.code, row.incident_id,
             row.notification_id, row.ack_token, to_db(row.assigned_at)))
