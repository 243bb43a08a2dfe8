"""The store interface: the one door to persistence for the engine, delivery, intake and the
school rules. Nothing outside :mod:`escalator.store` speaks SQL or sees a driver.

A backend (SQLite: :mod:`escalator.store.sqlite`; PostgreSQL: :mod:`escalator.store.postgres`;
both run the same SQL, :mod:`escalator.store.sql_core`) implements :class:`Store` and a transaction object
with every method of :class:`Tx`, which is the combination of

- :class:`CoreTx` — events, incidents, step runs, the outbox (notifications, deliveries), the
  timeline and timers, spool files: what the engine and delivery need;
- :class:`SchoolTx` — the school rules' own rows: heartbeat days, case facts, clusters, the
  reporting deadline met, early warning's counted cases, signals, outbreaks and links;
- :class:`ReportReads` — read-only queries for the work ledger and the monthly report;
- :class:`RetentionTx` — the purge of personal data past the retention period;
- :class:`QuietTx` — silences, the incidents they hold, and the groups of grouping routes
  (docs/silences.md);
- :class:`ReplyTx` — the reply codes of SMS and e-mail messages (docs/replies.md);
- :class:`NodeTx` — several daemons on one database: nodes, leases, shared send windows
  (docs/reliability.md "Several daemons").

A new backend must implement all of them and pass the store contract suite
(``tests/store_contract/``), which runs every behaviour against every backend. Every method
runs inside one transaction that commits durably (fsync) when the ``with store.transaction()``
block exits without an exception, and rolls back otherwise. Driver errors never leave the
store: they become :class:`StoreUnavailable` or :class:`Conflict`. All datetimes are aware UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol


class StoreError(Exception):
    """Base of the errors a store raises; backends translate their driver's errors into these,
    so nothing outside :mod:`escalator.store` needs to know the driver."""


class StoreUnavailable(StoreError):
    """The store cannot read or write now (disk or database full, I/O error, read-only, locked
    too long, connection lost). The transaction was rolled back: nothing of it was stored, and
    the caller may try again later. ``cause`` is a short text naming the backend's reason."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class Conflict(StoreError):
    """A write lost a race with another writer (a unique key taken, a serialization failure).
    The transaction was rolled back; running it again sees the other writer's row."""


INCIDENT_STATES = ("triggered", "acknowledged", "resolved")
OPEN_STATES = ("triggered", "acknowledged")


@dataclass
class Incident:
    """An incident row. ``policy`` is the snapshot (dict) taken when it opened; ``step_index``
    is the last fired step (-1 before the first); ``next_step_at`` the durable timer (or None)."""

    id: int
    dedup_key: str
    state: str
    kind: str
    category: str
    severity: str
    summary: str
    class_id: str | None
    grade: str | None
    place: str | None
    drill: bool
    policy_id: str
    policy: dict[str, Any]
    step_index: int
    round: int
    next_step_at: datetime | None
    event_count: int
    created_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    first_event_id: str | None = None
    deadline_at: datetime | None = None
    """The legal reporting deadline (docs/school-rules.md "Legal deadlines"), or None."""
    deadline_met_at: datetime | None = None
    """When every target of the deadline rule was first told (messages written), or None."""
    deadline_check_at: datetime | None = None
    """The deadline timer: ``deadline_at`` less the lead time, while not met."""
    deadline_rule: str | None = None
    deadline_notify: list[str] | None = None
    """The rule's ``notify`` targets, snapshotted when the deadline was set."""
    reminders: int | None = None
    """None while the walk goes on; once it stops at the end of its chain or before a step
    reached only by a decision to report (docs/decisions.md), how many reminders the waiting
    level (``step_index``) has had since."""


@dataclass
class StepRun:
    """One firing of a step. ``status``: ``open`` → ``confirmed`` | ``overdue`` | ``timed_out``
    | ``done`` | ``handled`` (handled at this level, no report needed) | ``reminded`` (a
    reminder's run, answered by the next reminder)."""

    id: int
    incident_id: int
    step_index: int
    round: int
    mode: str
    fired_at: datetime
    status: str
    closed_at: datetime | None = None
    first_delivered_at: datetime | None = None
    """When the run's first message was delivered or failed for good (its timeout counts from
    then: :meth:`escalator.engine.engine.Engine.step_delivered`), or None."""


@dataclass
class Notification:
    """An outbox row: one message to one recipient through one contact method.

    ``status``: ``pending`` (waiting for ``due_at``) → ``sending`` → ``delivered`` | ``failed``;
    or ``cancelled``. ``contact_index`` is the recipient's contact method in use (failover
    moves to the next). ``needs_ack`` is false for ``inform`` steps. ``purpose``: ``step`` or
    ``target_unresolved`` (a notice to the duty officer; ``note`` lists the targets).
    """

    id: int
    incident_id: int
    step_run_id: int | None
    recipient_kind: str
    recipient_id: str
    recipient_name: str
    channel: str
    address: str
    contact_index: int
    status: str
    due_at: datetime
    attempts: int
    created_at: datetime
    ack_token: str
    needs_ack: bool
    purpose: str = "step"
    note: str | None = None
    first_attempt_at: datetime | None = None
    last_error: str | None = None
    claimed_by: str | None = None
    """The node (daemon) that claimed the row while ``sending`` (:class:`NodeTx`)."""
    priority: int = 2
    """From the incident's severity when written (:func:`priority_of`; one of 0, 1, 2): 0 ``critical``, 1
    ``high``, 2 the rest. Claimed by priority, then due time."""


PRIORITY_NORMAL = 2
"""The priority of a notification of a ``medium``, ``low`` or ``info`` incident."""


def priority_of(severity: str) -> int:
    """A notification's priority from its incident's severity: 0 ``critical``, 1 ``high``, else
    :data:`PRIORITY_NORMAL` (lower goes first)."""
    return {"critical": 0, "high": 1}.get(str(severity), PRIORITY_NORMAL)


@dataclass
class TimelineEntry:
    """One line of an incident's timeline: ``type`` (e.g. ``step_fired``), ``actor``, ``detail``."""

    id: int
    incident_id: int
    at: datetime
    type: str
    actor: str | None
    detail: dict[str, Any]


@dataclass
class HeartbeatDay:
    """A heartbeat monitor on one school-local date (``local_date``, ISO text): when its first
    heartbeat arrived (``received_at``, ``event_id``) and the incident opened because none had
    by the deadline (``missed_incident_id``)."""

    monitor: str
    local_date: str
    received_at: datetime | None = None
    event_id: str | None = None
    missed_incident_id: int | None = None


@dataclass
class CaseFact:
    """One case counted for symptom clusters (:mod:`escalator.school.clusters`): the event, its
    ``scope`` (``class:3-2``, ``dorm:<name>``; ``drill/`` in front for drills), one
    ``syndrome`` group or disease id it counts under (a case has a fact per group it touches), the pupil (``subject_id``), the school-local date of
    ``occurred_at`` (aware UTC)."""

    event_id: str
    scope: str
    syndrome: str
    subject_id: str
    local_date: date
    occurred_at: datetime


@dataclass(frozen=True)
class EwCase:
    """One case counted by early warning (:mod:`escalator.school.early_warning`; an
    ``ew_cases`` row): ``grp`` is ``all``, a syndrome group id or ``disease:<rule id>``;
    ``local_date`` school-local; ``pupil`` a digest of the subject id (never the id itself; one
    pupil counts once a day); ``class_size`` the register's 应到人数 or None."""

    event_id: str
    grp: str
    local_date: date
    class_id: str | None
    grade: str | None
    dormitory: str | None
    pupil: str
    class_size: int | None = None


@dataclass
class Delivery:
    """One delivery attempt of a notification (the ledger's record of a send): ``outcome``
    (``delivered``, ``failed_retryable``, ``failed_permanent``, ``deduplicated`` …), the channel's
    ``detail`` and the text sent (``body``)."""

    id: int
    notification_id: int
    at: datetime
    outcome: str
    detail: str
    body: str


@dataclass
class RosterOverride:
    """A roster override (docs/rosters.md): ``person`` is on duty as ``role`` from ``starts_at``
    to ``ends_at`` (aware UTC, half-open) — in place of ``replaces`` when given (张老师 替
    李老师), else besides whoever the rotation has. ``swap_id``: the other half of a swap.
    ``cancelled_at``: when it was withdrawn (None: in force)."""

    id: int
    role: str
    person: str
    replaces: str | None
    starts_at: datetime
    ends_at: datetime
    created_by: str
    created_at: datetime
    comment: str | None = None
    swap_id: int | None = None
    cancelled_at: datetime | None = None
    cancelled_by: str | None = None


@dataclass
class NotificationRow:
    """A notification as the ledger lists it: the row, its incident's ``category``, and the
    step run's ``step_index`` and ``mode`` (None for a notice without a step run)."""

    notification: Notification
    category: str
    step_index: int | None
    mode: str | None


@dataclass
class DeliveryRow:
    """A delivery attempt as the ledger lists it, with its notification."""

    delivery: Delivery
    notification: Notification


@dataclass(frozen=True)
class PurgeRules:
    """What personal data is, for :meth:`RetentionTx.purge_personal_data` — the school's
    decisions (:mod:`escalator.school.retention`); the store only applies them.

    ``body_fields``: keys removed from an event body. ``detail_keys``: keys removed from a
    timeline detail. ``scrub_key``: a dedup key (or a timeline detail text) with its pupil id
    removed; ``key_marker`` is the text a key holding a pupil id contains (``subject:``) and
    ``scrubbed_marker`` the same once scrubbed (``subject:-/``): only keys with the first and
    without the second are read. ``purged``: the text written in place of a purged field.
    ``guardian_kind``: the ``recipient_kind`` whose name, address and delivery details are a
    pupil's personal data."""

    body_fields: tuple[str, ...]
    detail_keys: frozenset[str]
    scrub_key: Callable[[str], str]
    key_marker: str
    scrubbed_marker: str
    purged: str
    guardian_kind: str


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


@dataclass
class Silence:
    """A silence (docs/silences.md; Alertmanager's silences, GoAlert's maintenance mode):
    events whose fields and labels satisfy every one of ``matchers`` (text such as
    ``'place=~"1号楼.*"'``, :func:`escalator.config.quieting.parse_matcher`) open incidents
    that wait, telling nobody, while it is active — from ``starts_at`` to ``ends_at`` (aware UTC;
    None: unbounded on that side) and, with a ``schedule`` (the JSON of a
    :class:`~escalator.config.quieting.WeeklySchedule`), only inside its windows.
    ``exempt_critical``: ``critical`` events are not silenced. ``expired_at``/``expired_by``:
    ended early by a person (``expired_at`` ≤ now means it is over)."""

    id: str
    matchers: list[str]
    starts_at: datetime | None
    ends_at: datetime | None
    created_by: str
    comment: str
    created_at: datetime
    schedule: dict[str, Any] | None = None
    exempt_critical: bool = True
    expired_at: datetime | None = None
    expired_by: str | None = None


@dataclass
class IncidentGroup:
    """The group behind an incident of a grouping route (docs/silences.md "Grouping"):
    ``group_key`` (the incident's dedup key), the route's index, its ``values`` (group_by
    name → value), how many distinct members (events by their own dedup key) it has,
    how many the people were last told of (``told``), and the durable timer of the next
    update message (``update_at``, aware UTC, or None)."""

    incident_id: int
    group_key: str
    route: int
    values: dict[str, str]
    members: int = 0
    told: int = 0
    update_at: datetime | None = None


class CoreTx(Protocol):
    """The core operations inside one transaction: events, incidents, step runs, the outbox,
    the timeline and timers, spool files. Every backend implements these."""

    # events
    def insert_event(self, *, id: str, received_at: datetime, source: str, kind: str, category: str,
                     action: str, dedup_key: str, incident_id: int | None, outcome: str,
                     body: dict[str, Any], row_key: str | None = None) -> None: ...
    def row_key_seen(self, row_key: str) -> bool: ...
    def get_event(self, event_id: str) -> dict[str, Any] | None: ...
    def events_of(self, incident_id: int) -> list[dict[str, Any]]: ...

    # incidents
    def open_incident_by_key(self, dedup_key: str) -> Incident | None: ...
    def insert_incident(self, **fields: Any) -> int: ...
    def get_incident(self, incident_id: int) -> Incident | None: ...
    def update_incident(self, incident_id: int, **fields: Any) -> None: ...
    def list_incidents(self, states: tuple[str, ...], limit: int) -> list[Incident]: ...
    def due_incidents(self, now: datetime, limit: int) -> list[int]:
        """Incidents with a due timer: ``next_step_at`` or ``deadline_check_at`` ≤ ``now``."""
        ...
    def count_incidents(self) -> dict[str, int]: ...

    # steps
    def insert_step_run(self, *, incident_id: int, step_index: int, round: int, mode: str,
                        fired_at: datetime) -> int: ...
    def get_step_run(self, step_run_id: int) -> StepRun | None: ...
    def latest_step_run(self, incident_id: int) -> StepRun | None: ...
    def close_step_run(self, step_run_id: int, status: str, at: datetime) -> None: ...
    def mark_step_delivered(self, step_run_id: int, at: datetime) -> bool:
        """Set the run's ``first_delivered_at`` to ``at`` unless already set; whether it was set."""
        ...

    # outbox
    def insert_notification(self, **fields: Any) -> int: ...
    def get_notification(self, notification_id: int) -> Notification | None: ...
    def notification_by_token(self, token: str) -> Notification | None: ...
    def notifications_of(self, incident_id: int) -> list[Notification]: ...
    def cancel_notifications(self, incident_id: int, step_run_id: int | None, at: datetime) -> int: ...
    def claim_notifications(self, now: datetime, limit: int, node: str) -> list[Notification]:
        """Mark up to ``limit`` ``pending`` rows due at ``now`` ``sending``, claimed by ``node``
        (``claimed_by``; docs/reliability.md "Several daemons"), and return them, by priority
        (most urgent first), then due time, then id."""
        ...
    def claim_address(self, channel: str, address: str, priority: int, now: datetime,
                      limit: int, node: str) -> list[Notification]:
        """Mark up to ``limit`` ``pending`` rows to ``channel``/``address`` of ``priority`` due
        at ``now`` ``sending``, claimed by ``node``, and return them by id (the rows of a
        digest)."""
        ...
    def sending_states(self, notification_ids: Sequence[int]) -> dict[int, str]:
        """For the rows among ``notification_ids`` still ``sending``: row id → its incident's
        state (one read for a batch of sends about to go out; a row cancelled or gone is
        missing)."""
        ...
    def update_notification(self, notification_id: int, **fields: Any) -> None: ...
    def release_claims(self, node: str) -> int:
        """Return the ``sending`` rows claimed by ``node`` to ``pending`` (its own sends a crash
        left in flight, at its start); returns how many. Other nodes' rows are left alone."""
        ...
    def waiting_ahead(self, channel: str, address: str, before_id: int,
                      priority: int = 2) -> Notification | None:
        """The earliest-created ``pending`` row to ``channel``/``address`` of ``priority``
        created before row ``before_id`` (a message that must go first), or ``None``. Must not
        read the whole backlog (an index seek)."""
        ...
    def add_delivery(self, *, notification_id: int, at: datetime, outcome: str, detail: str,
                     body: str) -> None: ...
    def deliveries_of(self, notification_id: int) -> list[Delivery]:
        """The delivery attempts of one notification, oldest first."""
        ...

    # timeline and timers
    def add_timeline(self, incident_id: int, at: datetime, type: str, actor: str | None,
                     detail: dict[str, Any]) -> None: ...
    def timeline(self, incident_id: int) -> list[TimelineEntry]: ...
    def next_due(self, *, steps: bool = True, sends: bool = True) -> datetime | None:
        """The earliest timer (UTC) or None: with ``steps``, the incidents' step and deadline
        timers; with ``sends``, the pending notification rows' due times."""
        ...

    # spool files taken (content hash → committed with the file's events)
    def spool_file_seen(self, sha256: str) -> bool: ...
    def add_spool_file(self, *, sha256: str, name: str, taken_at: datetime, events: int) -> None: ...


class SchoolTx(Protocol):
    """The school rules' own rows (:mod:`escalator.school`): heartbeat days, case facts and
    clusters, the reporting deadline met, early warning's rows."""

    # heartbeat monitors (escalator/school/heartbeats.py)
    def heartbeat_watched_since(self, monitor: str, today: date) -> date:
        """The date ``monitor`` is watched since; records ``today`` the first time."""
        ...
    def heartbeat_day(self, monitor: str, day: date) -> HeartbeatDay | None: ...
    def record_heartbeat(self, monitor: str, day: date, at: datetime, event_id: str) -> None:
        """Record a heartbeat of ``monitor`` for ``day`` (the first one is kept)."""
        ...
    def mark_heartbeat_missed(self, monitor: str, day: date, incident_id: int) -> None: ...

    # symptom clusters and deadlines (escalator/school/clusters.py, …/deadlines.py)
    def add_case_fact(self, fact: CaseFact) -> None: ...
    def case_facts(self, scope: str, syndrome: str, first: date, last: date) -> list[CaseFact]:
        """Facts of ``scope`` and ``syndrome`` with a local date in ``first..last``, except
        those already listed by a cluster of that scope whose groups include ``syndrome``."""
        ...
    def fact_groups(self, scope: str, event_ids: list[str]) -> list[str]:
        """The groups (syndromes, diseases) the facts of these events in ``scope`` count under."""
        ...
    def open_cluster(self, scope: str, groups: list[str]) -> int | None:
        """The oldest open (not resolved) cluster incident of ``scope`` having one of
        ``groups`` among its groups, or None."""
        ...
    def add_cluster_groups(self, incident_id: int, scope: str, groups: list[str]) -> None:
        """Record a cluster's groups, the group that opened it first."""
        ...
    def cluster_groups(self, incident_id: int) -> list[str]:
        """A cluster's groups, the group that opened it first (empty for any other incident)."""
        ...
    def add_cluster_member(self, incident_id: int, fact: CaseFact, at: datetime) -> bool:
        """List ``fact``'s pupil in the cluster; False when already listed."""
        ...
    def cluster_members(self, incident_id: int) -> list[CaseFact]: ...
    def mark_deadline_met(self, incident_id: int, at: datetime) -> bool:
        """Set ``deadline_met_at`` (and stop the deadline timer) unless already set."""
        ...

    # the zero-report check (escalator/school/zero_reports.py)
    def cases_between(self, start: datetime, end: datetime) -> int:
        """Pupils (distinct subject ids; an event without one counts alone) with a recorded
        case — a trigger event of kind ``suspected_case`` or ``absence``, category
        ``infectious_disease``, not a drill, not ledger-only, not personal leave — whose
        ``occurred_at`` is in ``[start, end)``."""
        ...
    def open_clusters(self) -> list[int]:
        """Ids of the open (not resolved) cluster incidents that are not drills, ascending."""
        ...

    # early warning from sickness absence (escalator/school/early_warning/). A scope is
    # ``school``, ``grade:3``, ``class:3-2`` or ``dormitory:B301`` (ValueError otherwise); dates
    # are school-local
    def ew_add_case(self, case: EwCase) -> None:
        """Count ``case`` (once per event and group: a second one is ignored)."""
        ...
    def ew_daily_counts(self, grp: str, scope: str, first: date, last: date) -> dict[date, int]:
        """Distinct pupils per date of ``grp`` in ``scope`` over ``first..last`` (dates with
        none are absent)."""
        ...
    def ew_window_count(self, grp: str, scope: str, first: date, last: date) -> int:
        """Distinct pupils of ``grp`` in ``scope`` over the dates ``first..last``."""
        ...
    def ew_first_date(self) -> date | None:
        """The earliest date any case was counted in group ``all`` (the start of every series)."""
        ...
    def ew_register_sizes(self, last: date) -> dict[str, int]:
        """Per class, the latest 应到人数 a counted case gave on or before ``last``."""
        ...
    def ew_classes(self) -> list[str]:
        """Every class id with a counted case, sorted."""
        ...
    def ew_signal(self, series: str, day: date) -> tuple[int | None, list[str]] | None:
        """The signal of ``series`` on ``day``: (incident id, methods), or None."""
        ...
    def ew_record_signal(self, series: str, day: date, incident_id: int | None,
                         methods: list[str], at: datetime) -> None:
        """Record the signal of ``series`` on ``day``; a second call replaces its methods only."""
        ...
    def ew_open_signals(self, series: list[str], first: date, last: date
                        ) -> list[tuple[str, date, int]]:
        """Signals of these series on ``first..last`` whose incident is not resolved:
        (series, date, incident id), oldest date first."""
        ...
    def ew_open_outbreak(self, rule: str, scope: str) -> int | None:
        """The oldest unresolved outbreak incident of ``rule`` in ``scope``, or None."""
        ...
    def ew_outbreak_since(self, rule: str, scope: str) -> datetime | None:
        """When the last resolved outbreak incident of ``rule`` in ``scope`` was resolved."""
        ...
    def ew_add_outbreak(self, incident_id: int, rule: str, scope: str, first: date,
                        at: datetime) -> None:
        """Record ``incident_id`` as the outbreak incident of ``rule`` in ``scope`` whose window
        starts on ``first`` (a second call is ignored)."""
        ...
    def ew_link(self, warning_id: int, other_id: int, at: datetime) -> bool:
        """Record that early-warning incident ``warning_id`` is linked to ``other_id`` (a
        cluster); False when that link existed."""
        ...
    def ew_purge(self, before: date) -> int:
        """Delete counted cases dated before ``before``; returns how many rows."""
        ...

    # roster overrides and swaps (escalator/school/roster.py; docs/rosters.md)
    def add_roster_override(self, *, role: str, person: str, replaces: str | None,
                            starts_at: datetime, ends_at: datetime, created_by: str,
                            created_at: datetime, comment: str | None = None,
                            swap_id: int | None = None) -> int:
        """Store an override (in force until cancelled); returns its id."""
        ...
    def roster_overrides(self, start: datetime, end: datetime, role: str | None = None,
                         *, cancelled: bool = False) -> list[RosterOverride]:
        """Overrides overlapping ``[start, end)`` (of ``role`` when given), by start then id;
        in force only, unless ``cancelled``."""
        ...
    def cancel_roster_override(self, override_id: int, at: datetime, by: str) -> list[int]:
        """Withdraw override ``override_id`` (and the other half of its swap); returns the ids
        withdrawn now (empty when it does not exist or was withdrawn before)."""
        ...


class ReportReads(Protocol):
    """Read-only queries for the work ledger and the monthly report
    (:mod:`escalator.school.ledger`). Time ranges are half-open ``[start, end)``, aware UTC."""

    def incidents_occurred(self, start: datetime, end: datetime) -> list[Incident]:
        """Incidents whose first event occurred in ``[start, end)`` (its ``occurred_at``; an
        incident without that event: when it was opened), by that time then id — so a case of
        30 November entered on 7 December counts in November."""
        ...
    def first_timeline_entry(self, incident_id: int, types: tuple[str, ...]) -> TimelineEntry | None:
        """The incident's earliest timeline entry of one of ``types`` (by ``at`` then id)."""
        ...
    def timeline_between(self, start: datetime, end: datetime,
                         types: tuple[str, ...]) -> list[TimelineEntry]:
        """Timeline entries of ``types`` (any incident) at ``[start, end)``, by ``at`` then id."""
        ...
    def notifications_created(self, start: datetime, end: datetime) -> list[NotificationRow]:
        """Notifications written in ``[start, end)``, by ``created_at`` then id."""
        ...
    def deliveries_between(self, start: datetime, end: datetime) -> list[DeliveryRow]:
        """Delivery attempts at ``[start, end)``, by ``at`` then id."""
        ...
    def heartbeat_days_between(self, first: date, last: date) -> list[HeartbeatDay]:
        """Heartbeat days with a school-local date in ``first..last`` (both included), by date
        then monitor."""
        ...


class RetentionTx(Protocol):
    """The purge of pupils' personal data (:mod:`escalator.school.retention`)."""

    def purge_personal_data(self, before: datetime, rules: PurgeRules) -> PurgeCounts:
        """Apply ``rules`` to what is older than ``before``: events received before it (without
        an incident, or of an incident resolved before it) and everything of incidents resolved
        before it (an open incident keeps its data; ``held_open`` counts the open ones opened
        before ``before``). Row keys become a one-way
        digest that :meth:`CoreTx.row_key_seen` still matches; pupil ids in case facts and
        cluster members become ``purged-<row>`` (distinct per row). Idempotent: a purged row no
        longer matches. Returns the counts of rows changed."""
        ...


class QuietTx(Protocol):
    """Silences, the incidents they hold, and incident groups (:mod:`escalator.engine.silences`,
    :mod:`escalator.engine.grouping`; docs/silences.md)."""

    def insert_silence(self, silence: Silence) -> None:
        """Store a new silence (:class:`Conflict` when its id is taken)."""
        ...
    def get_silence(self, silence_id: str) -> Silence | None: ...
    def list_silences(self, since: datetime | None) -> list[Silence]:
        """Silences by ``created_at`` then id: every one with ``since`` None, else those not
        over by ``since`` (not expired at or before it, ``ends_at`` unset or after it)."""
        ...
    def expire_silence(self, silence_id: str, at: datetime, by: str) -> bool:
        """End the silence at ``at`` by ``by``; False when there is none or it was over by then."""
        ...
    def hold_incident(self, incident_id: int, silence_id: str, until: datetime) -> None:
        """Record that ``silence_id`` holds ``incident_id`` until ``until`` (replaces a hold)."""
        ...
    def silence_hold(self, incident_id: int) -> tuple[str, datetime] | None:
        """The silence holding ``incident_id`` and until when, or None."""
        ...
    def release_hold(self, incident_id: int) -> None: ...
    def held_by(self, silence_id: str) -> list[int]:
        """The incidents ``silence_id`` holds, by id."""
        ...
    def open_openings(self, drill: bool, category: str | None, limit: int,
                      equal: dict[str, str] | None = None) -> list[tuple[int, str, dict[str, Any]]]:
        """Open incidents (newest first, at most ``limit``) with ``drill`` as given and, when
        ``category`` is given, that category: ``(incident id, source, body)`` of the event that
        opened each (incidents without a stored opening event are left out). ``equal``: only
        those whose opening event has these values — ``source`` the recorded source, a name of
        :data:`escalator.config.quieting.FIELDS` that field of the body, any other name that
        label; a missing one reads as ``""``. For inhibit rules' source matchers."""
        ...
    def add_group(self, group: IncidentGroup) -> None: ...
    def incident_group(self, incident_id: int) -> IncidentGroup | None: ...
    def add_group_member(self, incident_id: int, member_key: str, at: datetime) -> bool:
        """Count ``member_key`` (an event's own dedup key) in the group of ``incident_id``;
        False when it was counted already. Keeps ``members`` up to date."""
        ...
    def set_group_update(self, incident_id: int, update_at: datetime | None,
                         told: int | None = None) -> None:
        """Set the group's update timer (None: none) and, when given, ``told``."""
        ...
    def due_group_updates(self, now: datetime, limit: int) -> list[int]:
        """Incidents whose group update timer is ≤ ``now``, soonest first (at most ``limit``)."""
        ...
    def next_group_update(self) -> datetime | None:
        """The earliest group update timer, or None."""
        ...


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in web console session (docs/console.md): the ``person_id`` (a config person),
    the form token ``csrf`` of its pages, when it began and when it ends (aware UTC). The store
    keeps only a digest of the session's cookie value."""

    person_id: str
    csrf: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class ChannelHealth:
    """One channel id's deliveries since a time: the last delivered one, failed attempts and
    the last failure with its detail (the console's settings page)."""

    channel: str
    last_delivered_at: datetime | None
    failures: int
    last_failure_at: datetime | None
    last_error: str | None


class ConsoleTx(Protocol):
    """The web console's rows (:mod:`escalator.web.console`): one-time sign-in links and
    sessions, each stored as a digest of its secret (never the secret itself), and the reads
    of its pages."""

    def add_login_token(self, digest: str, person_id: str, created_at: datetime,
                        expires_at: datetime) -> None:
        """Store a sign-in link's token digest for ``person_id``, valid until ``expires_at``;
        expired tokens are dropped."""
        ...

    def take_login_token(self, digest: str, now: datetime) -> str | None:
        """Use a sign-in token once: the person id when ``digest`` is stored, unused and not
        expired at ``now`` (it is then marked used), else None."""
        ...

    def add_session(self, digest: str, session: ConsoleSession) -> None:
        """Store a session under its cookie's digest; expired sessions are dropped."""
        ...

    def get_session(self, digest: str, now: datetime) -> ConsoleSession | None:
        """The session with cookie digest ``digest`` unless it has ended at ``now``, or None."""
        ...

    def end_session(self, digest: str) -> bool:
        """Sign a session out; whether there was one."""
        ...

    def absence_by_class(self, day: date) -> dict[str, int]:
        """Pupils counted as cases (``case_facts`` scopes ``class:…``, drills left out) on
        school-local ``day``, per class id: distinct pupils."""
        ...

    def channel_health(self, since: datetime) -> list[ChannelHealth]:
        """Per channel id with delivery attempts at or after ``since``: see
        :class:`ChannelHealth`; sorted by channel id."""
        ...


@dataclass
class ReplyCode:
    """A reply code (docs/replies.md): ``code`` (``a``, ``b``, … ``aa``) lets recipient
    ``recipient_kind``/``recipient_id`` answer incident ``incident_id`` from the phone; it maps to
    the ack token of the latest notification of that incident sent to them with a code
    (``notification_id``, ``ack_token``), given out at ``assigned_at`` (aware UTC).
    ``incident_state``: the incident's state when read (None on a row being written)."""

    recipient_kind: str
    recipient_id: str
    code: str
    incident_id: int
    notification_id: int
    ack_token: str
    assigned_at: datetime
    incident_state: str | None = None


class ReplyTx(Protocol):
    """Reply codes: one row per (recipient, code), one code per (recipient, incident)."""

    def reply_codes_of(self, recipient_kind: str, recipient_id: str) -> list[ReplyCode]:
        """Every code row of one recipient, with its incident's state, by code length then code."""
        ...
    def reply_code(self, recipient_kind: str, recipient_id: str, code: str) -> ReplyCode | None:
        """The row of ``code`` for one recipient (with its incident's state), or None."""
        ...
    def put_reply_code(self, row: ReplyCode) -> None:
        """Write ``row``: it replaces the recipient's row with the same code, and any other row
        of the recipient for the same incident (an incident has one code per recipient)."""
        ...


class NodeTx(Protocol):
    """Several daemons on one database (docs/reliability.md "Several daemons"): each is a
    *node* (``Settings.node``) that beats its row in ``nodes``; the ``sending`` rows of a node
    whose row expired are released by any other; periodic singletons run under a *lease*
    (one holder at a time); per-address send windows are rows, so a limit holds across nodes.
    Times are aware UTC; TTLs in seconds."""

    def beat_node(self, node: str, now: datetime, ttl_seconds: float) -> None:
        """Record that ``node`` is alive at ``now`` until ``now + ttl_seconds`` (its row is
        created at the first beat, ``started_at`` then and again after it had expired)."""
        ...
    def live_nodes(self, now: datetime) -> list[str]:
        """The nodes whose row has not expired at ``now``, sorted."""
        ...
    def release_dead_claims(self, now: datetime) -> int:
        """Return to ``pending`` the ``sending`` rows whose claiming node's row has expired at
        ``now`` or is missing (or that record no node); returns how many."""
        ...
    def take_lease(self, name: str, node: str, now: datetime, ttl_seconds: float) -> bool:
        """Take or renew the lease ``name`` for ``node`` until ``now + ttl_seconds``: True when
        it was free, expired at ``now`` or already ``node``'s; False (nothing changed) while
        another node holds it."""
        ...
    def rate_window(self, key: str) -> list[datetime]:
        """The send times recorded under ``key`` (a throttle's window, e.g. one address of one
        channel), oldest first; empty when none. Holds the key until the transaction ends, so
        another node deciding on the same key waits for this decision."""
        ...
    def put_rate_window(self, key: str, sends: Sequence[datetime]) -> None:
        """Replace the send times of ``key`` (an empty ``sends`` drops the key)."""
        ...


class Tx(CoreTx, SchoolTx, ReportReads, RetentionTx, QuietTx, ConsoleTx, ReplyTx, NodeTx,
         Protocol):
    """Every operation inside one transaction: what ``store.transaction()`` yields."""


class Store(Protocol):
    """A durable store. ``transaction()`` yields a :class:`Tx`; exiting cleanly commits (fsync)."""

    def transaction(self) -> AbstractContextManager[Tx]:
        """One transaction: commits durably when the block exits cleanly, rolls back when it
        raises. A driver error — raised by a method inside the block or by the commit — leaves
        the block as :class:`StoreUnavailable` or :class:`Conflict` (nothing of the transaction
        stored); catch those outside the block, not inside it. Any other exception leaves as it
        is, after the rollback."""
        ...
    def snapshot(self) -> AbstractContextManager[Tx]:
        """A read of what is committed, on a connection of its own: it never waits for a write
        transaction running on another thread (SQLite: a second, ``query_only`` connection,
        which WAL lets read beside the writer; PostgreSQL: a pooled connection in a ``READ
        ONLY`` transaction). Only the :class:`Tx` methods that read without locking may be
        called (a write raises :class:`StoreUnavailable`; on PostgreSQL so does a read that
        locks its row: ``get_incident``, ``open_incident_by_key``, ``due_incidents``). Errors as :meth:`transaction`. An in-memory SQLite
        store reads through its one connection, after the write transaction running."""
        ...
    def close(self) -> None:
        """Close the store; :class:`StoreUnavailable` if the backend fails to."""
        ...
    def schema_version(self) -> int:
        """How many schema migrations the database has (the same numbers on every backend);
        :class:`StoreUnavailable` when it cannot be read."""
        ...
    def describe(self) -> str:
        """The backend and its version, without host, user or password: ``SQLite 3.40.1``,
        ``PostgreSQL 15.20``; :class:`StoreUnavailable` when it cannot be read."""
        ...
