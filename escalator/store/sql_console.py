"""SQL of both backends: the web console's rows (sign-in tokens, sessions) and the reads of its pages — the
queries of :class:`~escalator.store.base.ConsoleTx`, mixed into
:class:`~escalator.store.sql_core.SQLTx`. Who may sign in and what a page shows is decided in
:mod:`escalator.web.console`; here are only the rows."""

from __future__ import annotations

from datetime import date, datetime

from escalator.store.base import ChannelHealth, ConsoleSession
from escalator.store.sql_dialect import Connection, Dialect
from escalator.store.sql_rows import from_db, to_db


class SQLConsole:
    """The console's rows on the connection ``c`` of a transaction."""

    c: Connection
    d: Dialect

    def add_login_token(self, digest: str, person_id: str, created_at: datetime,
                        expires_at: datetime) -> None:
        self.c.execute("DELETE FROM console_login_tokens WHERE expires_at < ?",
                       (to_db(created_at),))
        self.c.execute(
            "INSERT INTO console_login_tokens (digest, person_id, created_at, expires_at)"
            " VALUES (?, ?, ?, ?)", (digest, person_id, to_db(created_at), to_db(expires_at)))

    def take_login_token(self, digest: str, now: datetime) -> str | None:
        row = self.c.execute(
            "UPDATE console_login_tokens SET used_at = ? WHERE digest = ? AND used_at IS NULL"
            " AND expires_at > ? RETURNING person_id", (to_db(now), digest, to_db(now))).fetchone()
        return str(row[0]) if row else None

    def add_session(self, digest: str, session: ConsoleSession) -> None:
        self.c.execute("DELETE FROM console_sessions WHERE expires_at <= ?",
                       (to_db(session.created_at),))
        self.c.execute(
            "INSERT INTO console_sessions (digest, person_id, csrf, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?)", (digest, session.person_id, session.csrf,
                                        to_db(session.created_at), to_db(session.expires_at)))

    def get_session(self, digest: str, now: datetime) -> ConsoleSession | None:
        row = self.c.execute(
            "SELECT person_id, csrf, created_at, expires_at FROM console_sessions"
            " WHERE digest = ? AND expires_at > ?", (digest, to_db(now))).fetchone()
        if row is None:
            return None
        return ConsoleSession(row[0], row[1], from_db(row[2]), from_db(row[3]))  # type: ignore[arg-type]

    def end_session(self, digest: str) -> bool:
        return self.c.execute("DELETE FROM console_sessions WHERE digest = ?",
                              (digest,)).rowcount > 0

    def absence_by_class(self, day: date) -> dict[str, int]:
        rows = self.c.execute(
            "SELECT substr(scope, 7), COUNT(DISTINCT subject_id) FROM case_facts"
            " WHERE local_date = ? AND scope LIKE 'class:%' GROUP BY scope ORDER BY scope",
            (day.isoformat(),))
        return {str(r[0]): int(r[1]) for r in rows}

    def channel_health(self, since: datetime) -> list[ChannelHealth]:
        rows = self.c.execute(
            "SELECT n.channel,"
            " MAX(CASE WHEN d.outcome = 'delivered' THEN d.at END),"
            " SUM(CASE WHEN d.outcome LIKE 'failed%' THEN 1 ELSE 0 END),"
            " MAX(CASE WHEN d.outcome LIKE 'failed%' THEN d.at END)"
            " FROM deliveries d JOIN notifications n ON n.id = d.notification_id"
            " WHERE d.at >= ? GROUP BY n.channel ORDER BY n.channel", (to_db(since),)).fetchall()
        out = []
        for channel, delivered, failures, failed_at in rows:
            detail = None
            if failed_at is not None:
                got = self.c.execute(
                    "SELECT d.detail FROM deliveries d JOIN notifications n"
                    " ON n.id = d.notification_id WHERE n.channel = ? AND d.at = ?"
                    " AND d.outcome LIKE 'failed%' ORDER BY d.id DESC LIMIT 1",
                    (channel, failed_at)).fetchone()
                detail = got[0] if got else None
            out.append(ChannelHealth(channel, from_db(delivered), int(failures or 0),
                                     from_db(failed_at), detail))
        return out
