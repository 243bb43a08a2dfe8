"""Inbound SMS replies (docs/replies.md): one webhook per ``replies.webhooks`` entry.

- ``POST /replies/{name}`` — the generic SMS gateway (``type: sms_http``): a JSON object
  ``{"from": "+8613800000001", "text": "1a", "id": "…", "received_at": "…"}`` (or a list of
  them), signed: header ``X-Escalator-Timestamp`` (Unix seconds, within
  :data:`SIGNATURE_TOLERANCE` of now) and ``X-Escalator-Signature: sha256=<hex>``, the
  HMAC-SHA256 of ``<timestamp>.<body bytes>`` with the webhook's secret. Answers
  ``{"received": n}``; a bad or missing signature is 401.
- ``POST /replies/{name}/{secret}`` — Aliyun SMS uplink (``type: aliyun``; 上行短信 HTTP 批量推送:
  a JSON array of ``{phone_number, send_time, content, sign_name, dest_code, sequence_id}``;
  answers ``{"code": 0, "msg": "接收成功"}``) and Tencent Cloud SMS reply callback (``type:
  tencent``; 回复短信回调: ``{extend, mobile, nationcode, sign, text, time}``; answers
  ``{"result": 0, "errmsg": "OK"}``). Neither provider signs its callbacks or lets one add a
  header, so the secret is the URL's last segment, compared in constant time.

An unknown webhook, a wrong secret, or a webhook called the other way is 404, the same answer
for each, so nothing tells whether a name exists. No bearer token (the providers have none);
the access log is off (``escalator/web/server.py``) and nothing here logs a path, a secret or
a reply's text. A store that cannot write is 503, so the provider pushes again later. Each
reply is handled by the daemon's :class:`~escalator.delivery.replies.ReplyDesk`; its answer
is sent through the webhook's ``answer_channel`` after the response, in the background.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from escalator.config.load import resolve_secrets
from escalator.config.replies import ReplyWebhook
from escalator.delivery.replies import Handled, Inbound, ReplyDesk
from escalator.web.body import read_json
from escalator.web.deps import CurrentDaemon, in_store, wake
from escalator.web.errors import ApiError, pydantic_errors

log = structlog.get_logger("escalator.web.routers.replies")

router = APIRouter(tags=["replies"])

SIGNATURE_TOLERANCE = 300.0
"""Seconds a generic gateway's ``X-Escalator-Timestamp`` may be off from now (replays older
than this are refused)."""
MIN_SECRET = 16
"""Shortest webhook secret (characters); a shorter one leaves its webhook off (logged)."""
_NOT_FOUND = ApiError(404, "not found")


class GatewaySms(BaseModel):
    """One SMS from the generic gateway: ``from`` (the sender's number), ``text``; ``id`` and
    ``received_at`` are kept for the log only."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    from_: str = Field(alias="from", min_length=1, max_length=40)
    text: str = Field(max_length=2000)
    id: str | None = Field(default=None, max_length=200)
    received_at: str | None = Field(default=None, max_length=64)


class AliyunSmsUp(BaseModel):
    """One item of Aliyun's SmsUp push (help.aliyun.com "SmsUp" / 上行短信消息)."""

    model_config = ConfigDict(extra="ignore")
    phone_number: str = Field(min_length=1, max_length=40)
    content: str = Field(max_length=2000)
    send_time: str | None = None
    sign_name: str | None = None
    dest_code: str | None = None
    sequence_id: int | str | None = None


class TencentReply(BaseModel):
    """Tencent Cloud SMS's reply callback (cloud.tencent.com/document/product/382/5809)."""

    model_config = ConfigDict(extra="ignore")
    mobile: str = Field(min_length=1, max_length=40)
    nationcode: str = Field(default="86", max_length=8)
    text: str = Field(max_length=2000)
    sign: str | None = None
    extend: str | None = None
    time: float | None = None


_GATEWAY = TypeAdapter(GatewaySms)
_GATEWAY_LIST = TypeAdapter(list[GatewaySms])
_ALIYUN = TypeAdapter(list[AliyunSmsUp])
_TENCENT = TypeAdapter(TencentReply)


class WebhookSecrets:
    """The webhooks' secrets of the daemon's current config, re-read when it changes (SIGHUP).
    A webhook whose secret cannot be read, or is shorter than :data:`MIN_SECRET`, is off
    (logged once per config, never the secret)."""

    def __init__(self) -> None:
        self._config: Any = None
        self._secrets: dict[str, bytes] = {}

    def get(self, config: Any, name: str) -> bytes | None:
        if config is not self._config:
            self._secrets = {}
            hooks = config.replies.webhooks if config.replies else {}
            for hook_name, hook in hooks.items():
                options = hook.model_dump(include={"secret_env", "secret_file"}, exclude_none=True)
                try:
                    secret = str(resolve_secrets(options, config.base_dir).get("secret", ""))
                except ValueError as e:
                    log.error("reply_webhook_off", webhook=hook_name, reason=str(e))
                    continue
                if len(secret) < MIN_SECRET:
                    log.error("reply_webhook_off", webhook=hook_name,
                              reason=f"secret shorter than {MIN_SECRET} characters")
                    continue
                self._secrets[hook_name] = secret.encode()
            self._config = config
        return self._secrets.get(name)


def _state(request: Request) -> tuple[WebhookSecrets, ReplyDesk, set[asyncio.Task[Any]]]:
    """The app's webhook secrets, the daemon's reply desk and the answers under way."""
    state = request.app.state
    if not hasattr(state, "reply_secrets"):
        daemon = state.daemon
        state.reply_secrets = WebhookSecrets()
        state.reply_desk = getattr(daemon, "replies", None) or ReplyDesk(daemon.engine)
        state.reply_answers = set()
    return state.reply_secrets, state.reply_desk, state.reply_answers


def _hook(daemon: Any, name: str) -> ReplyWebhook | None:
    replies = daemon.config.replies
    return replies.webhooks.get(name) if replies is not None else None


def _parse(adapter: TypeAdapter, doc: Any) -> Any:
    try:
        return adapter.validate_python(doc)
    except ValidationError as e:
        raise ApiError(422, "reply rejected", pydantic_errors(e)) from None


async def _take(request: Request, daemon: Any, name: str, hook: ReplyWebhook,
                inbound: list[Inbound]) -> list[Handled]:
    """Handle each reply on the store thread, then answer each in the background."""
    _, desk, answers = _state(request)
    channel_id = hook.answer_channel
    channel = daemon.delivery.channels.get(channel_id) if channel_id else None
    done = []
    for item in inbound:
        handled = await in_store(daemon, desk.handle, item)
        done.append(handled)
        task = asyncio.create_task(desk.answer(item, handled, channel, channel_id or ""))
        answers.add(task)
        task.add_done_callback(answers.discard)
    wake(daemon)
    return done


@router.post("/replies/{name}", include_in_schema=True,
             responses={401: {"description": "bad or missing signature"},
                        404: {"description": "no such webhook"}})
async def gateway_reply(name: str, request: Request, daemon: CurrentDaemon) -> dict[str, int]:
    """A reply from the generic SMS gateway (``type: sms_http``), HMAC-signed; see the module
    docstring for the body and the signature."""
    hook = _hook(daemon, name)
    secrets, _, _ = _state(request)
    secret = secrets.get(daemon.config, name) if hook is not None else None
    if hook is None or hook.type != "sms_http" or secret is None:
        raise _NOT_FOUND
    body = await request.body()
    stamp = request.headers.get("x-escalator-timestamp", "")
    given = request.headers.get("x-escalator-signature", "")
    expected = "sha256=" + hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = stamp.isdigit() and abs(
        daemon.clock.now().timestamp() - int(stamp)) <= SIGNATURE_TOLERANCE
    if not (hmac.compare_digest(given.encode(), expected.encode()) and fresh):
        log.warning("reply_webhook_refused", webhook=name,
                    reason="stale timestamp" if given and not fresh else "bad signature")
        raise ApiError(401, "bad or missing signature (X-Escalator-Timestamp, X-Escalator-Signature)")
    doc = await read_json(request)
    items = _parse(_GATEWAY_LIST, doc) if isinstance(doc, list) else [_parse(_GATEWAY, doc)]
    await _take(request, daemon, name, hook,
                [Inbound(i.from_, i.text, "sms", name) for i in items])
    return {"received": len(items)}


@router.post("/replies/{name}/{secret}", include_in_schema=True,
             responses={404: {"description": "no such webhook"}})
async def provider_reply(name: str, secret: str, request: Request,
                         daemon: CurrentDaemon) -> dict[str, Any]:
    """A reply pushed by Aliyun (``type: aliyun``) or Tencent Cloud (``type: tencent``), the
    secret in the path; see the module docstring for the bodies and answers."""
    hook = _hook(daemon, name)
    secrets, _, _ = _state(request)
    known = secrets.get(daemon.config, name) if hook is not None else None
    if (hook is None or hook.type == "sms_http" or known is None
            or not hmac.compare_digest(secret.encode("utf-8", "surrogateescape"), known)):
        if hook is not None:
            log.warning("reply_webhook_refused", webhook=name, reason="wrong secret or type")
        raise _NOT_FOUND
    doc = await read_json(request)
    if hook.type == "aliyun":
        ups = _parse(_ALIYUN, doc if isinstance(doc, list) else [doc])
        await _take(request, daemon, name, hook,
                    [Inbound(u.phone_number, u.content, "sms", name) for u in ups])
        return {"code": 0, "msg": "接收成功"}
    reply = _parse(_TENCENT, doc)
    sender = reply.mobile if reply.nationcode in ("", "86") else f"+{reply.nationcode}{reply.mobile}"
    await _take(request, daemon, name, hook, [Inbound(sender, reply.text, "sms", name)])
    return {"result": 0, "errmsg": "OK"}

