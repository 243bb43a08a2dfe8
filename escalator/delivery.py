"""The delivery worker: claims due notification rows, re-checks state, renders, sends, records.

Only this module retries. A channel answers delivered / failed-retryable / failed-permanent;
a retryable failure is retried with exponential backoff and jitter (the due time is a row),
until :data:`RETRY_DEADLINE` seconds after the first attempt; then, or on a permanent failure,
the recipient's next contact method is tried (failover). Every attempt is a ``deliveries`` row
(the ledger). A crash between claim and record leaves the row ``sending``; start-up releases it,
so a message is sent at least once and at most once more than needed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from escalator.channels import DeliveryResult, DeliveryStatus, Message
from escalator.clock import Clock
from escalator.config.models import Config
from escalator.render import RenderContext, Rendered, render_templates
from escalator.store.base import Incident, Notification, Store, Tx

log = structlog.get_logger("escalator.delivery")

SEND_TIMEOUT = 30.0
"""Seconds one channel ``send`` may take before it counts as a retryable failure."""
RETRY_BASE = 5.0
"""First retry delay (seconds); doubled each attempt, capped at :data:`RETRY_MAX_DELAY`."""
RETRY_MAX_DELAY = 300.0
RETRY_DEADLINE = 900.0
"""Seconds after the first attempt after which a contact method is given up (failover)."""


def backoff(attempts: int, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempts`` (1-based): ``min(5·2^(n-1), 300)`` s, ±20 % jitter."""
    base = min(RETRY_BASE * 2 ** (attempts - 1), RETRY_MAX_DELAY)
    return base * (0.8 + 0.4 * (rng or random).random())


class Delivery:
    """Sends due notifications. ``channels``: channel id → channel instance."""

    metrics: Any = None  # an escalator.metrics.Metrics when the API serves /metrics
    observer: Callable[[Notification, DeliveryResult], None] | None = None
    """Called after each attempt is recorded (the daemon connects ``track_delivery`` here)."""

    def __init__(self, store: Store, config: Config, channels: dict[str, Any], clock: Clock,
                 render: Callable[[RenderContext], Rendered] = render_templates) -> None:
        self.render = render
        self.store = store
        self.config = config
        self.channels = channels
        self.clock = clock

    def reload(self, config: Config, channels: dict[str, Any]) -> None:
        self.config, self.channels = config, channels

    def release_claims(self) -> int:
        """Return rows left ``sending`` by a crash to ``pending`` (call once at start-up)."""
        with self.store.transaction() as tx:
            return tx.release_claims()

    async def run_once(self, limit: int = 50) -> int:
        """Claim and send every due notification (up to ``limit``). Returns how many were claimed."""
        with self.store.transaction() as tx:
            claimed = tx.claim_notifications(self.clock.now(), limit)
        for n in claimed:
            await self._deliver(n)
        return len(claimed)

    async def _deliver(self, n: Notification) -> None:
        with self.store.transaction() as tx:
            current = tx.get_notification(n.id)
            inc = tx.get_incident(n.incident_id)
            if current is None or inc is None or current.status != "sending":
                return  # cancelled by an acknowledgement after the claim
            if inc.state == "resolved" or (inc.state == "acknowledged" and n.needs_ack):
                tx.update_notification(n.id, status="cancelled", updated_at=self.clock.now())
                return
            occurred = self._occurred_local(tx, inc)
            run = tx.get_step_run(n.step_run_id) if n.step_run_id else None
        step = (run.step_index, inc.policy["steps"][run.step_index].get("name")) if run else None
        channel = self.channels.get(n.channel)
        audience = getattr(channel, "audience", "person")
        r = self.render(RenderContext(inc, n, self.config, audience=audience, occurred_local=occurred,
                                      step=step, templates=self._templates(n.channel)))
        message = Message(n.id, inc.id, n.channel, n.address, n.recipient_name, r.title, r.body,
                          r.ack_hint, inc.drill)
        started = self.clock.now()
        if channel is None:
            result = DeliveryResult(DeliveryStatus.failed_permanent, f"no channel {n.channel!r}")
        else:
            try:
                result = await asyncio.wait_for(channel.send(message), SEND_TIMEOUT)
            except Exception as e:  # a channel bug or timeout is retryable, never fatal
                result = DeliveryResult(DeliveryStatus.failed_retryable, f"{type(e).__name__}: {e}")
        self._record(n, inc, result, started, f"{r.title}\n{r.body}")
        if self.observer is not None:
            try:
                self.observer(n, result)
            except Exception:
                log.exception("track_delivery_failed", notification_id=n.id)

    def _templates(self, channel_id: str) -> dict[str, str]:
        ch = self.config.channels.get(channel_id)
        return dict(ch.templates) if ch is not None else {}

    def _occurred_local(self, tx: Tx, inc: Incident) -> str | None:
        ev = tx.get_event(inc.first_event_id) if inc.first_event_id else None
        when = ev["body"].get("occurred_at") if ev else None
        if not when:
            return None
        return datetime.fromisoformat(when).astimezone(self.config.school.tz).strftime("%Y-%m-%d %H:%M")

    def _record(self, n: Notification, inc: Incident, result: DeliveryResult, started: datetime,
                body: str) -> None:
        now = self.clock.now()
        first = n.first_attempt_at or started
        attempts = n.attempts + 1
        bound = log.bind(incident_id=inc.id, notification_id=n.id, channel=n.channel,
                         recipient=n.recipient_id)
        if self.metrics is not None:
            self.metrics.notification(n.channel, result.status.value)
        with self.store.transaction() as tx:
            tx.add_delivery(notification_id=n.id, at=now, outcome=result.status.value,
                            detail=result.detail[:500], body=body)
            if tx.get_notification(n.id).status != "sending":  # cancelled while sending
                tx.update_notification(n.id, attempts=attempts, first_attempt_at=first)
                return
            if result.status == DeliveryStatus.delivered:
                tx.update_notification(n.id, status="delivered", attempts=attempts,
                                       first_attempt_at=first, updated_at=now)
                tx.add_timeline(inc.id, now, "notified", None,
                                {"recipient": n.recipient_id, "name": n.recipient_name,
                                 "channel": n.channel, "notification_id": n.id})
                bound.info("notification_delivered")
                return
            retry = (result.status == DeliveryStatus.failed_retryable
                     and (now - first).total_seconds() < RETRY_DEADLINE)
            if retry:
                due = now + timedelta(seconds=backoff(attempts))
                tx.update_notification(n.id, status="pending", attempts=attempts, due_at=due,
                                       first_attempt_at=first, last_error=result.detail[:500],
                                       updated_at=now)
                bound.warning("notification_retry", attempts=attempts, detail=result.detail)
                return
            tx.update_notification(n.id, status="failed", attempts=attempts, first_attempt_at=first,
                                   last_error=result.detail[:500], updated_at=now)
            bound.warning("notification_failed", detail=result.detail)
            self._failover(tx, n, inc, now, result.detail)

    def _failover(self, tx: Tx, n: Notification, inc: Incident, now: datetime, why: str) -> None:
        owner = (self.config.person(n.recipient_id) if n.recipient_kind == "person"
                 else self.config.unit(n.recipient_id))
        contacts = owner.contacts if owner else []
        nxt = n.contact_index + 1
        if nxt < len(contacts):
            c = contacts[nxt]
            tx.insert_notification(
                incident_id=n.incident_id, step_run_id=n.step_run_id, recipient_kind=n.recipient_kind,
                recipient_id=n.recipient_id, recipient_name=n.recipient_name, channel=c.channel,
                address=c.to, contact_index=nxt, status="pending", due_at=now, attempts=0,
                created_at=now, updated_at=now, ack_token=n.ack_token + f".{nxt}",
                needs_ack=n.needs_ack, purpose=n.purpose, note=n.note,
            )
            tx.add_timeline(inc.id, now, "failover", None,
                            {"recipient": n.recipient_id, "from": n.channel, "to": c.channel,
                             "reason": why[:200]})
        else:
            tx.add_timeline(inc.id, now, "delivery_failed", None,
                            {"recipient": n.recipient_id, "channel": n.channel, "reason": why[:200]})
