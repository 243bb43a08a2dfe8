"""What ``escalator demo`` adds around the daemon for a newcomer (README "Two commands"): its
administrator API token, the port check before the start, and the banner naming the real
address.

- :func:`demo_token`: the token of the demo's API, kept in ``<demo dir>/api-token`` (mode 0600)
  so the README's ``curl`` lines and a restarted demo use the same one; ``ESCALATOR_API_TOKEN``
  wins when set (then the banner names the variable, never the value).
- :func:`claim_listen`: ``host:port`` is free (``PortTaken`` with a plain message otherwise);
  port 0 becomes the free port picked now, so acknowledge links and the banner name it.
- :func:`banner`: the lines printed once the API accepts connections.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from escalator.i18n import _
from escalator.web.server import bind_listen, parse_listen

TOKEN_FILE = "api-token"
"""The demo's administrator token, under the demo folder."""


class PortTaken(Exception):
    """The demo's (or the daemon's) HTTP address cannot be bound; the message says what to do."""


def demo_token(base: Path) -> str:
    """The administrator token of the demo in ``base`` (``./escalator-demo``): read from
    ``base/api-token``, or made (32 URL-safe random bytes, :func:`secrets.token_urlsafe`) and
    written there with mode 0600 on the first start. Raises ``OSError`` when the folder cannot
    be written."""
    path = base / TOKEN_FILE
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    base.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    return token


def claim_listen(listen: str) -> str:
    """Check that ``listen`` (``host:port``, :func:`~escalator.web.server.parse_listen`) can be
    bound now and return it, with port 0 replaced by a free port. Raises :class:`PortTaken`
    (address in use, not allowed, not an address here) or ``ValueError`` for a bad
    ``host:port``. The socket is closed again: the daemon binds it a moment later (another
    program taking the port in between is reported by the daemon's log)."""
    host, port = parse_listen(listen)
    try:
        sock = bind_listen(host, port)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortTaken(_(
                "{listen} is already in use (another escalator demo or program listens there); "
                "stop it, or start on another port: ESCALATOR_HTTP_LISTEN=127.0.0.1:8766 "
                "escalator demo").format(listen=listen)) from None
        raise PortTaken(_("cannot listen on {listen}: {reason}").format(
            listen=listen, reason=e.strerror or e)) from None
    try:
        bound = sock.getsockname()[1]
    finally:
        sock.close()
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{bound}"


def banner(*, config_source: object, state_dir: Path, spool_dir: Path, listen: str,
           token: str | None, console: tuple[str, str] | None = None) -> str:
    """The demo's start text: folders, the first things to try, the real API address, the
    administrator token (``None``: it came from ``ESCALATOR_API_TOKEN`` and is not shown) and,
    with ``console`` = (one-time sign-in URL, the administrator's name), the console's link."""
    base = f"http://{listen}"
    shown = token if token is not None else _("(from ESCALATOR_API_TOKEN)")
    lines = [
        _("escalator demo — 示例小学"),
        _("  config: {path}").format(path=config_source),
        _("  state:  {path}").format(path=state_dir),
        _("  spool:  {path}/incoming/  (drop an event file here)").format(path=spool_dir),
        _("  try:    cp examples/events/fever_single.json {path}/incoming/").format(path=spool_dir),
        _("  then:   escalator incidents --demo ; escalator ack ID --demo"),
        _("  API:    {base}/docs  (acknowledge links in messages work)").format(base=base),
        _("  administrator token: {token}").format(token=shown),
        _('  e.g.:   curl -H "Authorization: Bearer {token}" {base}/api/v1/incidents').format(
            token=token if token is not None else "$ESCALATOR_API_TOKEN", base=base),
        *([_("  console: {url}").format(url=console[0]),
           _("           ({name}; one-time link, valid 10 minutes; more: "
             "escalator login-link PERSON_ID --demo)").format(name=console[1])]
          if console else []),
        _("  stop:   Ctrl-C"),
    ]
    return "\n".join(lines) + "\n"
