"""A spool file's bytes → submissions, by extension: ``.csv`` and ``.xlsx`` registers
(:mod:`escalator.intake.registers`), ``.yaml`` / ``.yml`` (one event or a list; safe loader),
anything else JSON (one event or a list). A file that cannot be read raises
:class:`~escalator.intake.spool.files.Rejected` with the reason (and errors) for its sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import YAMLError

from escalator.config.models import Config
from escalator.engine.engine import Submission
from escalator.events import Event
from escalator.i18n import _
from escalator.intake.parsing import IntakeError, parse_events
from escalator.intake.registers import Register, RegisterError, read_register
from escalator.intake.spool.files import Rejected

YAML_MAX_NODES = 100_000
"""Largest YAML document, counted in nodes with every alias expanded."""


@dataclass(frozen=True)
class Decoded:
    """A spool file's content: ``items`` to ingest; ``register``: the register read, for a
    ``.csv`` file (its refused rows: :mod:`escalator.intake.spool.refused`), else None."""

    items: list[Event | Submission]
    register: Register | None = None


def decode_file(name: str, data: bytes, config: Config, *, key: Callable[[], bytes],
                encoding: str | None = None, source: str | None = None) -> Decoded:
    """The submissions in file ``name`` with content ``data``. ``key``: returns the pseudonym
    key, called only when a register needs it (its exception passes through); ``encoding``: of
    CSV registers (``None``: detected); ``source``: the source id (picks register layouts).
    A register's bad rows do not refuse the file (they are in ``register.refused``); JSON and
    YAML files are all or nothing. Raises :class:`Rejected`."""
    suffix = PurePath(name).suffix.lower()
    if suffix in (".csv", ".xlsx"):
        try:
            reg = read_register(data, config, key=key, encoding=encoding, name=name,
                                source=source)
        except RegisterError as e:
            raise Rejected(e.reason, e.errors, code="register") from None
        return Decoded(list(reg.submissions), reg)
    doc = decode_yaml(data) if suffix in (".yaml", ".yml") else decode_json(data)
    try:
        return Decoded(list(parse_events(doc)))
    except IntakeError as e:
        raise Rejected(_("invalid event: {count} problem(s), listed under errors").format(
            count=len(e.errors)), e.errors, code="invalid_event") from None


def decode_text(data: bytes) -> str:
    """``data`` as UTF-8 text (a byte-order mark dropped). Raises :class:`Rejected`."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise Rejected(_("not UTF-8 text (byte {offset}): save the file as UTF-8").format(
            offset=e.start), code="not_utf8") from None


def decode_json(data: bytes) -> Any:
    """The JSON document in ``data``. Raises :class:`Rejected` saying where it is broken."""
    text = decode_text(data)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise Rejected(_("not valid JSON: {problem} (line {line}, column {column})").format(
            problem=e.msg, line=e.lineno, column=e.colno), code="bad_json") from None
    except RecursionError:
        raise Rejected(_("not valid JSON: nested too deeply"), code="bad_json") from None
    except ValueError as e:  # e.g. an integer over the interpreter's digit limit
        raise Rejected(_("not valid JSON: {problem}").format(problem=e), code="bad_json") from None


class _StringTimestamps(SafeConstructor):
    """Timestamps stay strings, so a YAML file reads exactly like the same JSON file."""


_StringTimestamps.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def decode_yaml(data: bytes) -> Any:
    """The YAML document in ``data`` (safe loader; timestamps stay strings; at most
    :data:`YAML_MAX_NODES` nodes with aliases expanded). Raises :class:`Rejected` saying where
    it is broken."""
    text = decode_text(data)
    yaml = YAML(typ="safe", pure=True)
    yaml.Constructor = _StringTimestamps
    try:
        doc = yaml.load(text)
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        where = (_(" (line {line}, column {column})").format(
            line=mark.line + 1, column=mark.column + 1) if mark is not None else "")
        raise Rejected(_("not valid YAML: {problem}").format(problem=problem) + where,
                       code="bad_yaml") from None
    except RecursionError:
        raise Rejected(_("not valid YAML: nested too deeply"), code="bad_yaml") from None
    except (ValueError, TypeError, OverflowError) as e:
        raise Rejected(_("not valid YAML: {problem}").format(problem=e), code="bad_yaml") from None
    bounded(doc, YAML_MAX_NODES)
    return doc


def bounded(doc: Any, limit: int) -> None:
    """Reject a document with more than ``limit`` nodes, aliases expanded (a YAML alias bomb
    is small on disk and huge in memory once walked). Raises :class:`Rejected`."""
    stack, seen = [doc], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            raise Rejected(_("YAML document too large: over {limit} values once aliases are "
                             "expanded").format(limit=limit), code="too_large")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
