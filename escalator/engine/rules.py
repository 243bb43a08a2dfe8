"""Rules: the public interface through which school rules — and a district's own — plug into
the engine (docs/plugins.md "Writing a rule").

A rule is an object with a ``name`` and the hook methods of :class:`Rule`; plugins hand rules
to escalator through the ``escalator_rules(config)`` hook (:mod:`escalator.hookspecs`), the
built-in school rules too (:mod:`escalator.school.plugin`). The engine imports no rule: it calls
the rules it was given, in a fixed order — the order of :func:`escalator.plugins.collect_rules`
(plugins in registration order: built-ins first, then ``plugins_dir`` files by name, then entry
points; each plugin's rules in the order it returned them). For each hook every rule is called,
in that order.

Every hook runs inside a store transaction that the engine opened and commits: ``tx`` (a
:class:`~escalator.store.base.Tx`, for the rule's own tables) and ``ops`` (:class:`EngineOps`,
for incidents and notifications) belong to the same one. A rule never commits, and an exception
raised by a rule rolls that whole transaction back and propagates to the engine's caller, like
any engine error (an event's intake fails; a ``tick`` fails and is retried by the daemon loop).

Times are aware UTC datetimes; ``ops.now`` is the time of the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from escalator.config.models import Config
from escalator.engine.targets import Recipient
from escalator.events import Event
from escalator.store.base import Incident, Tx

if TYPE_CHECKING:
    from escalator.engine.engine import IngestResult


class UnknownPolicy(LookupError):
    """:meth:`EngineOps.open_incident` was given a policy id the running config lacks."""


@dataclass(frozen=True)
class StoredEvent:
    """One event as the engine stored it, given to :meth:`Rule.on_event`.

    ``event``: the normalised event (``occurred_at`` set, aware). ``id``: its event id.
    ``source``: the intake source recorded. ``status``: the intake answer
    (:class:`~escalator.engine.engine.IngestResult` ``status``: ``created``, ``deduplicated``,
    ``inhibited``, ``logged``, ``acknowledged``, ``resolved``, ``ignored`` or ``ledger``; never
    ``duplicate_row``, which stores nothing). ``incident_id``: the incident it opened, joined or
    acted on, or None. ``routed``: True when routing chose the policy; False when the caller
    named it — an incident a rule opened (:meth:`EngineOps.open_incident`) or the daemon's own
    notice to the administrators.
    """

    event: Event
    id: str
    source: str
    status: str
    incident_id: int | None
    routed: bool


@dataclass(frozen=True)
class Skip:
    """Why a rule keeps a recipient out of an incident's messages (:meth:`Rule.keep_out`):
    ``type``, the timeline entry written (e.g. ``drill_unit_skipped``); ``detail``, added to
    the entry's ``{"step", "target", "recipient"}`` (never personal data a purge would miss)."""

    type: str
    detail: Mapping[str, Any] = field(default_factory=dict)


class EngineOps(Protocol):
    """What a rule may ask of the engine, bound to one store transaction (the ``tx`` the hook
    got) and its time. Implemented by the engine; rules never call the engine otherwise."""

    @property
    def config(self) -> Config:
        """The running config (swapped by a reload: read it at each call, never keep it)."""
        ...

    @property
    def now(self) -> datetime:
        """The time of this transaction (aware UTC): every row the engine writes in it has it."""
        ...

    def open_incident(self, event: Event, *, policy: str, source: str) -> IngestResult:
        """Ingest ``event`` walking policy ``policy`` (a policy id of :attr:`config`) instead of
        routing it: a new incident fires its first step now (status ``created``); while an
        incident with the event's dedup key is open the event is counted on it
        (``deduplicated``). The event is stored with ``source`` and every rule's
        :meth:`Rule.on_event` sees it (``routed`` False). Returns the
        :class:`~escalator.engine.engine.IngestResult` (``incident_id``, ``status``,
        ``event_id``). Raises :class:`UnknownPolicy` for an unknown ``policy``."""
        ...

    def notify(self, incident: Incident, recipients: list[Recipient], *, purpose: str,
               note: str | None = None) -> int:
        """Write one notification row per recipient of ``incident`` now (first contact method),
        outside any step: no acknowledge link, the walk goes on unchanged. ``purpose``: the
        ``notifications.purpose`` (the reason, e.g. ``deadline``; templates and the ledger show
        it); ``note``: a short text kept with the row. A recipient without a contact method is
        logged ``no_contact_method`` instead. Every rule's :meth:`Rule.on_notified` runs after
        each row. Returns how many rows were written."""
        ...

    def resolve(self, incident: Incident, *, actor: str, via: str) -> None:
        """Resolve ``incident``: close its step, cancel its pending sends, timeline
        ``resolved`` (``actor``, ``via``), then every rule's :meth:`Rule.on_resolved`. Does
        nothing to an incident already resolved."""
        ...

    def recipients(self, incident: Incident, target: str) -> list[Recipient]:
        """The recipients of step-target string ``target`` (``person:ID``, ``unit:ID``,
        ``role:NAME``, a relative role such as ``class_teacher`` or a rule's own role such as
        ``guardian``) for ``incident`` now. An unknown target, or one that resolves to nobody,
        gives ``[]``; no timeline entry is written."""
        ...

    def add_timeline(self, incident_id: int, type: str, actor: str | None,
                     detail: Mapping[str, Any]) -> None:
        """Add the timeline entry ``type`` to ``incident_id`` at :attr:`now` (``detail``:
        JSON-serialisable; pupils' ids only under ``subject`` / ``subjects``, which the
        retention purge removes)."""
        ...


class Rule(Protocol):
    """A rule: ``name`` (unique among the rules, for logs and errors) and the hooks below.

    Subclass it to inherit a no-op for each hook you do not need; or implement them all.
    Each hook gets ``ops`` and ``tx`` of the transaction it runs in (module docstring).
    """

    name: ClassVar[str]

    def on_event(self, ops: EngineOps, tx: Tx, event: StoredEvent) -> None:
        """An event was stored and routed (called for every stored event, after its incident
        was opened, joined or acted on, in the event's own transaction)."""
        return None

    def on_tick(self, ops: EngineOps, tx: Tx) -> int:
        """A periodic reconcile, run at the start of every ``Engine.tick`` in its own
        transaction (the daemon's loop runs it at least once a second). Returns how many
        incidents it opened or changed (counted in the tick's return value)."""
        return 0

    def on_due(self, ops: EngineOps, tx: Tx, incident: Incident) -> bool:
        """``incident`` came due in ``Engine.tick`` (its step timer ``next_step_at`` or the
        deadline timer ``deadline_check_at``), before the engine fires its step. Returns True
        when the rule changed it (the engine then reads it again and fires its step only if
        ``next_step_at`` is due)."""
        return False

    def on_notified(self, ops: EngineOps, tx: Tx, incident: Incident,
                    recipient: Recipient) -> None:
        """A notification row for ``recipient`` of ``incident`` was written (``incident`` as
        the engine had it before the row: read it again for current fields)."""
        return None

    def on_resolved(self, ops: EngineOps, tx: Tx, incident: Incident, actor: str) -> None:
        """``incident`` was resolved by ``actor`` (``incident``: its row before the resolve)."""
        return None

    def recipients(self, ops: EngineOps, tx: Tx, incident: Incident, role: str,
                   opening: Mapping[str, Any] | None) -> list[Recipient] | None:
        """The recipients of the relative role ``role`` (e.g. ``guardian``, ``duty_officer``)
        or administrator-defined role (one a roster fills) for ``incident``, or None when this
        rule does not resolve ``role`` (the engine asks the next rule, then resolves its own
        roles). ``opening``: the JSON body of the event opening the incident,
        not stored yet, at its first step; else None."""
        return None

    def keep_out(self, ops: EngineOps, incident: Incident, recipient: Recipient) -> Skip | None:
        """Whether ``incident``'s steps must leave ``recipient`` out (e.g. a unit in a drill):
        a :class:`Skip`, or None. A target left with nobody is passed over like an unresolved
        one, without telling the duty officer."""
        return None
