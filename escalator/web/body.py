"""Reading a request body as JSON, with 400 answers that name the problem."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from escalator.web.errors import ApiError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request) -> Any:
    """The request body as JSON. Raises :class:`~escalator.web.errors.ApiError` 400 naming the
    problem (empty, not UTF-8, not JSON, NaN/Infinity, nested too deeply, lone surrogates)."""
    body = await request.body()
    if not body.strip():
        raise ApiError(400, "empty body: expected JSON", [{"field": "(body)", "message": "empty body"}])
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ApiError(400, "body is not UTF-8",
                       [{"field": "(body)", "message": f"not UTF-8: {e.reason} at byte {e.start}"}]) from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "malformed JSON",
                       [{"field": "(body)", "message": "JSON nested too deeply"}]) from None
    except ValueError as e:  # JSONDecodeError, too many digits, NaN/Infinity
        raise ApiError(400, "malformed JSON", [{"field": "(body)", "message": f"not valid JSON: {e}"}]) from None
    if "\\ud" in text.lower():
        try:
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except (UnicodeEncodeError, RecursionError):
            raise ApiError(400, "malformed JSON",
                           [{"field": "(body)", "message": "lone UTF-16 surrogate in a string"}]) from None
    return doc
