"""Turning raw input (a parsed JSON/YAML document) into validated events, with errors that name
each bad field."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from escalator.events import Event, Kind


class IntakeError(ValueError):
    """Input rejected. ``errors`` is a list of ``{"field": "severity", "message": "…"}``;
    ``str()`` names every field."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


def _field(loc: tuple[Any, ...], prefix: str) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int) or not str(part).strip() or not str(part).isprintable():
            out += f"[{part!r}]"  # a blank or control-character key is shown quoted: ['\r']
        else:
            out += f".{part}" if out else str(part)
    return out or "(event)"


def _message(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field missing"
    if err["loc"] and err["loc"][0] == "kind" and err["type"] == "enum":
        return f"unknown kind {err['input']!r}; allowed: {', '.join(k.value for k in Kind)}"
    if err["type"] == "string_too_long":
        return f"too long: at most {err['ctx']['max_length']} characters"
    msg = err["msg"]
    return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg


def parse_event(raw: Any, *, prefix: str = "") -> Event:
    """Validate one raw event (a mapping). Raises :class:`IntakeError` naming each bad field."""
    if not isinstance(raw, dict):
        raise IntakeError([{"field": prefix or "(event)",
                            "message": f"an event must be a JSON object, not {type(raw).__name__}"}])
    try:
        return Event.model_validate(raw)
    except ValidationError as e:
        raise IntakeError([{"field": _field(tuple(err["loc"]), prefix), "message": _message(err)}
                           for err in e.errors()]) from None


MAX_EVENTS_PER_DOCUMENT = 1000


def parse_events(doc: Any) -> list[Event]:
    """Events from a document holding one event (a mapping) or a list of them (at most
    :data:`MAX_EVENTS_PER_DOCUMENT`). All or nothing: raises :class:`IntakeError` listing every
    bad field, prefixed ``[i]`` for lists."""
    if isinstance(doc, list):
        if not doc:
            raise IntakeError([{"field": "(document)", "message": "empty list: no events"}])
        if len(doc) > MAX_EVENTS_PER_DOCUMENT:
            raise IntakeError([{"field": "(document)",
                                "message": f"more than {MAX_EVENTS_PER_DOCUMENT} events"}])
        events, errors = [], []
        for i, raw in enumerate(doc):
            try:
                events.append(parse_event(raw, prefix=f"[{i}]"))
            except IntakeError as e:
                errors.extend(e.errors)
        if errors:
            raise IntakeError(errors)
        return events
    return [parse_event(doc)]
