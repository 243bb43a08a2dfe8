"""Shared helpers for channel plugins: options, secrets, length limits, answers, rate limits.

A built-in channel is a subclass of :class:`ChannelBase` with a pydantic options model
(:class:`ChannelOptions`), and uses the helpers here so that every channel:

- rejects unknown or bad options with one ``ValueError`` naming each (never echoing a value);
- keeps secrets out of ``repr``, ``DeliveryResult.detail`` and log lines (:func:`mask`,
  :class:`Redactor`, :func:`install_log_redaction`);
- fits its text to the service's documented limit (:func:`fit_text`, :func:`fit_sms`);
- maps an HTTP answer or a transport error the same way (:func:`classify_http`,
  :func:`transport_failure`);
- holds back a message locally instead of tripping a service's rate limit
  (:class:`RateLimit`, :func:`shared_limiter`).

A channel never retries (``escalator.delivery.channels``): these helpers only classify.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import ssl
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self
from urllib.parse import quote, quote_plus

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message

MASK = "***"
"""What a secret value is replaced with in ``repr``, details and logs."""

DETAIL_MAX = 300
"""Longest ``DeliveryResult.detail`` a built-in channel returns (characters)."""

ELLIPSIS = "…"
"""Marker put where :func:`fit_text` cut text out."""

NO_ADDRESS = ("", "-")
"""Addresses that mean "nobody in particular" on a group channel (no @-mention)."""


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------


class ChannelOptions(BaseModel):
    """Base of every channel's options model: unknown options are errors, values are frozen.

    Subclasses declare fields with pydantic; an option that is a Python keyword uses an alias
    (``from_: str = Field(alias="from")``). Build one with :meth:`parse`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> Self:
        """Validate ``options`` (secrets already resolved). Raises ``ValueError`` whose text
        names every unknown option and every bad one with the reason — never an option's value,
        since it may be a secret."""
        try:
            return cls.model_validate(dict(options or {}))
        except ValidationError as e:
            raise ValueError(describe_validation_error(cls, e)) from None

    @classmethod
    def stand_in(cls, name: str) -> Any:
        """The value checked in place of option ``name`` when the config gives it as
        ``name_env`` / ``name_file`` (the secret is read only when the daemon starts).

        Default :data:`STAND_IN`; override to return a value the option's own checks accept
        (Apprise: a URL Apprise understands). A stand-in's content errors are ignored anyway
        (see :meth:`check_unresolved`); this only keeps such checks quiet."""
        return STAND_IN

    @classmethod
    def check_unresolved(cls, options: Mapping[str, Any] | None) -> None:
        """Check ``options`` as written in the config, before ``*_env`` / ``*_file`` secrets
        are read (``check-config``, and the daemon before it reads them).

        Each secret-sourced option gets :meth:`stand_in`; only errors that the real value
        cannot change are reported: unknown and missing options, the other options' errors,
        and an option that cannot be a string at all (e.g. ``headers_env`` for a mapping).
        Errors about a stand-in's content are left to :meth:`parse` with the real value, when
        the daemon starts. Raises ``ValueError`` like :meth:`parse`."""
        options = dict(options or {})
        sources = secret_sources(options)
        option_of = {key: name for name, key in sources.items()}
        given: dict[str, list[str]] = {}
        for key in options:
            given.setdefault(option_of.get(key, key), []).append(key)
        twice = [f"option {name}: given more than once ({', '.join(keys)})"
                 for name, keys in given.items() if len(keys) > 1]
        if twice:
            raise ValueError("; ".join(twice))
        data = {option_of.get(key, key): cls.stand_in(option_of[key]) if key in option_of else value
                for key, value in options.items()}
        try:
            cls.model_validate(data)
        except ValidationError as e:
            errors = [x for x in e.errors(include_input=False, include_url=False)
                      if not (x["loc"] and x["loc"][0] in sources
                              and x["type"] != "extra_forbidden" and not x["type"].endswith("_type"))]
            if errors:
                raise ValueError(_describe(cls, errors, sources)) from None


SECRET_SUFFIXES = ("_env", "_file")
"""``KEY_env: VARIABLE`` / ``KEY_file: path`` give option ``KEY`` from the environment or a file
(read by :func:`escalator.config.load.resolve_secrets` when the daemon starts)."""

STAND_IN = "stand-in-secret"
"""Default value checked in place of a secret that is not read yet (:meth:`ChannelOptions.stand_in`)."""


def secret_sources(options: Mapping[str, Any]) -> dict[str, str]:
    """``{option: config key}`` for every option of ``options`` given as ``KEY_env`` /
    ``KEY_file`` (a string value, as :func:`~escalator.config.load.resolve_secrets` reads)."""
    return {key[: -len(suffix)]: key for key, value in options.items() for suffix in SECRET_SUFFIXES
            if key.endswith(suffix) and len(key) > len(suffix) and isinstance(value, str)}


def name_sources(text: str, sources: Mapping[str, str]) -> str:
    """``text`` with each ``option KEY`` of a secret-sourced option written
    ``option KEY (from KEY_env)``, so an error names the key the config file has."""
    for name, key in sources.items():
        text = re.sub(rf"\boption {re.escape(name)}\b(?! \(from )", f"option {name} (from {key})", text)
    return text


def describe_validation_error(model: type[BaseModel], err: ValidationError) -> str:
    """One line per problem of ``err``, without input values (pydantic's own text echoes them).

    Unknown options are grouped into one line that lists the known ones.
    """
    return _describe(model, err.errors(include_input=False, include_url=False), {})


def _describe(model: type[BaseModel], errors: Iterable[Any], sources: Mapping[str, str]) -> str:
    unknown: list[str] = []
    problems: list[str] = []
    for e in errors:
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            unknown.append(sources.get(loc, loc))
        elif e["type"] == "missing":
            problems.append(f"option {loc}: required")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"option {loc}: {msg}" if loc else msg)
    if unknown:
        known = sorted(f.alias or name for name, f in model.model_fields.items())
        problems.insert(0, f"unknown option{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(repr(u) for u in unknown)} (known: {', '.join(known)})")
    return name_sources("; ".join(problems), sources)


def check_http_url(value: str) -> str:
    """``value`` if it is an absolute ``http://`` or ``https://`` URL with a host, else
    ``ValueError`` (the value is not repeated: a URL may carry a token)."""
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError):
        raise ValueError("must be an http:// or https:// URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL")
    return value


# --------------------------------------------------------------------------------------------
# secrets
# --------------------------------------------------------------------------------------------


def mask(options: BaseModel | Mapping[str, Any], secret_options: Iterable[str]) -> dict[str, Any]:
    """``options`` as a plain dict (by alias) with every secret value replaced by ``"***"``.

    A secret mapping (e.g. HTTP headers) keeps its keys and masks each value; a secret list
    masks each item; an unset secret (``None`` / empty) is shown as is, so "not configured"
    stays visible.
    """
    data = options.model_dump(by_alias=True) if isinstance(options, BaseModel) else dict(options)
    secret = set(secret_options)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in secret or value in (None, "", [], {}):
            out[key] = value
        elif isinstance(value, Mapping):
            out[key] = {k: MASK for k in value}
        elif isinstance(value, list | tuple):
            out[key] = [MASK for _ in value]
        else:
            out[key] = MASK
    return out


def secret_values(options: BaseModel | Mapping[str, Any], secret_options: Iterable[str]) -> list[str]:
    """Every string inside the secret options of ``options`` (nested in mappings and lists)."""
    data = options.model_dump(by_alias=True) if isinstance(options, BaseModel) else dict(options)
    found: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            found.append(v)
        elif isinstance(v, Mapping):
            for x in v.values():
                walk(x)
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)

    for key in secret_options:
        walk(data.get(key))
    return found


class Redactor:
    """Replaces known secret strings (and their URL-encoded forms) in text with ``"***"``.

    Strings shorter than :attr:`MIN_LEN` are not searched for (they would mangle ordinary
    text); no real token, key or password is that short.
    """

    MIN_LEN = 4

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._needles: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Add secret values to look for."""
        for s in secrets:
            if isinstance(s, str) and len(s) >= self.MIN_LEN:
                self._needles.update({s, quote(s, safe=""), quote_plus(s)})

    def __bool__(self) -> bool:
        return bool(self._needles)

    def scrub(self, text: str) -> str:
        """``text`` with every known secret replaced (longest first, so overlaps stay hidden)."""
        for needle in sorted(self._needles, key=len, reverse=True):
            if needle in text:
                text = text.replace(needle, MASK)
        return text


_LOG_REDACTOR = Redactor()
_LOG_LOCK = threading.Lock()


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _LOG_REDACTOR:
            try:
                text = record.getMessage()
            except Exception:  # a malformed record is the logger's problem, not ours
                return True
            clean = _LOG_REDACTOR.scrub(text)
            if clean != text:
                record.msg, record.args = clean, None
        return True


REDACTED_LOGGERS = ("httpx", "apprise")
"""Third-party loggers whose lines may carry a webhook URL or token (httpx logs every request
URL at INFO; the DingTalk and WeCom tokens are query parameters, the Feishu token is a path)."""

_FILTER = _RedactingFilter()


def install_log_redaction(secrets: Iterable[str]) -> None:
    """Scrub ``secrets`` from every line the :data:`REDACTED_LOGGERS` log from now on."""
    with _LOG_LOCK:
        _LOG_REDACTOR.add(secrets)
        for name in REDACTED_LOGGERS:
            lg = logging.getLogger(name)
            if _FILTER not in lg.filters:
                lg.addFilter(_FILTER)


# --------------------------------------------------------------------------------------------
# length limits
# --------------------------------------------------------------------------------------------


def utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes (WeCom's 2,048-byte limit is counted this way)."""
    return len(text.encode("utf-8"))


def json_len(text: str) -> int:
    """Bytes ``text`` takes as a JSON string value (UTF-8, ``ensure_ascii=False``), without
    the quotes: escapes such as ``\\n`` count as two bytes."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8")) - 2


def fit_text(text: str, limit: int, *, measure: Callable[[str], int] = len,
             keep_tail: str = "", marker: str = ELLIPSIS) -> str:
    """``text`` cut to at most ``limit`` units of ``measure`` (``len`` = characters,
    :func:`utf8_len` = bytes), whole characters only.

    When cut, ``marker`` ends the kept part. If ``keep_tail`` is given and ``text`` ends with
    it (e.g. the acknowledge link), the tail is kept whole and the cut is made before it, as
    long as the tail and marker fit; otherwise the text is simply cut at the end. Raises
    ``ValueError`` if ``limit`` cannot even hold the marker. ``measure`` must grow with the
    prefix length (true for characters, bytes and JSON-escaped bytes).
    """
    if measure(text) <= limit:
        return text
    if measure(marker) > limit:
        raise ValueError(f"limit {limit} is too small for any text")
    head, tail = text, ""
    if keep_tail and text.endswith(keep_tail):
        before = text[: len(text) - len(keep_tail)]
        stripped = before.rstrip("\n")  # the line break before the tail belongs to the tail
        if measure(marker + before[len(stripped):] + keep_tail) <= limit:
            head, tail = stripped, before[len(stripped):] + keep_tail
    budget = limit - measure(marker + tail)
    lo, hi = 0, len(head)  # largest n with measure(head[:n]) <= budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(head[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return head[:lo].rstrip() + marker + tail


# SMS: 3GPP TS 23.038 GSM 7-bit default alphabet; characters of the extension table take two
# septets. One SMS carries 140 octets: 160 GSM-7 characters or 70 UCS-2 (UTF-16) code units; a
# part of a concatenated SMS loses 6 octets to the user-data header: 153 or 67. Chinese
# carriers bill the same way (≤70 characters one message, longer ones per 67).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")
SMS_SINGLE = {"gsm7": 160, "ucs2": 70}
SMS_PART = {"gsm7": 153, "ucs2": 67}


def sms_encoding(text: str) -> str:
    """``"gsm7"`` if every character is in the GSM 7-bit alphabet, else ``"ucs2"``."""
    return "gsm7" if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text) else "ucs2"


def sms_units(text: str, encoding: str) -> int:
    """Length of ``text`` in SMS units: septets for ``gsm7`` (extension characters count 2),
    UTF-16 code units for ``ucs2`` (a character outside the BMP counts 2)."""
    if encoding == "gsm7":
        return sum(2 if c in GSM7_EXTENDED else 1 for c in text)
    return len(text.encode("utf-16-be")) // 2


def sms_segments(text: str, encoding: str = "auto") -> int:
    """How many SMS parts ``text`` takes (0 for empty). ``encoding``: ``auto`` (GSM-7 when
    possible), ``gsm7`` or ``ucs2`` (a modem told ``Alphabet: UCS2`` always uses UCS-2)."""
    enc = sms_encoding(text) if encoding == "auto" else encoding
    n = sms_units(text, enc)
    if n == 0:
        return 0
    if n <= SMS_SINGLE[enc]:
        return 1
    return -(-n // SMS_PART[enc])


def sms_capacity(segments: int, encoding: str) -> int:
    """Most units ``segments`` SMS parts hold: 70 / 160 for one, 67·n / 153·n for more."""
    return SMS_SINGLE[encoding] if segments == 1 else SMS_PART[encoding] * segments


def fit_sms(text: str, max_segments: int, *, encoding: str = "auto", keep_tail: str = "") -> str:
    """``text`` cut (see :func:`fit_text`) so it takes at most ``max_segments`` SMS parts.

    With ``encoding="auto"`` the cut text may become GSM-7 only if the dropped part held every
    non-GSM character; the capacity is computed for the encoding of the whole text, which is
    never smaller than needed.
    """
    if max_segments < 1:
        raise ValueError("max_segments must be at least 1")
    enc = sms_encoding(text) if encoding == "auto" else encoding
    return fit_text(text, sms_capacity(max_segments, enc),
                    measure=lambda s: sms_units(s, enc), keep_tail=keep_tail)


def message_text(message: Message) -> tuple[str, str]:
    """The plain text a chat or SMS channel sends for ``message`` — the title, a newline, the
    body — and the tail to keep whole when fitting (the acknowledge hint, if the body ends
    with it)."""
    text = f"{message.title}\n{message.body}" if message.body else message.title
    tail = message.ack_hint if message.ack_hint and text.endswith(message.ack_hint) else ""
    return text, tail


# --------------------------------------------------------------------------------------------
# answers
# --------------------------------------------------------------------------------------------


RETRYABLE_HTTP = frozenset({408, 425, 429})
"""4xx statuses that mean "later" (RFC 9110 408 Request Timeout, RFC 8470 425 Too Early,
RFC 6585 429 Too Many Requests); every other 4xx is the request's fault."""


def classify_http(status: int) -> DeliveryStatus | None:
    """What an HTTP status says on its own: ``None`` for 2xx (read the body to decide);
    retryable for 5xx and :data:`RETRYABLE_HTTP`; permanent for other 4xx and for 1xx/3xx
    (redirects are not followed: a moved webhook is a configuration error)."""
    if 200 <= status < 300:
        return None
    if status >= 500 or status in RETRYABLE_HTTP:
        return DeliveryStatus.failed_retryable
    return DeliveryStatus.failed_permanent


def transport_failure(exc: BaseException) -> tuple[DeliveryStatus, str]:
    """Status and detail for an exception raised while talking to a service over HTTP.

    Timeouts and connection errors are retryable; a TLS certificate that does not verify, or
    an invalid URL, is permanent (waiting will not fix a configuration error). The detail
    names the exception class only plus a short reason; callers still scrub it.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return DeliveryStatus.failed_permanent, f"TLS certificate not accepted: {cause.reason}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.TimeoutException):
        return DeliveryStatus.failed_retryable, f"timeout ({type(exc).__name__})"
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return DeliveryStatus.failed_permanent, f"invalid URL ({type(exc).__name__})"
    reason = str(exc) or type(exc).__name__
    return DeliveryStatus.failed_retryable, f"{type(exc).__name__}: {reason}"


def read_json(response: httpx.Response) -> dict[str, Any] | None:
    """The JSON object of ``response``, or ``None`` if the body is not one."""
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


RATE_LIMIT_WORDS = ("too many", "too fast", "frequency", "freq", "rate limit", "限流", "频率")
"""Words in a service's error message that mean "slow down" whatever the code says."""


def classify_robot_answer(response: httpx.Response, *, service: str, code_keys: tuple[str, ...],
                          msg_keys: tuple[str, ...], retryable: Mapping[int, str],
                          known: Mapping[int, str] | None = None) -> tuple[DeliveryStatus, str]:
    """Status and detail for a chat robot's answer (DingTalk, WeCom, Feishu).

    Rules, in order: HTTP 5xx is retryable; a JSON answer with a code (the first of
    ``code_keys`` present) decides next — 0 with HTTP 2xx is delivered, a code in
    ``retryable`` or a message containing one of :data:`RATE_LIMIT_WORDS` is retryable, any
    other code is permanent (a bad token, signature, keyword or payload does not heal by
    waiting; the delivery stage fails over at once); without a code the HTTP status decides
    (:func:`classify_http`), and a 2xx answer without one is retryable (something between us
    and the service answered). ``known`` adds an explanation to the detail for documented codes.
    """
    status = response.status_code
    if status >= 500:
        return DeliveryStatus.failed_retryable, f"HTTP {status}"
    data = read_json(response)
    code_key = next((k for k in code_keys if data is not None and k in data), None)
    if data is None or code_key is None:
        by_http = classify_http(status)
        if by_http is None:
            return DeliveryStatus.failed_retryable, f"HTTP {status} without a {service} answer code"
        return by_http, f"HTTP {status}"
    try:
        code = int(data[code_key])
    except (TypeError, ValueError):
        return DeliveryStatus.failed_retryable, f"{service} answered {code_key}={short(data[code_key], 40)}"
    msg = next((str(data[k]) for k in msg_keys if data.get(k)), "")
    why = (known or {}).get(code) or retryable.get(code) or ""
    detail = f"{service} {code_key} {code}" + (f": {short(msg)}" if msg else "") + (f" ({why})" if why else "")
    if code == 0:
        if 200 <= status < 300:
            return DeliveryStatus.delivered, detail
        return classify_http(status) or DeliveryStatus.failed_retryable, f"HTTP {status}; {detail}"
    lowered = msg.lower()
    if code in retryable or any(w in lowered for w in RATE_LIMIT_WORDS):
        return DeliveryStatus.failed_retryable, detail
    return DeliveryStatus.failed_permanent, detail


async def http_request(method: str, url: str, *, timeout: float, json_body: Any = None,
                       **kwargs: Any) -> httpx.Response:
    """One HTTP request on the running loop's shared client (:func:`shared_client`):
    ``timeout`` seconds for each of connect, read, write and pool; redirects are not followed.
    ``json_body`` is sent as UTF-8 JSON (not ASCII-escaped, so a Chinese character is 3 bytes,
    as the services count) with ``Content-Type: application/json; charset=utf-8``. Raises
    httpx's exceptions unchanged."""
    if json_body is not None:
        headers = {"Content-Type": "application/json; charset=utf-8", **kwargs.pop("headers", {})}
        kwargs.update(content=json.dumps(json_body, ensure_ascii=False).encode("utf-8"),
                      headers=headers)
    return await shared_client().request(method, url, timeout=timeout, **kwargs)


_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary())


def shared_client() -> httpx.AsyncClient:
    """The running loop's HTTP client, made on first use: connections are kept alive and
    reused, and the proxy settings and TLS context are read once — a client per message cost
    ~2 ms of CPU and a new connection each time (bench/README.md). Redirects are not followed."""
    loop = asyncio.get_running_loop()
    client = _CLIENTS.get(loop)
    if client is None or client.is_closed:
        client = _CLIENTS[loop] = httpx.AsyncClient(follow_redirects=False, verify=tls_context())
    return client


_TLS: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """httpx's default verifying TLS context (certifi's CAs, or ``SSL_CERT_FILE``/``_DIR``),
    made once and shared: loading the CA bundle costs ~35 ms of CPU, too much for each message."""
    global _TLS
    if _TLS is None:
        _TLS = httpx.create_ssl_context()
    return _TLS


def short(text: str, limit: int = 120) -> str:
    """``text`` on one line, at most ``limit`` characters (for service messages in details)."""
    return fit_text(" ".join(str(text).split()), limit)


# --------------------------------------------------------------------------------------------
# rate limits
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` messages per ``per_seconds`` seconds, as documented by ``source``."""

    count: int
    per_seconds: float
    source: str = ""


class RateLimiter:
    """Sliding-window limiter over several :class:`RateLimit` windows.

    :meth:`try_acquire` records a send and returns 0 if every window has room, else returns
    the seconds until one would (and records nothing). ``now`` is a monotonic clock in
    seconds, replaceable in tests.
    """

    def __init__(self, limits: Iterable[RateLimit], now: Callable[[], float] = time.monotonic) -> None:
        self.limits = tuple(limits)
        self.now = now
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def try_acquire(self) -> float:
        with self._lock:
            t = self.now()
            horizon = max((lim.per_seconds for lim in self.limits), default=0.0)
            while self._sent and self._sent[0] <= t - horizon:
                self._sent.popleft()
            wait = 0.0
            for lim in self.limits:
                recent = [s for s in self._sent if s > t - lim.per_seconds]
                if len(recent) >= lim.count:
                    wait = max(wait, recent[-lim.count] + lim.per_seconds - t)
            if wait > 0:
                return wait
            self._sent.append(t)
            return 0.0


_LIMITERS: dict[tuple[str, str], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def shared_limiter(type_name: str, identity: str, limits: Iterable[RateLimit]) -> RateLimiter:
    """The one limiter for robot ``identity`` (its token) of channel type ``type_name``.

    Shared so two channel ids on the same robot, and the channel rebuilt by a config reload,
    count against the same window. Only a hash of ``identity`` is kept.
    """
    key = (type_name, hashlib.sha256(identity.encode("utf-8")).hexdigest())
    with _LIMITERS_LOCK:
        if key not in _LIMITERS:
            _LIMITERS[key] = RateLimiter(limits)
        return _LIMITERS[key]


# --------------------------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------------------------


class ChannelBase:
    """Common shape of the built-in channels.

    Class attributes a subclass sets: ``type_name``, ``audience`` (``"person"`` or
    ``"group"``), ``options_model`` (a :class:`ChannelOptions` subclass), ``secret_options``
    (option names whose values are secrets), ``max_body_chars`` or ``max_body_bytes`` (``None``
    when the service documents no limit), ``rate_limits`` (documented service limits).

    ``__init__`` validates the options (``ValueError`` naming each problem), keeps them in
    ``self.options`` and registers the secret values for scrubbing; ``repr`` masks them; use
    :meth:`result` to build every :class:`DeliveryResult` so its detail is scrubbed and short.
    """

    type_name: ClassVar[str] = ""
    audience: ClassVar[str] = "person"
    options_model: ClassVar[type[ChannelOptions]] = ChannelOptions
    secret_options: ClassVar[frozenset[str]] = frozenset()
    max_body_chars: ClassVar[int | None] = None
    max_body_bytes: ClassVar[int | None] = None
    rate_limits: ClassVar[tuple[RateLimit, ...]] = ()

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None:
        self.channel_id = channel_id
        self.options = self.options_model.parse(options)
        self.redactor = Redactor(secret_values(self.options, self.secret_options))
        install_log_redaction(secret_values(self.options, self.secret_options))

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.channel_id!r} "
                f"{mask(self.options, self.secret_options)!r}>")

    def result(self, status: DeliveryStatus, detail: str = "") -> DeliveryResult:
        """A :class:`DeliveryResult` whose detail has no secret and at most :data:`DETAIL_MAX`
        characters."""
        clean = self.redactor.scrub(detail)
        if len(clean) > DETAIL_MAX:
            clean = fit_text(clean, DETAIL_MAX)
        return DeliveryResult(status, clean)

    def failure(self, exc: BaseException) -> DeliveryResult:
        """The result for an exception raised by an HTTP call (see :func:`transport_failure`)."""
        status, detail = transport_failure(exc)
        return self.result(status, detail)


MOBILE_RE = re.compile(r"^\+?[0-9][0-9 -]{4,19}$")
"""A phone number as people write it: digits, optional leading ``+``, spaces or dashes."""


def normalise_mobile(address: str) -> str | None:
    """``address`` as digits (a leading ``+`` kept), or ``None`` if it is no phone number."""
    a = address.strip()
    if not MOBILE_RE.match(a):
        return None
    return ("+" if a.startswith("+") else "") + re.sub(r"[^0-9]", "", a)
