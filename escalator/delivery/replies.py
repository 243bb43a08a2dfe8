"""Answering from the phone (docs/replies.md): what an inbound reply does, and the answer.

An SMS (through a webhook: ``escalator/web/routers/replies.py``) or an e-mail reply
(:mod:`escalator.delivery.reply_mail`) arrives as an :class:`Inbound`. :meth:`ReplyDesk.handle`
matches the sender to the people and units of the config by phone number (mainland numbers
with or without ``+86``) or e-mail address, reads the reply (:func:`~escalator.delivery.
reply_codes.parse_reply`), finds the code (:mod:`escalator.delivery.reply_codes`) and acts
through the engine exactly as the message's acknowledge link would, with the recipient as the
actor and ``via`` ``sms`` or ``email`` in the timeline:

- ``1`` → :meth:`Engine.acknowledge` with the code's ack token (an ``escalate`` step stops the
  walk, a ``report`` step confirms this level and tells the next);
- ``2`` → ``Engine.decide(decision="handled")`` (已处置，无需上报): the text after the code is
  the reason ("2a 已联系家长接回"), else "短信回复 2：本级已处置，无需上报";
- ``3`` → ``Engine.decide(decision="report")`` (上报上一级).

Every reply gets an answer text (:class:`Handled`), in the school's language: what was done, or
why nothing was — an unknown sender, an expired or unknown code, several open incidents and no
code, not a reply. :meth:`ReplyDesk.answer` sends it through a channel directly (no outbox: an
unknown sender has no incident), at most :data:`ANSWER_LIMITS` per sender and
:data:`UNKNOWN_LIMITS` for all unknown senders together, so an auto-responder or a spoofed
number cannot make escalator loop or spend. Each reply is logged (``reply_handled``: outcome,
incident, recipient, the sender masked to its last four characters — never the text, which may
name a pupil).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

import structlog

from escalator.config.models import Config
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.ratelimit import RateLimit, RateLimiter, acquire_all
from escalator.delivery.reply_codes import parse_reply
from escalator.delivery.text import normalise_mobile
from escalator.engine.engine import NotFound
from escalator.store.base import ReplyCode

log = structlog.get_logger("escalator.delivery.replies")

ANSWER_LIMITS = (RateLimit(3, 600.0, "escalator: 3 answers to one sender in 10 minutes"),
                 RateLimit(20, 86400.0, "escalator: 20 answers to one sender a day"))
"""Answers to one sender (a loop with an auto-responder ends here)."""
UNKNOWN_LIMITS = (RateLimit(1, 3600.0, "escalator: 1 answer an hour to one unknown sender"),)
"""Answers to one unknown sender."""
UNKNOWN_TOTAL = (RateLimit(30, 3600.0, "escalator: 30 answers an hour to unknown senders"),)
"""Answers to all unknown senders together."""

ANSWERS = {
    "zh": {
        "acknowledged": "事件 #{id} 已确认，升级已停止。",
        "step_confirmed": "事件 #{id} 本级已确认，已通知上一级。",
        "step_confirmed_late": "事件 #{id} 已记录确认（本级已超时上报）。",
        "seen": "事件 #{id} 已知悉，已记录。",
        "already_acknowledged": "事件 #{id} 已被确认，无需再回复。",
        "already_resolved": "事件 #{id} 已解除，无需再回复。",
        "handled": "事件 #{id} 已记录为本级已处置，无需上报，事件已解除。",
        "not_allowed": "事件 #{id}：抄送人员不能作此决定，已记录为知悉。",
        "level_closed": "事件 #{id}：您这一级已由他人处理或已上报上一级，您的回复未改变处理进程。",
        "default_reason": "{via}回复 2：本级已处置，无需上报",
        "reported": "事件 #{id} 已上报上一级。",
        "recorded": "事件 #{id} 已记录您的回复（{outcome}）。",
        "unavailable": "事件 #{id}：暂不能通过短信办理此项，请使用通知中的确认链接。",
        "unknown_sender": "本号码未登记在学校联防联控通知名单中，回复未处理。请联系学校值班室。",
        "stale_code": "回复代码 {code} 已失效或不存在（事件已解除或已过期），未作处理。",
        "no_open": "您当前没有待处理的事件，回复未处理。",
        "choose": "您有多个待处理事件，请在数字后加代码回复：{choices}",
        "not_a_reply": "未能识别回复。请回复 1 确认、2 已处置无需上报、3 上报上一级；多个事件请加代码，如 1a。",
    },
    "en": {
        "acknowledged": "Incident #{id} acknowledged; escalation stopped.",
        "step_confirmed": "Incident #{id}: this level confirmed; the next level is being told.",
        "step_confirmed_late": "Incident #{id}: confirmation recorded (this level was overdue).",
        "seen": "Incident #{id}: noted as seen.",
        "already_acknowledged": "Incident #{id} was already acknowledged.",
        "already_resolved": "Incident #{id} is already resolved.",
        "handled": "Incident #{id} recorded as handled at your level; no report needed; resolved.",
        "not_allowed": "Incident #{id}: you were informed only and cannot decide this.",
        "level_closed": "Incident #{id}: your level has ended (reported on, or handled by "
                        "someone else); your reply changed nothing.",
        "default_reason": "Reply 2 by {via}: handled here, no report needed",
        "reported": "Incident #{id} reported to the next level.",
        "recorded": "Incident #{id}: your reply was recorded ({outcome}).",
        "unavailable": "Incident #{id}: this cannot be done by reply; use the link in the message.",
        "unknown_sender": "This number is not on the school's notification list; reply not processed.",
        "stale_code": "Reply code {code} has expired or does not exist; nothing was done.",
        "no_open": "You have no open incident; reply not processed.",
        "choose": "You have several open incidents; reply with the digit and a code: {choices}",
        "not_a_reply": "Reply not understood. Reply 1 to acknowledge, 2 handled, 3 report "
                       "upwards; add the code for one of several incidents, e.g. 1a.",
    },
}
"""The answers, per language; ``{id}``, ``{code}``, ``{choices}``, ``{outcome}`` filled in."""


VIA_WORD = {"sms": "短信", "email": "邮件"}
"""How a reply came, in the default reason of a ``2`` without one (zh)."""


@dataclass(frozen=True)
class Inbound:
    """One reply as it came in: ``sender`` (a phone number or e-mail address as the provider
    gives it), ``text``, ``via`` (``sms`` or ``email``) and ``source`` (the webhook's name, or
    ``email``)."""

    sender: str
    text: str
    via: str
    source: str


@dataclass(frozen=True)
class Handled:
    """What a reply did: ``outcome`` — an :class:`~escalator.engine.engine.ActionResult`
    outcome (``acknowledged``, ``step_confirmed``, ``already_resolved``, …, or a decision's)
    or ``unknown_sender``, ``stale_code``, ``no_open``, ``choose``, ``not_a_reply``,
    ``unavailable``; ``answer``: the text to answer with; ``incident_id`` and ``recipient``
    (``person:wang``) when known."""

    outcome: str
    answer: str
    incident_id: int | None = None
    recipient: str | None = None

    @property
    def known_sender(self) -> bool:
        return self.outcome != "unknown_sender"


def phone_key(address: str) -> str | None:
    """A phone number in one form for comparing: digits, a mainland number without ``+86`` /
    ``86``; None if ``address`` is no phone number."""
    number = normalise_mobile(address or "")
    if number is None:
        return None
    digits = number.lstrip("+")
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    return digits


def email_key(address: str) -> str | None:
    """The address part of ``address`` (``王老师 <Wang@School.cn>`` → ``wang@school.cn``),
    lower-case; None if there is none."""
    _, addr = parseaddr(address or "")
    return addr.strip().lower() if "@" in addr else None


def senders(config: Config, sender: str, via: str) -> list[tuple[str, str]]:
    """The recipients (``(kind, id)``: people, then units) with a contact method (or a unit's
    ``phone``) equal to ``sender``: by phone for ``via`` ``sms``, by address for ``email``."""
    key_of: Callable[[str], str | None] = email_key if via == "email" else phone_key
    key = key_of(sender)
    if key is None:
        return []
    found: list[tuple[str, str]] = []
    for kind, owners in (("person", config.people), ("unit", config.units)):
        for owner in owners:
            addresses = [c.to for c in owner.contacts] + [getattr(owner, "phone", None) or ""]
            if any(key_of(a) == key for a in addresses if a):
                found.append((kind, owner.id))
    return found


def mask(sender: str) -> str:
    """``sender`` for the log: its last four characters."""
    return f"…{sender[-4:]}" if len(sender) > 4 else "…"


class ReplyDesk:
    """Handles replies for one daemon (or test): ``engine`` (its ``config``, ``store``,
    ``acknowledge`` and ``decide``). ``now``: the limiters' clock (monotonic seconds)."""

    def __init__(self, engine: Any, now: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self._now = now
        self._limiters: dict[tuple[str, ...], RateLimiter] = {}

    @property
    def config(self) -> Config:
        return self.engine.config

    def _words(self) -> dict[str, str]:
        return ANSWERS.get(self.config.school.language, ANSWERS["zh"])

    def handle(self, inbound: Inbound) -> Handled:
        """Act on ``inbound`` (store transactions of its own; call it on the store thread) and
        say what to answer. Never raises for bad input; store errors propagate."""
        handled = self._handle(inbound)
        log.info("reply_handled", outcome=handled.outcome, via=inbound.via, source=inbound.source,
                 sender=mask(inbound.sender), incident_id=handled.incident_id,
                 recipient=handled.recipient)
        return handled

    def _handle(self, inbound: Inbound) -> Handled:
        w = self._words()
        who = senders(self.config, inbound.sender, inbound.via)
        if not who:
            return Handled("unknown_sender", w["unknown_sender"])
        reply = parse_reply(inbound.text)
        if reply is None:
            return Handled("not_a_reply", w["not_a_reply"], recipient=_name(who[0]))
        with self.engine.store.transaction() as tx:
            if reply.code is not None:
                rows = [r for k, i in who if (r := tx.reply_code(k, i, reply.code)) is not None]
            else:
                rows = [r for k, i in who for r in tx.reply_codes_of(k, i)
                        if r.incident_state == "triggered"]
        if reply.code is not None:
            row = rows[0] if rows else None
            if row is None or row.incident_state in (None, "resolved"):
                return Handled("stale_code", w["stale_code"].format(code=reply.code),
                               row.incident_id if row else None, _name(who[0]))
        elif not rows:
            return Handled("no_open", w["no_open"], recipient=_name(who[0]))
        elif len(rows) > 1:
            choices = "、".join(f"{r.code}（#{r.incident_id}）" for r in rows[:8])
            return Handled("choose", w["choose"].format(choices=choices), recipient=_name(who[0]))
        else:
            row = rows[0]
        return self._act(row, reply.action, inbound.via, reply.reason)

    def _act(self, row: ReplyCode, action: str, via: str, reason: str | None) -> Handled:
        w = self._words()
        who = f"{row.recipient_kind}:{row.recipient_id}"
        try:
            if action == "acknowledge":
                r = self.engine.acknowledge(token=row.ack_token, actor=row.recipient_id, via=via)
            else:
                decide = getattr(self.engine, "decide", None)
                if decide is None:
                    return Handled("unavailable", w["unavailable"].format(id=row.incident_id),
                                   row.incident_id, who)
                if action == "handled":
                    zh = self.config.school.language == "zh"
                    reason = reason or w["default_reason"].format(
                        via=VIA_WORD.get(via, via) if zh else via)
                r = decide(decision="handled" if action == "handled" else "report",
                           reason=reason if action == "handled" else None,
                           actor=row.recipient_id, via=via, token=row.ack_token)
        except ValueError:  # the engine's DecisionError: a decision it does not take here
            return Handled("unavailable", w["unavailable"].format(id=row.incident_id),
                           row.incident_id, who)
        except NotFound:
            return Handled("stale_code", w["stale_code"].format(code=row.code), row.incident_id, who)
        text = w.get(r.outcome) or w["recorded"]
        return Handled(r.outcome, text.format(id=r.incident_id, outcome=r.outcome), r.incident_id,
                       who)

    def may_answer(self, inbound: Inbound, handled: Handled) -> bool:
        """Whether an answer to ``inbound`` fits the limits (taking a slot when it does)."""
        limiters = [self._limiter((inbound.via, phone_key(inbound.sender) or email_key(
            inbound.sender) or inbound.sender), ANSWER_LIMITS)]
        if not handled.known_sender:
            limiters += [self._limiter(("unknown", inbound.sender), UNKNOWN_LIMITS),
                         self._limiter(("unknown",), UNKNOWN_TOTAL)]
        return acquire_all(limiters, self._now()) == 0

    def _limiter(self, key: tuple[str, ...], limits: tuple[RateLimit, ...]) -> RateLimiter:
        if key not in self._limiters:
            self._limiters[key] = RateLimiter(limits, now=self._now)
        return self._limiters[key]

    async def answer(self, inbound: Inbound, handled: Handled, channel: Any,
                     channel_id: str) -> DeliveryResult | None:
        """Send ``handled.answer`` to ``inbound.sender`` through ``channel`` (id ``channel_id``),
        unless the limits say no (None). Never raises: a failure is logged and returned."""
        if channel is None:
            log.warning("reply_not_answered", reason="no answer channel", source=inbound.source,
                        sender=mask(inbound.sender))
            return None
        if not self.may_answer(inbound, handled):
            log.warning("reply_not_answered", reason="answer limit", source=inbound.source,
                        sender=mask(inbound.sender), outcome=handled.outcome)
            return None
        email = inbound.via == "email"
        title = ("校园联防联控 回复处理结果" if self.config.school.language == "zh"
                 else "Reply processed") if email else handled.answer
        address = email_key(inbound.sender) or inbound.sender if email else inbound.sender
        message = Message(0, handled.incident_id or 0, channel_id, address, "", title,
                          handled.answer if email else "", None,
                          values={"title": handled.answer, "summary": handled.answer,
                                  "id": handled.incident_id})
        try:
            result = await channel.send(message)
        except Exception as e:  # a channel must not raise; if one does, the reply stays handled
            log.exception("reply_answer_failed", source=inbound.source, error=type(e).__name__)
            return DeliveryResult(DeliveryStatus.failed_retryable, type(e).__name__)
        log.info("reply_answered", source=inbound.source, sender=mask(inbound.sender),
                 channel=channel_id, outcome=handled.outcome, delivery=result.status.value)
        return result


def _name(who: tuple[str, str]) -> str:
    return f"{who[0]}:{who[1]}"


__all__ = ["ANSWERS", "Handled", "Inbound", "ReplyDesk", "email_key", "mask", "phone_key",
           "senders"]
