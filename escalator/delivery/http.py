"""HTTP for channels: the shared client, and what an HTTP answer or a transport error means.

Every HTTP channel maps an answer or an error the same way (:func:`classify_http`,
:func:`classify_robot_answer`, :func:`transport_failure`) and sends through the running loop's
one client (:func:`http_request`), which stays open while a channel may use it and is closed
when the last one releases it (:func:`use_client` / :func:`release_client`, called by
``ChannelBase.__init__`` and ``ChannelBase.aclose``: the channels a config reload builds count
before the ones it replaces are released, so a send in flight on an old one is not cut). A channel
never retries (``escalator.delivery.channels``): these helpers only classify.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import weakref
from collections.abc import Mapping
from typing import Any

import httpx

from escalator.delivery.channels import DeliveryStatus
from escalator.delivery.text import short

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
_USERS: weakref.WeakSet[object] = weakref.WeakSet()


def shared_client() -> httpx.AsyncClient:
    """The running loop's HTTP client, made on first use: connections are kept alive and
    reused, and the proxy settings and TLS context are read once — a client per message cost
    ~2 ms of CPU and a new connection each time (bench/README.md). Redirects are not followed."""
    loop = asyncio.get_running_loop()
    client = _CLIENTS.get(loop)
    if client is None or client.is_closed:
        client = _CLIENTS[loop] = httpx.AsyncClient(follow_redirects=False, verify=tls_context())
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
            await client.aclose()


_TLS: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """httpx's default verifying TLS context (certifi's CAs, or ``SSL_CERT_FILE``/``_DIR``),
    made once and shared: loading the CA bundle costs ~35 ms of CPU, too much for each message."""
    global _TLS
    if _TLS is None:
        _TLS = httpx.create_ssl_context()
    return _TLS
