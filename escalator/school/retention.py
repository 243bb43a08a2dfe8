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
- ``events.row_key`` (a register's type/date/pupil id) becomes a one-way digest (the store's;
  ``row_key_seen`` matches either form), so a re-dropped register still adds nothing;
- notifications to a guardian: ``recipient_name`` and ``address`` become :data:`PURGED`, and so
  does the ``detail`` of their delivery attempts;
- every delivery attempt's ``body`` (the text sent, which holds the summary) becomes
  :data:`PURGED`;
- pupil ids in the cluster tables (``case_facts``, ``cluster_members``) become
  ``purged-<row>``.

The decisions — which fields and keys are personal, how a key is scrubbed, what replaces a
purged text — are :data:`RULES` here; the store applies them
(:meth:`escalator.store.base.RetentionTx.purge_personal_data`).

:func:`purge` is idempotent (a purged row no longer matches) and logs counts only. The daemon
runs it once per school-local day from its engine loop (:class:`DailyPurge`, on the injected
clock, like the heartbeat check); ``escalator purge [--dry-run]`` runs it on demand.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import date, datetime, timedelta
from typing import Any

import structlog

from escalator.config.models import Config
from escalator.school.ledger import GUARDIAN, PURGED
from escalator.store.base import PurgeCounts, PurgeRules, Store

log = structlog.get_logger("escalator.school.retention")

PERSONAL_BODY_FIELDS = ("subject", "details", "reported_by")
"""Keys removed from a stored event body."""
PERSONAL_DETAIL_KEYS = frozenset({"subject", "subject_id", "subject_ids", "subjects", "reason",
                                  "text"})
"""Keys removed from the timeline details of an old incident (``reason``: a decision's,
``text``: a note's free text — either may name a pupil)."""
_SUBJECT_KEY = re.compile(r"subject:(?!-/)[^/]*(?:/[^/]*)*?(?=/\d{4}-\d{2}-\d{2}$)")


def scrub_dedup_key(key: str) -> str:
    """``…/subject:<id>/<date>`` → ``…/subject:-/<date>``; other keys unchanged."""
    return _SUBJECT_KEY.sub("subject:-", key)


RULES = PurgeRules(
    body_fields=PERSONAL_BODY_FIELDS, detail_keys=PERSONAL_DETAIL_KEYS,
    scrub_key=scrub_dedup_key, key_marker="subject:", scrubbed_marker="subject:-/",
    purged=PURGED, guardian_kind=GUARDIAN)
"""What personal data is, as the store applies it (:class:`~escalator.store.base.PurgeRules`)."""

def cutoff(config: Config, now: datetime) -> datetime:
    """Data older than this (aware UTC) is purged."""
    return now - timedelta(days=config.retention.personal_data_days)


def purge(store: Store, config: Config, now: datetime, *, dry_run: bool = False) -> PurgeCounts:
    """Purge personal data older than the retention period, in one transaction. With
    ``dry_run`` nothing is written (the transaction rolls back) and the counts say what
    would change. Logs ``personal_data_purged`` with the counts (never a value)."""
    counts = PurgeCounts()

    class _DryRun(Exception):
        pass

    try:
        with store.transaction() as tx:
            counts = tx.purge_personal_data(cutoff(config, now), RULES)
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
