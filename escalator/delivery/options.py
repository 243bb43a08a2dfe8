"""Channel options: the pydantic base model, secret-sourced options, masking and log scrubbing.

Every built-in channel's options model is a :class:`ChannelOptions`, so every channel rejects
unknown or bad options with one ``ValueError`` naming each (never echoing a value), and keeps
secrets out of ``repr``, ``DeliveryResult.detail`` and log lines (:func:`mask`,
:class:`Redactor`, :func:`install_log_redaction`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Self
from urllib.parse import quote, quote_plus

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

MASK = "***"
"""What a secret value is replaced with in ``repr``, details and logs."""


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


REDACTED_LOGGERS = ("httpx", "aiohttp", "apprise")
"""Third-party loggers whose lines may carry a webhook URL or token (httpx logs every request
URL at INFO; aiohttp's client may name one in an error; the DingTalk and WeCom tokens are query parameters, the Feishu token is a path)."""

_FILTER = _RedactingFilter()


def install_log_redaction(secrets: Iterable[str]) -> None:
    """Scrub ``secrets`` from every line the :data:`REDACTED_LOGGERS` log from now on."""
    with _LOG_LOCK:
        _LOG_REDACTOR.add(secrets)
        for name in REDACTED_LOGGERS:
            lg = logging.getLogger(name)
            if _FILTER not in lg.filters:
                lg.addFilter(_FILTER)

