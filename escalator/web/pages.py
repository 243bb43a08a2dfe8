"""HTML pages: Jinja2 templates from ``escalator/web/templates/`` with autoescape on, answered
with headers that keep them out of caches, referrers and frames."""

from __future__ import annotations

from typing import Any

import jinja2
from fastapi.responses import HTMLResponse

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("escalator.web", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)

_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
"""The console pages' Content-Security-Policy: nothing from outside, no inline script."""


def render(template: str, **context: Any) -> str:
    """``template`` (a file name in ``templates/``) rendered with ``context`` (every value
    escaped). Raises ``jinja2.TemplateError`` for a broken template or an undefined
    variable."""
    return _env.get_template(template).render(**context)


def page(template: str, status: int = 200, *, csp: bool = False, **context: Any) -> HTMLResponse:
    """The HTML answer of :func:`render` (``csp``: with the console's :data:`CSP`)."""
    headers = {**_HEADERS, "Content-Security-Policy": CSP} if csp else _HEADERS
    return HTMLResponse(render(template, **context), status_code=status, headers=headers)
