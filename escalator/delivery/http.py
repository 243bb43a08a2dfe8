"""HTTP for channels: the shared client, and what an HTTP answer or a transport error means.

Every HTTP channel maps an answer or an error the same way (:func:`classify_http`,
:func:`classify_robot_answer`, :func:`transport_failure`) and sends through the running loop's
one client (:func:`http_request`), — an aiohttp session (its HTTP parser in C: about
half the CPU of httpx/httpcore/anyio per message, bench/README.md) — which stays open while a
channel may use it and is closed when the last one releases it (:func:`use_client` / :func:`release_client`, called by
``ChannelBase.__init__`` and ``ChannelBase.aclose``: the channels a config reload builds count
before the ones it replaces are released, so a send in flight on an old one is not cut). A channel
never retries (``escalator.delivery.channels``): these helpers only classify. A channel
catches :data:`HTTP_ERRORS` around :func:`http_request` and maps them with
:func:`transport_failure`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx

from escalator.delivery.channels import DeliveryStatus
from escalator.delivery.text import short

HTTP_ERRORS = (aiohttp.ClientError, TimeoutError)
"""What :func:`http_request` raises when no answer came (connection, TLS, timeout, bad URL)."""

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
        if isinstance(cause, aiohttp.ClientConnectorCertificateError):
            cause = cause.certificate_error
        if isinstance(cause, ssl.SSLCertVerificationError):
            return DeliveryStatus.failed_permanent, f"TLS certificate not accepted: {cause.reason}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return DeliveryStatus.failed_retryable, f"timeout ({type(exc).__name__})"
    if isinstance(exc, aiohttp.InvalidURL | httpx.InvalidURL | httpx.UnsupportedProtocol):
        return DeliveryStatus.failed_permanent, f"invalid URL ({type(exc).__name__})"
    reason = str(exc) or type(exc).__name__
    return DeliveryStatus.failed_retryable, f"{type(exc).__name__}: {reason}"


class Answer:
    """An HTTP answer, read whole: ``status_code``, ``headers`` (case-insensitive), ``content``
    (bytes), :attr:`text` and :meth:`json` (as httpx's ``Response`` has them)."""

    __slots__ = ("charset", "content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes,
                 charset: str | None = None) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.charset = charset

    @property
    def text(self) -> str:
        """The body decoded by its charset (UTF-8 when none or unknown; bad bytes replaced)."""
        try:
            return self.content.decode(self.charset or "utf-8", "replace")
        except LookupError:
            return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not."""
        return json.loads(self.content)


def read_json(response: Answer) -> dict[str, Any] | None:
    """The JSON object of ``response``, or ``None`` if the body is not one."""
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


RATE_LIMIT_WORDS = ("too many", "too fast", "frequency", "freq", "rate limit", "限流", "频率")
"""Words in a service's error message that mean "slow down" whatever the code says."""


def classify_robot_answer(response: Answer, *, service: str, code_keys: tuple[str, ...],
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
                       content: bytes | None = None, params: Mapping[str, Any] | None = None,
                       headers: Mapping[str, str] | None = None) -> Answer:
    """One HTTP request on the running loop's shared client (:func:`shared_client`), its answer
    read whole. ``timeout`` seconds for each of: getting a connection (pool wait and connect),
    connecting, and each read of the answer; the pipeline's ``SEND_TIMEOUT`` bounds the whole
    send. Redirects are not followed; TLS is verified (:func:`tls_context`); proxies from
    ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` except ``NO_PROXY`` (:func:`proxy_for`). ``json_body`` is sent as UTF-8 JSON (not
    ASCII-escaped, so a Chinese character is 3 bytes, as the services count) with
    ``Content-Type: application/json; charset=utf-8``; ``content``: a raw body; ``params``: the
    query (values as text). Raises :data:`HTTP_ERRORS` (aiohttp's, and ``TimeoutError``)."""
    headers = dict(headers or {})
    if json_body is not None:
        headers = {"Content-Type": "application/json; charset=utf-8", **headers}
        content = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
    query = {k: v if isinstance(v, str | int | float) else str(v)
             for k, v in params.items()} if params else None
    limits = aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout,
                                   sock_read=timeout)
    client = shared_client()
    async with client.request(method, url, data=content, params=query, headers=headers,
                              timeout=limits, allow_redirects=False,
                              proxy=proxy_for(url, _PROXIES.get(client, {}))) as response:
        body = await response.read()
        return Answer(response.status, response.headers, body, response.charset)


def proxy_for(url: str, proxies: Mapping[str, str]) -> str | None:
    """The proxy for ``url`` from ``proxies`` (``urllib.request.getproxies()``: ``HTTP_PROXY``,
    ``HTTPS_PROXY``, ``ALL_PROXY``, with ``NO_PROXY`` for the exceptions), or None."""
    if not proxies:
        return None
    parts = urlsplit(url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxy


_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary())
_PROXIES: weakref.WeakKeyDictionary[aiohttp.ClientSession, dict[str, str]] = (
    weakref.WeakKeyDictionary())
_USERS: weakref.WeakSet[object] = weakref.WeakSet()


def shared_client() -> aiohttp.ClientSession:
    """The running loop's HTTP client (an aiohttp session), made on first use: connections are
    kept alive and reused, the proxy settings (the environment's, :func:`proxy_for`) and the
    TLS context are read once — a client per message cost ~2 ms of CPU and a new connection
    each time (bench/README.md). Not aiohttp's ``trust_env``: it reads ``~/.netrc`` on a thread
    for every request (~0.7 ms of CPU per message here)."""
    loop = asyncio.get_running_loop()
    client = _CLIENTS.get(loop)
    if client is None or client.closed:
        client = _CLIENTS[loop] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls_context()),
            skip_auto_headers=("User-Agent",), headers={"User-Agent": "escalator"})
        _PROXIES[client] = urllib.request.getproxies_environment()
    return client


def use_client(user: object) -> None:
    """Count ``user`` (a channel) as one that may send on the shared client, until
    :func:`release_client` (held weakly: a user that is garbage-collected counts no more)."""
    _USERS.add(user)


async def release_client(user: object) -> None:
    """``user`` sends no more; when no user is left, the running loop's client and its
    kept-alive connections are closed (a later request makes a new one). Nothing happens for
    a ``user`` not counted (:func:`use_client`) or already released."""
    if user not in _USERS:
        return
    _USERS.discard(user)
    if not _USERS:
        client = _CLIENTS.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()


_TLS: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """httpx's default verifying TLS context (certifi's CAs, or ``SSL_CERT_FILE``/``_DIR``),
    made once and shared: loading the CA bundle costs ~35 ms of CPU, too much for each message."""
    global _TLS
    if _TLS is None:
        _TLS = httpx.create_ssl_context()
    return _TLS
