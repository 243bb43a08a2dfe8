"""Signing in to the console: one-time links and sessions.

A person of the config (``people``; ``access`` not ``none``) asks for a link on the sign-in
page, or an administrator on the server runs ``escalator login-link PERSON_ID``. The link
carries a random token (:data:`TOKEN_BYTES` bytes), valid :data:`LINK_SECONDS` and usable once;
the store keeps only its SHA-256 digest (:meth:`escalator.store.base.ConsoleTx.add_login_token`).
The page behind the link only shows a button (chat apps prefetch links): the POST uses the
token and starts a session — a random cookie (HttpOnly, SameSite=Lax, Secure behind https),
stored as a digest with its own form token for CSRF (:class:`~escalator.store.base.ConsoleSession`).

A link asked for on the page goes to the person's own first contact method only (never a group
address), straight through that channel (:func:`escalator.delivery.pipeline.send`), like the
daemon's store alarm. Sign-in attempts are rate-limited per client address and per person
(:class:`Attempts`).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

import structlog

from escalator.config.models import Config, Person
from escalator.delivery.channels import DeliveryStatus, Message
from escalator.delivery.pipeline import send
from escalator.delivery.ratelimit import RateLimit, RateLimiter
from escalator.store.base import ConsoleSession, Store

log = structlog.get_logger(__name__)

LINK_SECONDS = 600
"""How long a sign-in link is valid (10 minutes)."""
TOKEN_BYTES = 24
"""Random bytes of a link token and of a session cookie."""
LINK_PATH = "/login/"
"""Where a sign-in link points: ``<base URL>/login/<token>``."""
ATTEMPTS_PER_ADDRESS = RateLimit(10, 600, "the console's own limit: 10 sign-in attempts per "
                                 "client address in 10 minutes")
LINKS_PER_PERSON = RateLimit(3, 600, "the console's own limit: 3 links per person in 10 minutes")


def digest(secret: str) -> str:
    """The stored form of a token or cookie: its SHA-256 hex digest."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def person_for(config: Config, person_id: str) -> Person | None:
    """The person ``person_id`` when they may sign in (``access`` not ``none``), else None."""
    p = config.person(person_id.strip())
    return p if p is not None and p.access != "none" else None


def base_url(config: Config, settings: Any, fallback: str | None = None) -> str:
    """The console's address for links: ``daemon.public_base_url`` (or the setting), else
    ``fallback`` (the request's own base URL), else ``http://<http_listen>``."""
    url = config.daemon.public_base_url or getattr(settings, "public_base_url", None) or fallback
    return (url or f"http://{settings.http_listen}").rstrip("/")


def new_link(store: Store, person_id: str, now: datetime) -> str:
    """Store a one-time token for ``person_id`` valid :data:`LINK_SECONDS` from ``now``
    (aware UTC) and return the token (the secret part of the link)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with store.transaction() as tx:
        tx.add_login_token(digest(token), person_id, now, now + timedelta(seconds=LINK_SECONDS))
    return token


def issue_link(store: Store, config: Config, settings: Any, person_id: str, now: datetime) -> str:
    """``escalator login-link``: a one-time sign-in URL for ``person_id``. Raises
    ``LookupError`` when there is no such person or they may not sign in."""
    person = person_for(config, person_id)
    if person is None:
        raise LookupError(f"no person {person_id!r} who may sign in (see people[].access)")
    token = new_link(store, person.id, now)
    log.info("console_link_issued", person_id=person.id, via="cli")
    return base_url(config, settings) + LINK_PATH + token


async def send_link(person: Person, url: str, channels: dict[str, Any], lang: str) -> bool:
    """Send sign-in link ``url`` to ``person`` through their first contact method (only that
    one: the person's own address). Returns whether the channel delivered it; never raises."""
    if not person.contacts:
        log.warning("console_link_not_sent", person_id=person.id, reason="no contact method")
        return False
    contact = person.contacts[0]
    if lang == "en":
        title, body = "escalator sign-in link", (
            f"Your escalator console sign-in link (valid 10 minutes, once): {url}\n"
            "If you did not ask for it, ignore this message.")
    else:
        title, body = "escalator 登录链接", (
            f"您的 escalator 控制台登录链接（10 分钟内有效，仅可使用一次）：{url}\n"
            "如非本人操作，请忽略本消息。")
    result = await send(channels.get(contact.channel),
                        Message(0, 0, contact.channel, contact.to, person.name, title, body, None))
    ok = result.status == DeliveryStatus.delivered
    log.info("console_link_sent" if ok else "console_link_not_sent", person_id=person.id,
             channel=contact.channel, **({} if ok else {"detail": result.detail}))
    return ok


def start_session(store: Store, token: str, now: datetime, hours: float
                  ) -> tuple[str, ConsoleSession] | None:
    """Use sign-in ``token`` (once) and start a session of ``hours``: ``(cookie value,
    session)``, or None for an unknown, used or expired token."""
    with store.transaction() as tx:
        person_id = tx.take_login_token(digest(token), now)
        if person_id is None:
            return None
        cookie = secrets.token_urlsafe(TOKEN_BYTES)
        session = ConsoleSession(person_id, secrets.token_urlsafe(18), now,
                                 now + timedelta(hours=hours))
        tx.add_session(digest(cookie), session)
    return cookie, session


def find_session(store: Store, cookie: str, now: datetime) -> ConsoleSession | None:
    """The live session of cookie value ``cookie``, or None."""
    if not cookie or len(cookie) > 200:
        return None
    with store.transaction() as tx:
        return tx.get_session(digest(cookie), now)


def end_session(store: Store, cookie: str) -> bool:
    """Sign out the session of ``cookie``; whether there was one."""
    with store.transaction() as tx:
        return tx.end_session(digest(cookie))


class Attempts:
    """Sign-in rate limits on the daemon's clock: :meth:`allow` takes one attempt for each
    key (``addr:<client>``, ``person:<id>``) or refuses (none taken) when one is over its
    limit."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._limiters: dict[str, RateLimiter] = {}

    def _limiter(self, key: str) -> RateLimiter:
        if key not in self._limiters:
            if len(self._limiters) > 10000:  # forget idle keys rather than grow without end
                self._limiters.clear()
            limit = LINKS_PER_PERSON if key.startswith("person:") else ATTEMPTS_PER_ADDRESS
            self._limiters[key] = RateLimiter([limit], now=lambda: self.clock.now().timestamp())
        return self._limiters[key]

    def allow(self, *keys: str) -> bool:
        """Whether every key has room now; if so one attempt is counted on each."""
        limiters = [self._limiter(k) for k in keys]
        t = self.clock.now().timestamp()
        if any(lim.wait(t) > 0 for lim in limiters):
            return False
        for lim in limiters:
            lim.try_acquire()
        return True
