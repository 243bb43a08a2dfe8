"""The database commands of the CLI: ``escalator migrate``, the database part of
``escalator check-config`` and ``escalator store copy`` (docs/install.md, section 8).

What they print is for administrators (the catalog, Chinese by default); a database is named
by :func:`escalator.store.probe.masked` (never a password), and an unreachable one by the
setting that names it, so the administrator knows what to fix.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from escalator.config.load import Problem
from escalator.config.settings import is_postgres_url, redact_url
from escalator.i18n import _
from escalator.store.base import StoreError
from escalator.store.probe import MIN_POSTGRES, DatabaseInfo, inspect

EXIT_OK, EXIT_FAIL, EXIT_PENDING = 0, 1, 4
"""``migrate``'s exit codes: done / up to date; the database cannot be used (unreachable,
too old a server, written by a newer escalator, a migration failed); ``--check`` found
migrations pending."""


def database_target(settings: Any, flag: str | None = None) -> tuple[str | Path, str]:
    """The database the daemon uses (:attr:`~escalator.config.settings.Settings.store_target`)
    and the setting that names it: ``flag`` (``--database``) when given, else ``database_url``
    (``ESCALATOR_DATABASE_URL`` or the config's ``daemon.database_url``), else the SQLite file
    under ``state_dir``."""
    if flag:
        return flag, "--database"
    if settings.database_url:
        env = os.environ.get("ESCALATOR_DATABASE_URL")
        return settings.store_target, "ESCALATOR_DATABASE_URL" if env else "daemon.database_url"
    return settings.store_target, "ESCALATOR_STATE_DIR / daemon.state_dir"


def server_words(info: DatabaseInfo) -> str:
    """``PostgreSQL 15.20`` / ``SQLite 3.40.1``."""
    return f"{'PostgreSQL' if info.backend == 'postgresql' else 'SQLite'} {info.server_version}"


def _unusable(info: DatabaseInfo) -> str | None:
    """Why this escalator cannot use the database (in the administrator's words), or None."""
    if info.server_problem() is not None:
        return _("PostgreSQL {version} is too old: escalator needs PostgreSQL {minimum} or "
                 "later").format(version=info.server_version, minimum=MIN_POSTGRES[0])
    if info.newer:
        return _("schema version {db} was written by a newer escalator (this one knows {code}): "
                 "upgrade escalator; downgrading is not supported").format(
                     db=info.schema_version, code=info.code_version)
    return None


def migrate(target: str | Path, setting: str, *, check: bool = False) -> int:
    """``escalator migrate``: say what the database is and its schema version; apply the
    migrations this escalator has (opening it as a store, behind PostgreSQL's advisory lock, as
    the daemon does at start), then say the version after. With ``check``, change nothing:
    :data:`EXIT_PENDING` when migrations are pending. Returns the exit code."""
    try:
        before = inspect(target)
    except StoreError as e:
        print(_("escalator: cannot reach the database named by {setting}: {error}").format(
            setting=setting, error=e), file=sys.stderr)
        return EXIT_FAIL
    print(_("database: {where} ({server})").format(where=before.where,
                                                   server=server_words(before)))
    if (why := _unusable(before)) is not None:
        print(_("escalator: {problem}").format(problem=why), file=sys.stderr)
        return EXIT_FAIL
    if before.pending == 0:
        print(_("schema version {version}: up to date").format(version=before.schema_version))
        return EXIT_OK
    if check:
        print(_("schema version {db}, this escalator's {code}: {count} migration(s) pending "
                "(run `escalator migrate`; the daemon also applies them at start)").format(
                    db=before.schema_version, code=before.code_version, count=before.pending))
        return EXIT_PENDING
    from escalator.store import open_store

    try:
        open_store(target).close()
        after = inspect(target)
    except StoreError as e:
        print(_("escalator: the migration failed, nothing of it was kept: {error}").format(
            error=_scrub(str(e), target)), file=sys.stderr)
        return EXIT_FAIL
    print(_("schema version {before} → {after}: {count} migration(s) applied").format(
        before=before.schema_version, after=after.schema_version,
        count=after.schema_version - before.schema_version))
    return EXIT_OK


def _scrub(text: str, target: str | Path) -> str:
    """``text`` with the target's URL replaced by its masked form (a driver may quote it)."""
    return text.replace(str(target), redact_url(str(target))) if is_postgres_url(target) else text


def database_problems(settings: Any) -> tuple[str | None, list[Problem]]:
    """``check-config``'s look at the database when ``database_url`` is set: connect (bounded),
    the server's version (PostgreSQL older than :data:`~escalator.store.probe.MIN_POSTGRES` is
    an error), the schema version against this escalator's (newer: error; pending: a warning —
    the daemon migrates at start). Returns the line describing the database (None when no
    URL is set or it cannot be reached) and the problems, each naming the setting."""
    if not settings.database_url:
        return None, []
    target, setting = database_target(settings)
    try:
        info = inspect(target)
    except StoreError as e:
        return None, [Problem(setting, None, _("cannot reach the database: {error}").format(
            error=_scrub(str(e), target)))]
    line = _("database: {where} ({server}), schema version {db} (this escalator: {code})").format(
        where=info.where, server=server_words(info), db=info.schema_version,
        code=info.code_version)
    if (why := _unusable(info)) is not None:
        return line, [Problem(setting, None, why)]
    if info.pending:
        return line, [Problem(setting, None, _(
            "{count} migration(s) pending: run `escalator migrate` (the daemon also applies "
            "them at start)").format(count=info.pending), level="warning")]
    return line, []


def store_copy(source: Path, target: str,
               table: Callable[[list[list[str]], list[str]], None]) -> int:
    """``escalator store copy``: the SQLite database ``source`` into the empty PostgreSQL
    database ``target`` (:func:`escalator.store.copy.copy_to_postgres`), then each table's rows
    in the source and counted on the target, printed by ``table(rows, headers)``. Returns the
    exit code."""
    from escalator.store.copy import CopyRefused, copy_to_postgres

    if not is_postgres_url(target):
        print(_("escalator: --to must be a postgresql:// URL, not {target!r}").format(
            target=redact_url(str(target))), file=sys.stderr)
        return 2
    if not source.is_file():
        print(_("escalator: no escalator database at {path} (--from, or the config's "
                "state_dir)").format(path=source), file=sys.stderr)
        return EXIT_FAIL
    print(_("copying {source} → {target} (one transaction)").format(
        source=source, target=redact_url(str(target))), flush=True)
    try:
        done = copy_to_postgres(source, target)
    except CopyRefused as e:
        print(_("escalator: copy refused, nothing was stored: {error}").format(
            error=_scrub(str(e), target)), file=sys.stderr)
        return EXIT_FAIL
    except StoreError as e:
        print(_("escalator: copy failed, nothing was stored: {error}").format(
            error=_scrub(str(e), target)), file=sys.stderr)
        return EXIT_FAIL
    table([[t.table, str(t.rows), str(t.copied)] for t in done],
          [_("table"), _("rows in the source"), _("rows copied")])
    print(_("{tables} tables, {rows} rows copied; every count matches. Now set "
            "ESCALATOR_DATABASE_URL (or daemon.database_url) to the new database and start "
            "escalator.").format(tables=len(done), rows=sum(t.rows for t in done)))
    return EXIT_OK
