"""The glue the Aliyun channels share (``plugins/aliyun_sms.py``, ``plugins/aliyun_voice.py``):
the OpenAPI client config from a channel's options, and what an SDK error or an answer's body
says as a :class:`~escalator.delivery.channels.DeliveryResult`. Each channel keeps its own
request and its own table of retryable codes (``classify``: ``(code, HTTP status or None) →
DeliveryStatus``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from escalator.delivery.channels import DeliveryResult, DeliveryStatus
from escalator.delivery.text import short

Classify = Callable[[str, int | None], DeliveryStatus]


def openapi_config(openapi: Any, o: Any) -> Any:
    """``alibabacloud_tea_openapi.models.Config`` for options ``o`` (access key, endpoint,
    protocol, region; ``timeout`` in seconds as the connect and read timeouts)."""
    ms = int(o.timeout * 1000)
    return openapi.Config(access_key_id=o.access_key_id, access_key_secret=o.access_key_secret,
                          endpoint=o.endpoint, protocol=o.protocol, region_id=o.region_id,
                          connect_timeout=ms, read_timeout=ms)


def error_result(channel: Any, e: Exception, classify: Classify) -> DeliveryResult:
    """What an exception of the SDK says: an error answer carries ``code`` (and
    ``status_code``); a network failure has no code and wraps the requests error
    (``inner_exception``), handed to the channel's ``failure``."""
    code = getattr(e, "code", None)
    if code is None:
        return channel.failure(getattr(e, "inner_exception", None) or e)
    status = getattr(e, "status_code", None)
    return channel.result(classify(str(code), status or 400),
                          f"Aliyun HTTP {status} {code}: {short(getattr(e, 'message', ''), 120)}")


def body_result(channel: Any, body: Any, classify: Classify, done: str) -> DeliveryResult:
    """What an answer's ``body`` (``code``, ``message``) says; ``done`` is added to the detail
    when the code is ``OK`` (e.g. ``"BizId …"``)."""
    code = str(body.code)
    detail = f"Aliyun {code}" + (f": {short(body.message, 120)}" if body.message else "")
    if code == "OK":
        detail += f" ({done})"
    return channel.result(classify(code, None), detail)
