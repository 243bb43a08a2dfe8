"""The delivery worker: a pipeline of small stages over the durable outbox (docs/delivery.md).

The claimed rows (most urgent first) go into one lane per (channel id, address): a lane sends
one row at a time (priority, then creation order), lanes run at once with at most
``delivery.concurrency_per_channel`` sends in flight per channel; more than
``delivery.digest.after`` rows of one priority waiting for one address go as one digest
(stage 4b, :meth:`Delivery._digest`). Every store transaction runs through ``Delivery.db``.

For each claimed notification row, in order (after Alertmanager's ``notify`` pipeline):

1. **re-check** (:func:`recheck`) — the row is still ``sending`` and its incident still wants it;
2. **dedup** (:func:`find_twin`) — the same message (incident, step run, channel, address,
   purpose) was already delivered: the row becomes ``delivered`` with a ledger row
   ``deduplicated``, nothing is sent;
2a. **quiet hours** (:mod:`escalator.delivery.quiet_hours`) — outside school hours a non-urgent
   message on a quiet channel is deferred to the next school morning (its due time moves; a
   ``deferred`` ledger row), never dropped;
2b. **order** (:func:`plan_queue`) — an earlier row to the same channel and address is still
   pending (of the same priority): this one waits behind it, so one recipient gets messages in
   creation order;
3. **throttle** (:class:`Throttle`) — per channel (the channel class's ``rate_limits``) and per
   address (:data:`ADDRESS_LIMITS`, kept in the store: it holds across daemons; not for
   ``critical``); over a limit the row waits (its ``due_at`` moves), without
   counting an attempt or using up the retry deadline;
4. **render** (``Delivery.render``) and **send** (:func:`send`) — a message asking for an
   answer through a channel that takes replies gets the recipient's reply code first
   (:mod:`escalator.delivery.reply_codes`, docs/replies.md);
5. **retry** (:func:`plan_next`) — the only place that retries: exponential backoff with jitter,
   due times stored as rows, until :data:`RETRY_DEADLINE`; then, or on a permanent failure,
   failover to the recipient's next contact method (:func:`failover`);
6. **record** (:func:`record`) — every attempt a ``deliveries`` row (the ledger), the row's new
   state and the timeline, in one transaction.

A crash between claim and record leaves the row ``sending``; start-up releases it, so a message
is sent at least once, and at most twice (a crash after the send, before its record). All times are aware UTC.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from escalator.clock import Clock
from escalator.config.models import Config
from escalator.delivery import reply_codes
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.quiet_hours import SchoolHours, defer, first_event, quiet_until
from escalator.delivery.ratelimit import RateLimit, RateLimiter, acquire_all, window_wait
from escalator.delivery.render import RenderContext, Rendered, render_templates, template_vars
from escalator.engine.decisions import redact_links
from escalator.engine.engine import step_delivered
from escalator.store.base import Incident, Notification, Store, Tx
from escalator.store.thread import Runner, inline

log = structlog.get_logger("escalator.delivery.pipeline")

SEND_TIMEOUT = 30.0
"""Seconds one channel ``send`` may take before it counts as a retryable failure."""
RETRY_BASE = 5.0
"""First retry delay (seconds); doubled each attempt, capped at :data:`RETRY_MAX_DELAY`."""
RETRY_MAX_DELAY = 300.0
"""Longest retry delay (seconds), before jitter."""
RETRY_DEADLINE = 900.0
"""Seconds of retrying after the first attempt after which a contact method is given up
(failover). Time a row spends held back by a rate limit does not count."""
LOCAL_NODE = "local"
"""The node name of a worker not told its daemon's (tests, the harness)."""
ADDRESS_LIMITS: tuple[RateLimit, ...] = (
    RateLimit(10, 60.0, "escalator: at most 10 messages a minute to one address of one channel"),
)
"""Per-recipient limit: messages to one (channel id, address) in a sliding window."""
MIN_HOLD = 1.0
"""Shortest wait (seconds) after a channel's own hold, when its ``retry_after`` is shorter."""
DETAIL_MAX = 500
"""Longest detail kept in the ledger and ``last_error`` (characters)."""
DIGESTED = "digested"
"""Ledger outcome of a notification delivered inside another one's digest message."""
DIGEST_MAX = 1000
"""Most notifications one digest carries (a longer queue goes as several)."""
DIGEST_LINES = 10
"""Incidents a digest lists by name; the rest are counted."""
URGENT = 0
"""The priority (``critical``) that escalator's own per-address limit never holds back and
that never goes into a digest."""


def backoff(attempts: int, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempts`` (1-based): ``min(5·2^(n-1), 300)`` s, ±20 % jitter."""
    base = min(RETRY_BASE * 2 ** (attempts - 1), RETRY_MAX_DELAY)
    return base * (0.8 + 0.4 * (rng or random).random())


def later(now: datetime, seconds: float) -> datetime:
    """``now`` plus ``seconds`` rounded up to the next millisecond (never ``now`` itself), so a
    row held until then is not claimed again before the window has room."""
    return now + timedelta(milliseconds=max(1, math.ceil(seconds * 1000)))


# --------------------------------------------------------------------------------------------
# stage 1: re-check
# --------------------------------------------------------------------------------------------


def recheck(tx: Tx, n: Notification, now: datetime) -> Incident | None:
    """The row's incident if the row should still go out; else ``None`` (cancelling the row
    when its incident was resolved, or acknowledged and the row needs an acknowledgement)."""
    current = tx.get_notification(n.id)
    inc = tx.get_incident(n.incident_id)
    if current is None or inc is None or current.status != "sending":
        return None  # cancelled by an acknowledgement after the claim
    if inc.state == "resolved" or (inc.state == "acknowledged" and n.needs_ack):
        tx.update_notification(n.id, status="cancelled", updated_at=now)
        return None
    return inc


# --------------------------------------------------------------------------------------------
# stage 2: dedup against the ledger
# --------------------------------------------------------------------------------------------


def find_twin(tx: Tx, n: Notification) -> Notification | None:
    """An earlier row of the same step run already delivered with the same message: same
    channel, address and purpose (e.g. two people of one step sharing a group robot)."""
    if n.step_run_id is None:
        return None
    for other in tx.notifications_of(n.incident_id):
        if (other.id != n.id and other.status == "delivered" and other.step_run_id == n.step_run_id
                and other.channel == n.channel and other.address == n.address
                and other.purpose == n.purpose):
            return other
    return None


# --------------------------------------------------------------------------------------------
# stage 3: throttle
# --------------------------------------------------------------------------------------------



def occurred_text(event: dict[str, Any], tz: Any) -> str | None:
    """When an event occurred, school-local, as written — as the ledger shows it
    (:func:`escalator.school.ledger.occurred_cell`): a register's onset time
    (``labels.onset_at``) when it gave one, the date alone when it gave only the day
    (``labels.time: day``: never a made-up 00:00), else ``occurred_at``."""
    labels = event.get("labels") or {}
    text = labels.get("onset_at") or event.get("occurred_at")
    if not text:
        return None
    try:
        at = datetime.fromisoformat(str(text)).astimezone(tz)
    except ValueError:
        return None
    if labels.get("time") == "day" and not labels.get("onset_at"):
        return at.strftime("%Y-%m-%d")
    return at.strftime("%Y-%m-%d %H:%M")

class Throttle:
    """Rate limits per channel id (the channel class's ``rate_limits``, or
    ``overrides[channel_id]``) and per (channel id, address) (:data:`ADDRESS_LIMITS`).

    The per-address window is kept in the store (``Tx.rate_window``, key
    ``address:<channel id>:<address>``), read and written in the claim transaction that decides
    the send: so the limit holds across a restart and across several daemons on one database
    (the key is held until that transaction ends: two daemons decide one after the other). The
    per-channel window — the provider's limit, which the channel's own limiter
    (:func:`~escalator.delivery.ratelimit.shared_limiter`) enforces too — is one
    :class:`~escalator.delivery.ratelimit.RateLimiter` per channel id in memory, on the
    injected clock (UTC epoch seconds).
    """

    def __init__(self, clock: Clock, address_limits: Sequence[RateLimit] = ADDRESS_LIMITS,
                 overrides: Mapping[str, Sequence[RateLimit]] | None = None) -> None:
        self.clock = clock
        self.address_limits = tuple(address_limits)
        self.overrides = dict(overrides or {})
        self._limiters: dict[tuple[str, ...], RateLimiter] = {}

    def channel_limits(self, channel_id: str, channel: Any) -> tuple[RateLimit, ...]:
        """The limits for ``channel_id``: an override if set, else the channel's declared ones."""
        if channel_id in self.overrides:
            return tuple(self.overrides[channel_id])
        return tuple(getattr(channel, "rate_limits", ()) or ())

    def acquire(self, tx: Tx, channel_id: str, channel: Any, address: str,
                urgent: bool = False) -> float:
        """Take a slot in both windows and return 0, or return the seconds until both have
        room (taking nothing). ``tx``: the transaction deciding the send (the address window
        is written in it, so a rollback gives the slot back). ``urgent`` (a ``critical``
        message): only the channel's window applies — escalator's own per-address limit never
        holds a critical message back behind a storm (the channel's provider limits still do)."""
        limiter = self._limiter(("channel", channel_id), self.channel_limits(channel_id, channel))
        t = self._now()

        def address_window() -> float:  # kept in the store, written in the deciding transaction
            key = f"address:{channel_id}:{address}"
            horizon = max(lim.per_seconds for lim in self.address_limits)
            sends = [s for s in (s.timestamp() for s in tx.rate_window(key)) if s > t - horizon]
            if wait := window_wait(self.address_limits, sends, t):
                return wait
            tx.put_rate_window(key, [datetime.fromtimestamp(s, UTC) for s in (*sends, t)])
            return 0.0

        return acquire_all((limiter,), t,
                           also=None if urgent or not self.address_limits else address_window)

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _limiter(self, key: tuple[str, ...], limits: tuple[RateLimit, ...]) -> RateLimiter:
        """The limiter of ``key``, with ``limits`` in force (a reload or an override may
        change a channel's limits; the sends already counted stay)."""
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = RateLimiter(limits, now=self._now)
        limiter.limits = limits
        return limiter


def channel_hold(result: DeliveryResult) -> float | None:
    """Seconds to wait when the channel held the message back unsent for its own rate limit
    (:attr:`DeliveryResult.held_back`): its ``retry_after``, at least :data:`MIN_HOLD` and at
    most :data:`RETRY_MAX_DELAY`; else ``None``."""
    if not result.held_back or result.retry_after is None:
        return None
    seconds = 0.0 if math.isnan(result.retry_after) else result.retry_after
    return min(max(seconds, MIN_HOLD), RETRY_MAX_DELAY)


# --------------------------------------------------------------------------------------------
# stage 4: send
# --------------------------------------------------------------------------------------------


async def send(channel: Any, message: Message, timeout: float = SEND_TIMEOUT) -> DeliveryResult:
    """The channel's answer; a missing channel is permanent, an exception or a timeout
    (``timeout`` seconds) retryable — a channel bug never stops the worker."""
    if channel is None:
        return DeliveryResult(DeliveryStatus.failed_permanent, f"no channel {message.channel_id!r}")
    try:
        return await asyncio.wait_for(channel.send(message), timeout)
    except Exception as e:
        return DeliveryResult(DeliveryStatus.failed_retryable, f"{type(e).__name__}: {e}")


# --------------------------------------------------------------------------------------------
# stage 5: retry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What becomes of a row after an answer: its new ``status`` (``delivered``, ``pending``
    or ``failed``), counters, the next ``due_at`` (UTC) when pending, and whether to fail over."""

    status: str
    attempts: int
    first_attempt_at: datetime | None
    due_at: datetime | None = None
    failover: bool = False
    held: bool = False


def plan_hold(n: Notification, now: datetime, seconds: float) -> Plan:
    """Wait ``seconds`` for a rate limit: pending again, no attempt counted, and the retry
    deadline's start (``first_attempt_at``) moved forward by the wait so none of it is used."""
    due = later(now, seconds)
    first = n.first_attempt_at + (due - now) if n.first_attempt_at else None
    return Plan("pending", n.attempts, first, due_at=due, held=True)


def plan_queue(n: Notification, now: datetime, head: Notification) -> Plan:
    """Wait behind ``head``, an earlier row to the same channel and address that is still
    pending, so messages to one recipient go out in creation order: pending until the head's
    due time (claimed after it, by id), no attempt counted. The retry deadline runs from the
    first such wait, so when an address is down every message waiting for it fails over by the
    deadline, not one deadline after another."""
    due = head.due_at if head.due_at > now else later(now, 0)
    return Plan("pending", n.attempts, n.first_attempt_at or now, due_at=due, held=True)


def plan_next(n: Notification, result: DeliveryResult, started: datetime, now: datetime,
              rng: random.Random | None = None) -> Plan:
    """The retry decision: delivered; held back by the channel (:func:`plan_hold`); retry after
    :func:`backoff` while within :data:`RETRY_DEADLINE` seconds of the first attempt; else failed
    with failover."""
    if (hold := channel_hold(result)) is not None:
        return plan_hold(n, now, hold)
    first = n.first_attempt_at or started
    attempts = n.attempts + 1
    if result.status == DeliveryStatus.delivered:
        return Plan("delivered", attempts, first)
    if (result.status == DeliveryStatus.failed_retryable
            and (now - first).total_seconds() < RETRY_DEADLINE):
        return Plan("pending", attempts, first, due_at=later(now, backoff(attempts, rng)))
    return Plan("failed", attempts, first, failover=True)


# --------------------------------------------------------------------------------------------
# stage 4b: digest
# --------------------------------------------------------------------------------------------


def digest_text(config: Config, audience: str, others: Sequence[Incident]) -> str:
    """The lines added to a digest's first message for the ``others`` waiting behind it: how
    many, then up to :data:`DIGEST_LINES` incidents (id, severity, category; the summary only
    for a ``person`` audience — never pupil data for a group or a guardian). No acknowledge
    link: each incident's own link reaches its recipient in the incident's own messages, and
    the recipient acknowledges by id in the console or the CLI."""
    zh = config.school.language == "zh"
    lines = [f"另有 {len(others)} 条事件待处理：" if zh
             else f"{len(others)} more incidents are waiting:"]
    for inc in others[:DIGEST_LINES]:
        what = inc.summary if audience == "person" else inc.category
        lines.append(f"· #{inc.id} [{inc.severity}] {what[:60]}")
    if len(others) > DIGEST_LINES:
        more = len(others) - DIGEST_LINES
        lines.append(f"…… 及另外 {more} 条" if zh else f"… and {more} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# stage 6: record
# --------------------------------------------------------------------------------------------


ContactsOf = Callable[[Tx, Config, Notification, Incident], Sequence[Any]]
"""How failover finds a recipient's contact methods, in order: ``(tx, config, row, incident)``
→ the ``ContactMethod``s (the daemon and the harness give :meth:`Engine.contacts_of`, which asks
the rules for a rule's own recipients such as guardians)."""


def config_contacts(tx: Tx, config: Config, n: Notification, inc: Incident) -> Sequence[Any]:
    """The contact methods of a person or unit of ``config`` (nobody else)."""
    owner = (config.person(n.recipient_id) if n.recipient_kind == "person"
             else config.unit(n.recipient_id) if n.recipient_kind == "unit" else None)
    return owner.contacts if owner else ()


def record(tx: Tx, config: Config, n: Notification, inc: Incident, result: DeliveryResult,
           plan: Plan, body: str, now: datetime, digest_of: int | None = None, *,
           contacts_of: ContactsOf = config_contacts) -> None:
    """Write the attempt to the ledger, then the row's new state, the timeline and any failover
    (to the next of ``contacts_of``'s contact methods).

    ``digest_of``: the row went out inside the digest sent as notification ``digest_of``
    (another row); delivered, its ledger row is ``digested`` naming that notification. The
    first message of a step run delivered, or failed for good, starts the step's timeout
    (:func:`escalator.engine.engine.step_delivered`)."""
    detail = result.detail[:DETAIL_MAX]
    if digest_of is not None and plan.status == "delivered":
        tx.add_delivery(notification_id=n.id, at=now, outcome=DIGESTED,
                        detail=f"delivered in the digest sent as notification {digest_of}",
                        body="")
    else:
        tx.add_delivery(notification_id=n.id, at=now, outcome=result.status.value, detail=detail,
                        body=body)
    bound = log.bind(incident_id=inc.id, notification_id=n.id, channel=n.channel,
                     recipient=n.recipient_id)
    current = tx.get_notification(n.id)
    if current is None or current.status != "sending":  # cancelled while sending
        tx.update_notification(n.id, attempts=plan.attempts, first_attempt_at=plan.first_attempt_at)
        return
    if plan.status == "delivered":
        tx.update_notification(n.id, status="delivered", attempts=plan.attempts,
                               first_attempt_at=plan.first_attempt_at, updated_at=now)
        tx.add_timeline(inc.id, now, "notified", None,
                        {"recipient": n.recipient_id, "name": n.recipient_name,
                         "channel": n.channel, "notification_id": n.id,
                         **({"digest": digest_of} if digest_of is not None else {})})
        bound.info("notification_delivered", **({"digest": digest_of} if digest_of else {}))
        if n.step_run_id is not None:
            step_delivered(tx, config, n.step_run_id, now)
    elif plan.status == "pending":
        tx.update_notification(n.id, status="pending", attempts=plan.attempts, due_at=plan.due_at,
                               first_attempt_at=plan.first_attempt_at, last_error=detail,
                               updated_at=now)
        bound.warning("notification_held" if plan.held else "notification_retry",
                      attempts=plan.attempts, due_at=plan.due_at.isoformat(), detail=result.detail)
    else:
        tx.update_notification(n.id, status="failed", attempts=plan.attempts,
                               first_attempt_at=plan.first_attempt_at, last_error=detail,
                               updated_at=now)
        bound.warning("notification_failed", detail=result.detail)
        failover(tx, config, n, inc, now, result.detail, contacts_of)


def record_duplicate(tx: Tx, n: Notification, inc: Incident, twin: Notification,
                     now: datetime) -> None:
    """Mark ``n`` delivered by ``twin``'s message: a ledger row ``deduplicated``, no send."""
    tx.add_delivery(notification_id=n.id, at=now, outcome="deduplicated",
                    detail=f"same message as notification {twin.id}", body="")
    tx.update_notification(n.id, status="delivered", updated_at=now)
    tx.add_timeline(inc.id, now, "notified", None,
                    {"recipient": n.recipient_id, "name": n.recipient_name, "channel": n.channel,
                     "notification_id": n.id, "deduplicated_with": twin.id})
    log.info("notification_deduplicated", incident_id=inc.id, notification_id=n.id,
             channel=n.channel, same_as=twin.id)


def failover(tx: Tx, config: Config, n: Notification, inc: Incident, now: datetime,
             why: str, contacts_of: ContactsOf = config_contacts) -> None:
    """Queue the recipient's next contact method now, or log ``delivery_failed`` after the last."""
    contacts = contacts_of(tx, config, n, inc)
    nxt = n.contact_index + 1
    if nxt < len(contacts):
        c = contacts[nxt]
        tx.insert_notification(
            incident_id=n.incident_id, step_run_id=n.step_run_id, recipient_kind=n.recipient_kind,
            recipient_id=n.recipient_id, recipient_name=n.recipient_name, channel=c.channel,
            address=c.to, contact_index=nxt, status="pending", due_at=now, attempts=0,
            created_at=now, updated_at=now, ack_token=n.ack_token + f".{nxt}",
            needs_ack=n.needs_ack, purpose=n.purpose, note=n.note, priority=n.priority,
        )
        tx.add_timeline(inc.id, now, "failover", None,
                        {"recipient": n.recipient_id, "from": n.channel, "to": c.channel,
                         "reason": why[:200]})
    else:
        tx.add_timeline(inc.id, now, "delivery_failed", None,
                        {"recipient": n.recipient_id, "channel": n.channel, "reason": why[:200]})
        if n.step_run_id is not None:  # failed for good: the step's timeout counts from now
            step_delivered(tx, config, n.step_run_id, now)


# --------------------------------------------------------------------------------------------
# the worker
# --------------------------------------------------------------------------------------------


class Delivery:
    """Sends due notifications through the stages above. ``channels``: channel id → instance.

    ``db`` runs every store transaction of the worker: ``await db(fn, *args)`` (a
    :class:`~escalator.store.thread.Runner`, e.g. ``StoreThread.urgent`` in the daemon; default
    :func:`~escalator.store.thread.inline`, on the caller's thread); ``read`` runs its
    snapshot reads (the re-check before sends: ``StoreThread.read`` in the daemon, so a re-check
    never waits for an intake commit running on the store thread; default inline)."""

    metrics: Any = None  # an escalator.service.metrics.Metrics when the API serves /metrics
    observer: Callable[[Notification, DeliveryResult], None] | None = None
    """Called after each attempt is recorded (the daemon connects ``track_delivery`` here)."""

    def __init__(self, store: Store, config: Config, channels: dict[str, Any], clock: Clock,
                 render: Callable[[RenderContext], Rendered] = render_templates, *,
                 db: Runner = inline, read: Runner = inline) -> None:
        self.render = render
        self.db = db
        self.read = read
        self.store = store
        self.config = config
        self.channels = channels
        self.clock = clock
        self.throttle = Throttle(clock)
        self.node = LOCAL_NODE
        """The node (daemon) this worker claims rows for (``Settings.node_name`` in the daemon;
        docs/reliability.md "Several daemons")."""
        self.rng: random.Random | None = None
        """Jitter source for :func:`backoff` (``None``: the ``random`` module); tests pin it."""
        self._slots: dict[str, asyncio.Semaphore] = {}
        """Send slots per channel id (``delivery.concurrency_per_channel`` each)."""
        self.contacts_of: ContactsOf = config_contacts
        """Failover's contact methods of a recipient (the daemon and the harness set
        :meth:`Engine.contacts_of`, which knows the rules' recipients such as guardians)."""
        self._unrecorded: dict[int, tuple[Any, ...]] = {}
        """Attempts made whose ledger row could not be written yet (row id → record args)."""
        self.school_hours: Callable[[Config], SchoolHours | None] | None = None
        """The school hours of a config, for quiet hours (the daemon and the harness give the
        plugins' ``school_hours`` hook); None: no message waits for school hours."""
        self._hours: tuple[Config, SchoolHours | None] | None = None

    def reload(self, config: Config, channels: dict[str, Any]) -> None:
        """Use a new config and channels; throttle windows (keyed by channel id) carry over."""
        self.config, self.channels = config, channels

    def release_claims(self) -> int:
        """Return the rows this node (:attr:`node`) left ``sending`` in a crash to ``pending``
        (call once at start-up, before the worker runs; on the caller's thread). Other nodes'
        rows are theirs (released by ``release_dead_claims`` once their node is dead)."""
        with self.store.transaction() as tx:
            return tx.release_claims(self.node)

    def _tx(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        """``fn(tx, *args)`` inside one store transaction (what :attr:`db` runs)."""
        with self.store.transaction() as tx:
            return fn(tx, *args)

    def _snapshot(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        """``fn(tx, *args)`` on a snapshot of what is committed (what :attr:`read` runs)."""
        with self.store.snapshot() as tx:
            return fn(tx, *args)

    async def run_once(self, limit: int = 50) -> int:
        """Claim and process every due notification (up to ``limit``, most urgent first).
        Returns how many were claimed.

        Three store calls for the whole batch, not two per message: one transaction claims
        the rows and runs stages 1–3 for each (:meth:`_claim`); the sends of each (channel id,
        address) go in order, and before each send the row is re-checked — in one transaction
        for the rows about to take the free send slots of their channel (:meth:`_recheck`), so
        at most ``delivery.concurrency_per_channel`` rows per channel are re-checked and not
        yet sent at any moment (an acknowledgement's commit leaves at most that many sends
        going out); the attempts are recorded together at the end (one transaction).
        A lane is one (channel id, address): its rows one at a time, by priority then
        creation, or as one digest when more than ``delivery.digest.after`` of one priority
        wait (:meth:`_digest`); the lanes run at once.

        When the store cannot write (full disk, I/O error) the error is raised, after
        returning the claimed rows not yet sent to ``pending``; an attempt already made is
        kept in memory (its row stays ``sending``, so it is not sent again) and recorded first
        on the next call (:meth:`record_late`)."""
        await self.record_late()
        claimed, lanes = await self.db(self._tx, self._claim, self.clock.now(), limit)
        if not claimed:
            return 0
        width = self.config.delivery.concurrency_per_channel
        self._slots = {ch: asyncio.Semaphore(width) for ch, _ in lanes}
        batches: list[dict[int, tuple[Any, ...]]] = [{} for _ in lanes]
        requeue: dict[int, Plan | None] = {}
        done: set[int] = set()
        try:
            outcomes = await asyncio.gather(*(self._lane(units, b, done, requeue) for units, b
                                              in zip(lanes.values(), batches, strict=True)),
                                            return_exceptions=True)
        except BaseException:  # cancelled: keep what was sent, give back what was not
            outcomes = [asyncio.CancelledError()]
        batch = {k: v for b in batches for k, v in b.items()}
        if errors := [e for e in outcomes if isinstance(e, BaseException)]:
            self._unrecorded.update(batch)
            await self._unclaim([m.id for m in claimed
                                 if m.id not in done and m.id not in self._unrecorded])
            raise errors[0]
        await self._record(batch, requeue)
        return len(claimed)

    def _claim(self, tx: Tx, now: datetime, limit: int
               ) -> tuple[list[Notification], dict[tuple[str, str], list[tuple[Any, ...]]]]:
        """One transaction: claim up to ``limit`` due rows and run stages 1–3 for each
        (:meth:`_prepare`). Returns the claimed rows and, per (channel id, address), its units
        in order (priority, then id): ``(priority, id, "one", (row, incident, channel, event
        body, step run, reply code))`` ready to send, or ``(priority, id, "digest", rows)`` when digests
        are on and more than ``delivery.digest.after`` rows of one priority wait for the
        address (the other due rows of that address are claimed here too; as single messages,
        only as many as keep the pass at ``limit`` messages — the most one kill can make the
        next process send again). A row whose twin
        (same step run, channel, address, purpose) is earlier in the batch goes back to
        ``pending``: the next pass finds its twin on record (dedup)."""
        claimed = tx.claim_notifications(now, limit, self.node)
        digest = self.config.delivery.digest
        groups: dict[tuple[str, str, int], list[Notification]] = {}
        for n in claimed:
            groups.setdefault((n.channel, n.address, n.priority), []).append(n)
        lanes: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        twins: set[tuple[Any, ...]] = set()
        budget = limit - len(claimed)  # messages a pass sends: at most ``limit`` (crash bound)
        for (channel, address, priority), group in groups.items():
            units = lanes.setdefault((channel, address), [])
            if digest.enabled and priority != URGENT:
                more = tx.claim_address(channel, address, priority, now,
                                        max(0, DIGEST_MAX - len(group)), self.node)
                if len(group) + len(more) > digest.after:  # one message for all of them
                    rows = sorted(group + more, key=lambda n: n.id)
                    units.append((priority, rows[0].id, "digest", rows))
                    continue
                for n in more[budget:]:  # each would be a message of its own: not this pass
                    tx.update_notification(n.id, status="pending", updated_at=now)
                more = more[:budget]
                budget -= len(more)
                group = sorted(group + more, key=lambda n: n.id)
            for n in group:
                key = (n.step_run_id, n.channel, n.address, n.purpose)
                if n.step_run_id is not None and key in twins:
                    tx.update_notification(n.id, status="pending", updated_at=now)
                    continue
                if (prepared := self._prepare(tx, n, now)) is not None:
                    twins.add(key)
                    inc, channel_, first, run, code = prepared
                    units.append((priority, n.id, "one",
                                  (n, inc, channel_, first["body"] if first else {}, run, code)))
        for key in [k for k, units in lanes.items() if not units]:
            del lanes[key]
        for units in lanes.values():
            units.sort(key=lambda u: (u[0], u[1]))
        return claimed, lanes

    async def _lane(self, units: list[tuple[Any, ...]], batch: dict[int, tuple[Any, ...]],
                    done: set[int], requeue: dict[int, Plan | None]) -> None:
        """One (channel id, address): its units in order — prepared rows sent one at a time
        (:meth:`_send_rows`), digests as one message (:meth:`_digest`)."""
        rows: list[tuple[Any, ...]] = []
        for _, _, kind, payload in units:
            if kind == "one":
                rows.append(payload)
                continue
            if rows:
                await self._send_rows(rows, batch, done, requeue)
                rows = []
            await self._digest(payload, batch)
            done.update(n.id for n in payload)
        if rows:
            await self._send_rows(rows, batch, done, requeue)

    async def _send_rows(self, rows: list[tuple[Any, ...]], batch: dict[int, tuple[Any, ...]],
                         done: set[int], requeue: dict[int, Plan | None]) -> None:
        """Send prepared rows of one address in order. The next rows take the channel's free
        send slots (at least one, waiting for it), are re-checked together, and each is
        rendered and sent in turn, its slot given back after its send. After an attempt that
        is to be retried, the later rows of its priority wait behind it (:func:`plan_queue`:
        pending until its retry), so the recipient still gets them in creation order."""
        behind: dict[int, Notification] = {}  # priority → the row to be retried first
        i = 0
        while i < len(rows):
            slots = self._slot(rows[i][0].channel)
            await slots.acquire()
            take = 1
            while i + take < len(rows) and not slots.locked():
                await slots.acquire()  # free: returns at once
                take += 1
            group, i = rows[i:i + take], i + take
            held = len(group)  # slots of this group not given back yet
            try:
                live, dead = await self.read(self._snapshot, self._recheck,
                                             [r[0] for r in group])
                for n, inc, channel, event, run, code in group:
                    try:
                        if (head := behind.get(n.priority)) is not None:
                            requeue[n.id] = plan_queue(n, self.clock.now(), head)
                            continue
                        if n.id in dead:  # cancelled when the batch is recorded
                            requeue[n.id] = None
                            continue
                        if n.id not in live:
                            done.add(n.id)
                            continue
                        message, body = self._render(n, inc, channel, event, run, code)
                        started = self.clock.now()
                        result = await send(channel, message)
                        done.add(n.id)
                    finally:
                        held -= 1
                        slots.release()
                    now = self.clock.now()
                    plan = plan_next(n, result, started, now, self.rng)
                    if self.metrics is not None:
                        self.metrics.notification(n.channel, result.status.value)
                    batch[n.id] = (n, inc, result, plan, body, now)
                    if plan.status == "pending":
                        behind[n.priority] = replace(n, due_at=plan.due_at)
            finally:
                for _ in range(held):  # an error: the group's other slots back for other lanes
                    slots.release()

    @staticmethod
    def _recheck(tx: Tx, rows: list[Notification]) -> tuple[set[int], set[int]]:
        """Stage 1 for rows about to be sent, on a snapshot of what is committed (one read,
        no write): the ids of the rows that should still go out — still ``sending``, their
        incident neither resolved nor, for a row that needs an acknowledgement, acknowledged —
        and of those to be cancelled (as :func:`recheck` does; written with the batch's
        record). A row no longer ``sending`` is in neither: an acknowledgement cancelled it."""
        states = tx.sending_states([n.id for n in rows])
        live, dead = set(), set()
        for n in rows:
            state = states.get(n.id)
            if state is None:
                continue  # cancelled by an acknowledgement after the claim
            if state == "resolved" or (state == "acknowledged" and n.needs_ack):
                dead.add(n.id)
                continue
            live.add(n.id)
        return live, dead

    def _record_all(self, tx: Tx, batch: dict[int, tuple[Any, ...]],
                    requeue: dict[int, Plan | None] | None = None) -> None:
        for args in batch.values():
            record(tx, self.config, *args, contacts_of=self.contacts_of)
        for nid, plan in (requeue or {}).items():  # queued behind a retry (order per address)
            current = tx.get_notification(nid)
            if current is None or current.status != "sending":
                continue
            if plan is None:  # the re-check found its incident acknowledged or resolved
                tx.update_notification(nid, status="cancelled", updated_at=self.clock.now())
            else:
                tx.update_notification(nid, status="pending", due_at=plan.due_at,
                                       first_attempt_at=plan.first_attempt_at,
                                       updated_at=plan.due_at)

    async def _record(self, batch: dict[int, tuple[Any, ...]],
                      requeue: dict[int, Plan | None] | None = None) -> None:
        """Record attempts (row id → :func:`record` args), rows queued behind a retry
        (``requeue``: row id → :func:`plan_queue`'s plan) and rows the re-check found not to be
        sent (``requeue``: row id → None: cancelled), in one transaction — one fsync for
        a batch of sends; when the store cannot write, keep the attempts for
        :meth:`record_late` (their rows stay ``sending``, so they are not sent again) and
        raise."""
        if not batch and not requeue:
            return
        try:
            await self.db(self._tx, self._record_all, dict(batch), dict(requeue or {}))
        except Exception:
            self._unrecorded.update(batch)
            await self._unclaim(list(requeue or ()))
            raise
        for n, _, result, *_ in batch.values():
            self._observe(n, result)

    async def record_late(self) -> None:
        """Record the attempts whose record failed (oldest first); raises if the store still
        cannot write."""
        for nid, args in list(self._unrecorded.items()):
            await self.db(self._tx, self._record_all, {nid: args})
            del self._unrecorded[nid]
            log.warning("notification_recorded_late", notification_id=nid)
            self._observe(args[0], args[2])

    async def _unclaim(self, ids: list[int]) -> None:
        """Best effort: rows claimed but not sent go back to ``pending`` (else a restart does)."""
        if not ids:
            return

        def unclaim(tx: Tx) -> None:
            for nid in ids:
                current = tx.get_notification(nid)
                if current is not None and current.status == "sending":
                    tx.update_notification(nid, status="pending")
        try:
            await self.db(self._tx, unclaim)
        except Exception:
            log.exception("notifications_not_unclaimed", notification_ids=ids)

    def _quiet_until(self, tx: Tx, n: Notification, inc: Incident, now: datetime
                     ) -> datetime | None:
        """Stage 2a: when ``n`` must wait for school hours, until when (else None)."""
        quiet = self.config.quiet_hours
        if quiet is None or not quiet.enabled or self.school_hours is None:
            return None
        if self._hours is None or self._hours[0] is not self.config:  # once per (re)load
            self._hours = (self.config, self.school_hours(self.config))
        return quiet_until(self.config, self._hours[1], n, inc, first_event(tx, inc), now)

    def _ahead(self, tx: Tx, n: Notification, now: datetime) -> Notification | None:
        """Stage 2b's earlier row to wait behind (``Tx.waiting_ahead``), unless quiet hours
        hold it back now: an urgent message never waits behind a deferred one."""
        head = tx.waiting_ahead(n.channel, n.address, n.id, n.priority)
        if head is None or self.config.quiet_hours is None:
            return head
        inc = tx.get_incident(head.incident_id)
        return None if inc is not None and self._quiet_until(tx, head, inc, now) else head

    def _prepare(self, tx: Tx, n: Notification, now: datetime) -> tuple[Any, ...] | None:
        """Stages 1–3 for a claimed row, in one transaction: ``None`` when the row is done with
        (cancelled, deduplicated, queued or throttled), else what the send needs: the incident,
        the channel, the incident's first event, the step run and the reply code
        (:func:`escalator.delivery.reply_codes.assign`; None without one)."""
        inc = recheck(tx, n, now)
        if inc is None:
            return None
        if (twin := find_twin(tx, n)) is not None:
            record_duplicate(tx, n, inc, twin, now)
            return None
        if (until := self._quiet_until(tx, n, inc, now)) is not None:
            defer(tx, self.config, n, inc, until, now)  # quiet hours: the school morning
            return None
        if (head := self._ahead(tx, n, now)) is not None:
            plan = plan_queue(n, now, head)  # order per recipient: the earlier one first
            tx.update_notification(n.id, status="pending", due_at=plan.due_at,
                                   first_attempt_at=plan.first_attempt_at, updated_at=now)
            log.info("notification_queued", notification_id=n.id, channel=n.channel,
                     behind=head.id, due_at=plan.due_at.isoformat())
            return None
        channel = self.channels.get(n.channel)
        if wait := self.throttle.acquire(tx, n.channel, channel, n.address, n.priority == URGENT):
            plan = plan_hold(n, now, wait)
            tx.update_notification(n.id, status="pending", due_at=plan.due_at,
                                   first_attempt_at=plan.first_attempt_at, updated_at=now)
            log.info("notification_throttled", notification_id=n.id, channel=n.channel,
                     due_at=plan.due_at.isoformat())
            return None
        first = tx.get_event(inc.first_event_id) if inc.first_event_id else None
        run = tx.get_step_run(n.step_run_id) if n.step_run_id else None
        return inc, channel, first, run, reply_codes.assign(tx, self.config, n, channel, now)

    async def _deliver(self, n: Notification) -> None:
        """One claimed row on its own: re-check → dedup → throttle → render → send → retry →
        record, the re-check in its send slot just before the send."""
        async with self._slot(n.channel):
            prepared = await self.db(self._tx, self._prepare, n, self.clock.now())
            if prepared is None:
                return
            inc, channel, first, run, code = prepared
            message, body = self._render(n, inc, channel, first["body"] if first else {}, run,
                                         code)
            started = self.clock.now()
            result = await send(channel, message)
        now = self.clock.now()
        if self.metrics is not None:
            self.metrics.notification(n.channel, result.status.value)
        await self._record({n.id: (n, inc, result, plan_next(n, result, started, now, self.rng),
                                   body, now)})

    def _slot(self, channel_id: str) -> asyncio.Semaphore:
        """The channel's send slots for this :meth:`run_once` (a fresh one outside it)."""
        if channel_id not in self._slots:
            self._slots[channel_id] = asyncio.Semaphore(self.config.delivery.concurrency_per_channel)
        return self._slots[channel_id]

    def _prepare_digest(self, tx: Tx, rows: list[Notification], now: datetime
                        ) -> tuple[Any, ...] | None:
        """Stages 1–3 for the rows of a digest (one address, one priority, by id): the rows
        still wanted (re-check, dedup), then order and throttle for the whole digest as for its
        first row. ``None`` when nothing is to be sent now; else (rows, their incidents, the
        channel, the first row's first event and step run)."""
        live: list[tuple[Notification, Incident]] = []
        for n in rows:
            if (inc := recheck(tx, n, now)) is None:
                continue
            if (twin := find_twin(tx, n)) is not None:
                record_duplicate(tx, n, inc, twin, now)
                continue
            if (until := self._quiet_until(tx, n, inc, now)) is not None:
                defer(tx, self.config, n, inc, until, now)
                continue
            live.append((n, inc))
        if not live:
            return None
        head, inc = live[0]
        ahead = self._ahead(tx, head, now)
        channel = self.channels.get(head.channel)
        wait = 0.0 if ahead else self.throttle.acquire(tx, head.channel, channel, head.address)
        if ahead is not None or wait:
            for n, _ in live:
                plan = plan_queue(n, now, ahead) if ahead is not None else plan_hold(n, now, wait)
                tx.update_notification(n.id, status="pending", due_at=plan.due_at,
                                       first_attempt_at=plan.first_attempt_at, updated_at=now)
            log.info("digest_held", channel=head.channel, notifications=len(live),
                     due_at=plan.due_at.isoformat())
            return None
        first = tx.get_event(inc.first_event_id) if inc.first_event_id else None
        run = tx.get_step_run(head.step_run_id) if head.step_run_id else None
        return live, channel, first, run, reply_codes.assign(tx, self.config, head, channel, now)

    async def _digest(self, rows: list[Notification], batch: dict[int, tuple[Any, ...]]) -> None:
        """Send ``rows`` (one address, one priority, more than ``delivery.digest.after``) as one
        message: the first row's own message, then :func:`digest_text` for the others. The
        first row's attempt is recorded as usual; delivered, every other row is recorded
        delivered (``digested``, naming the first row); not delivered, every row records the
        attempt and is retried, held or failed over on its own (:func:`plan_next`)."""
        if batch:
            await self._record(batch)  # earlier sends to this address on record first
            batch.clear()
        async with self._slot(rows[0].channel):  # re-checked just before the send, in its slot
            prepared = await self.db(self._tx, self._prepare_digest, rows, self.clock.now())
            if prepared is None:
                return
            live, channel, first, run, code = prepared
            (head, inc), others = live[0], live[1:]
            message, body = self._render(head, inc, channel, first["body"] if first else {}, run,
                                         code)
            if others:
                audience = ("guardian" if head.recipient_kind == "guardian"
                            else getattr(channel, "audience", "person"))
                extra = digest_text(self.config, audience, [i for _, i in others])
                message = replace(message, body=f"{message.body}\n\n{extra}")
                body = f"{body}\n\n{extra}"
            started = self.clock.now()
            result = await send(channel, message)
        now = self.clock.now()
        if self.metrics is not None:
            self.metrics.notification(head.channel, result.status.value)
        first_plan = plan_next(head, result, started, now, self.rng)
        batch[head.id] = (head, inc, result, first_plan, body, now)
        for n, i in others:
            if result.status == DeliveryStatus.delivered and channel_hold(result) is None:
                plan = Plan("delivered", n.attempts, n.first_attempt_at or started)
            else:  # each row's own attempt and deadline; retried together with the first row
                plan = plan_next(n, result, started, now, self.rng)
                if plan.status == "pending" and first_plan.status == "pending":
                    plan = replace(plan, due_at=first_plan.due_at)
            batch[n.id] = (n, i, result, plan, "", now, head.id)
        log.info("digest_sent", notification_id=head.id, channel=head.channel,
                 notifications=len(live), outcome=result.status.value)

    def _observe(self, n: Notification, result: DeliveryResult) -> None:
        if self.observer is not None:
            try:
                self.observer(n, result)
            except Exception:
                log.exception("track_delivery_failed", notification_id=n.id)

    def _render(self, n: Notification, inc: Incident, channel: Any, event: dict[str, Any],
                run: Any, reply_code: str | None = None) -> tuple[Message, str]:
        """The message for ``n`` and the text kept in the ledger. ``event``: the incident's
        first event body; ``reply_code``: the recipient's reply code (docs/replies.md)."""
        step = (run.step_index, inc.policy["steps"][run.step_index].get("name")) if run else None
        ch = self.config.channels.get(n.channel)
        ctx = RenderContext(inc, n, self.config, audience=getattr(channel, "audience", "person"),
                            occurred_local=occurred_text(event, self.config.school.tz), step=step,
                            templates=dict(ch.templates) if ch is not None else {}, event=event,
                            reply_code=reply_code, now=self.clock.now())
        r = self.render(ctx)
        message = Message(n.id, inc.id, n.channel, n.address, n.recipient_name, r.title, r.body,
                          r.ack_hint, inc.drill, values=template_vars(ctx))
        return message, redact_links(f"{r.title}\n{r.body}") or ""  # no live link kept


