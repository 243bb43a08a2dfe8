"""Config models of ``replies:`` (docs/replies.md): answering a message from the phone.

``replies`` absent: messages carry no reply codes and nothing listens for replies.
Kept apart from :mod:`escalator.config.models` (which holds the field ``Config.replies``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


def _duration(value: Any) -> float:
    """Seconds, or "10s", "1d" as every duration of the config
    (:func:`escalator.config.models.parse_duration`, imported here late: models imports us)."""
    from escalator.config.models import parse_duration
    return parse_duration(value)


_Duration = Annotated[float, BeforeValidator(_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReplyWebhook(_Model):
    """One inbound SMS webhook (``POST /replies/{name}`` or ``/replies/{name}/{secret}``).

    ``type``: ``sms_http`` (the generic gateway: our documented JSON body, HMAC-SHA256
    signature header), ``aliyun`` (Aliyun SMS uplink, 上行短信 HTTP 批量推送) or ``tencent``
    (Tencent Cloud SMS 回复短信回调). Neither cloud provider signs its callbacks, so their URL
    carries the secret as its last path segment. The secret comes from ``secret_env`` or
    ``secret_file`` (at least 16 characters). ``answer_channel``: the channel (an SMS channel)
    through which the sender is answered; None: nobody is answered, the reply is only logged."""

    type: Literal["sms_http", "aliyun", "tencent"]
    secret_env: str | None = None
    secret_file: str | None = None
    answer_channel: _Id | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> ReplyWebhook:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret_env, secret_file")
        return self


class ReplyImap(_Model):
    """A mailbox to read replies from over IMAP: ``host``, ``port`` (default 993 with ``tls``,
    else 143), ``tls`` (implicit TLS, default true), ``username``, the password from
    ``password_env`` or ``password_file``, ``mailbox`` (default ``INBOX``). Unseen mails are
    read and then flagged ``\\Seen``."""

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: bool = True
    username: str = Field(min_length=1)
    password_env: str | None = None
    password_file: str | None = None
    mailbox: str = Field(default="INBOX", min_length=1)
    timeout: float = Field(default=20.0, gt=0, le=120)

    @model_validator(mode="after")
    def _one_secret(self) -> ReplyImap:
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("give exactly one of password_env, password_file")
        return self


class ReplyMail(_Model):
    """E-mail replies, from ``spool_dir`` (relative to the config file; the mail system drops
    each reply there as a ``.eml`` file, e.g. a Maildir's ``new/`` or a procmail/fetchmail
    rule; a read file moves to ``done/`` or ``failed/`` under it) and/or an ``imap`` mailbox;
    read every ``poll_seconds``. ``answer_channel``: an e-mail channel to answer known senders
    through (None: only logged)."""

    spool_dir: str | None = Field(default=None, min_length=1)
    imap: ReplyImap | None = None
    poll_seconds: _Duration = Field(default=10.0, ge=0.5, le=3600)
    answer_channel: _Id | None = None

    @model_validator(mode="after")
    def _somewhere(self) -> ReplyMail:
        if self.spool_dir is None and self.imap is None:
            raise ValueError("give spool_dir, imap or both")
        return self


class RepliesConfig(_Model):
    """``replies``: reply codes in messages to channels that take replies (SMS, e-mail), and
    where replies come in. ``webhooks``: name → :class:`ReplyWebhook`; ``email``:
    :class:`ReplyMail` or None; ``reuse_after``: seconds after which a code of a resolved
    incident may be given to another incident of the same recipient (default one day, so a late
    reply to yesterday's code is answered "expired", never applied to a new incident)."""

    webhooks: dict[_Id, ReplyWebhook] = Field(default_factory=dict)
    email: ReplyMail | None = None
    reuse_after: _Duration = Field(default=86400.0, ge=0, le=30 * 86400)
