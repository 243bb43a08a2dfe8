"""The ``escalator`` command line.

Exit codes: 0 success; 1 failure (invalid config, input rejected, daemon error); 2 usage error;
3 no such incident.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import io
import json
import logging
import os
import sys
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from escalator import __version__, i18n
from escalator.config import Config, ConfigError, check_config, load_config
from escalator.i18n import _
from escalator.intake.parsing import IntakeError, parse_events
from escalator.labels import CATEGORY, SEVERITY, STATE, level_of, levels_in, word
from escalator.store.retry import retrying

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3
DEMO_DIR = Path("escalator-demo")


def epilog() -> str:
    """The exit codes, in the current language (shown under every command's ``--help``)."""
    return _("exit codes:\n"
             "  0  success\n"
             "  1  failure: invalid config, rejected input, daemon error, port taken\n"
             "  2  usage error (also: no config given to a command that needs one)\n"
             "  3  no such incident\n"
             "  4  migrate --check: migrations pending\n"
             "language: Simplified Chinese; English with --lang en or LANG=en_US.UTF-8\n")


class UsageError(Exception):
    pass


def demo_config_path() -> Path:
    """The packaged demo config (``config/demo.yaml`` in the source tree)."""
    return Path(str(resources.files("escalator.bundled") / "demo.yaml"))


def _config_path(args: argparse.Namespace) -> Path:
    if getattr(args, "demo", False):
        return demo_config_path()
    path = args.config or os.environ.get("ESCALATOR_CONFIG")
    if not path:
        raise UsageError(_("no config file: pass --config PATH or set ESCALATOR_CONFIG "
                           "(or --demo for the demo's config and state)"))
    return Path(path)


def _settings(args: argparse.Namespace, config: Config):
    from escalator.config.settings import load_settings

    overrides: dict[str, Any] = {}
    if getattr(args, "demo", False) or args.command == "demo":
        base = Path(getattr(args, "dir", None) or DEMO_DIR).resolve()
        overrides = {"state_dir": base / "state", "spool_dir": base / "spool"}
    settings = load_settings(config.daemon.model_dump(), config.base_dir, **overrides)
    if args.command == "demo" and settings.api_token is None:
        from pydantic import SecretStr

        from escalator.service.demo import demo_token

        token = demo_token(Path(getattr(args, "dir", None) or DEMO_DIR).resolve())
        settings = settings.model_copy(update={"api_token": SecretStr(token)})
    return settings


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


def _print_table(rows: list[list[str]], headers: list[str]) -> None:
    from unicodedata import east_asian_width

    def width(s: str) -> int:
        return sum(2 if east_asian_width(c) in "WF" else 1 for c in s)

    cols = [max(width(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for r in [headers, *rows]:
        print("  ".join(str(c) + " " * (w - width(str(c))) for c, w in zip(r, cols, strict=True)).rstrip())


# ------------------------------------------------------------------ commands


def cmd_check_config(args: argparse.Namespace) -> int:
    from escalator.config.load import Problem
    from escalator.plugins import PluginError, collect, get_plugin_manager, plugins_dir_of
    from escalator.service.daemon import plugin_problems

    path = _config_path(args)
    config, problems = check_config(path)
    if config is not None:  # with the config's plugins_dir, as the daemon loads them
        try:
            pm = get_plugin_manager(plugins_dir=plugins_dir_of(config))
        except PluginError as e:
            problems.append(Problem("plugins_dir", None, str(e)))
        else:
            problems += plugin_problems(config, collect(pm))
    if config is not None:  # the database the daemon would use, when a URL names one
        from escalator.service.database import database_problems

        line, db_problems = database_problems(_settings(args, config))
        if line:
            print(line)
        problems += db_problems
    errors = [p for p in problems if p.level == "error"]
    for p in problems:
        text = _("error: {problem}") if p.level == "error" else _("warning: {problem}")
        print(text.format(problem=p), file=sys.stderr if p.level == "error" else sys.stdout)
    if errors:
        print(_("{path}: {count} error(s); the config was not accepted").format(
            path=path, count=len(errors)), file=sys.stderr)
        return EXIT_FAIL
    print(_("{path}: OK ({count} warning(s))").format(path=path, count=len(problems)))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from escalator.service import logs
    from escalator.service.daemon import Daemon

    config = _load(args)
    settings = _settings(args, config)
    logs.configure(settings.log_format, settings.log_level)
    if settings.http_listen not in ("", "off"):  # a taken port stops the start (issue 13.7)
        from escalator.service.demo import PortTaken, claim_listen

        try:
            listen = claim_listen(settings.http_listen)
        except (PortTaken, ValueError) as e:
            print(f"escalator: {e}", file=sys.stderr)
            return EXIT_FAIL
        settings = settings.model_copy(update={"http_listen": listen})
        if args.command == "demo" and not settings.public_base_url:
            # acknowledge links in the demo's messages point at its own API
            settings = settings.model_copy(update={"public_base_url": f"http://{listen}"})
    daemon = Daemon(config, settings)
    with asyncio.Runner(loop_factory=logs.loop_factory(settings.event_loop)) as runner:
        runner.run(_run_daemon(daemon, args.command == "demo",
                               _demo_console_link(daemon) if args.command == "demo" else None))
    return EXIT_OK


def _demo_console_link(daemon: Any) -> tuple[str, str] | None:
    """The demo's console: a one-time sign-in URL for its first administrator and their name
    (``None`` when the config names no administrator)."""
    from escalator.web.console.signin import issue_link

    admin = next((p for p in daemon.config.people if p.access == "administrator"), None)
    if admin is not None:
        url = issue_link(daemon.store, daemon.config, daemon.settings, admin.id,
                         daemon.clock.now())
        return url, admin.name
    return None


async def _run_daemon(daemon: Any, demo: bool, console: tuple[str, str] | None = None,
                      wait: float = 15.0) -> None:
    """Run ``daemon``; for the demo, print its banner once the API accepts connections (at most
    ``wait`` seconds after the start), naming the address it really listens on and the
    console's sign-in link ``console`` (made before the start: URL, administrator's name)."""
    if not demo:
        await daemon.run()
        return
    from escalator.service.demo import banner

    task = asyncio.ensure_future(daemon.run())
    loop = asyncio.get_running_loop()
    until = loop.time() + wait
    while daemon.http_port is None and not task.done() and loop.time() < until:
        await asyncio.sleep(0.02)
    settings = daemon.settings
    listen = settings.http_listen
    if daemon.http_port is not None:
        listen = f"{listen.rpartition(':')[0]}:{daemon.http_port}"
    from_env = bool(os.environ.get("ESCALATOR_API_TOKEN"))
    token = None if from_env or settings.api_token is None else settings.api_token.get_secret_value()
    print(banner(config_source=daemon.config.source, state_dir=settings.state_dir,
                 spool_dir=settings.spool_dir, listen=listen, token=token,
                 console=console),
          file=sys.stderr, flush=True)
    await task


def _loose_settings(args: argparse.Namespace):
    """The settings of a command that needs no config: from the config when one is given
    (``--config``, ``$ESCALATOR_CONFIG``, ``--demo``), else from ``ESCALATOR_*`` alone."""
    if args.config or args.demo or os.environ.get("ESCALATOR_CONFIG"):
        return _settings(args, _load(args))
    from escalator.config.settings import load_settings

    return load_settings()


def cmd_migrate(args: argparse.Namespace) -> int:
    """``escalator migrate [--database URL] [--check]`` (escalator/service/database.py)."""
    from escalator.service.database import database_target, migrate

    target, setting = database_target(
        _loose_settings(args) if not args.database else None, args.database)
    return migrate(target, setting, check=args.check)


def cmd_store_copy(args: argparse.Namespace) -> int:
    """``escalator store copy --to URL [--from PATH]`` (escalator/store/copy.py)."""
    from escalator.service.database import store_copy

    source = Path(args.from_) if args.from_ else _loose_settings(args).database
    return store_copy(source, args.to, _print_table)


def _open_engine(args: argparse.Namespace):
    from escalator.clock import SystemClock
    from escalator.engine.engine import Engine
    from escalator.store import open_store

    config = _load(args)
    settings = _settings(args, config)
    if (not settings.uses_postgres and not settings.database.exists()
            and (args.demo or args.command != "send")):
        hint = (_("run `escalator demo` in this folder first, or cd to where it runs") if args.demo
                else _("check ESCALATOR_STATE_DIR / daemon.state_dir"))
        raise UsageError(_("no escalator database at {path}: {hint}").format(
            path=settings.database, hint=hint))
    return Engine(open_store(settings.store_target), config, SystemClock())


def _read_document(path: Path) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise IntakeError([{"field": "(file)", "message": _("cannot read {path}: {error}").format(
            path=path, error=e)}]) from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            return YAML(typ="safe").load(text)
        return json.loads(text)
    except (json.JSONDecodeError, YAMLError) as e:
        raise IntakeError([{"field": "(file)", "message": _("not valid JSON/YAML: {error}").format(
            error=e)}]) from None


def cmd_send(args: argparse.Namespace) -> int:
    events = parse_events(_read_document(Path(args.file)))
    engine = _open_engine(args)
    for e in events:
        r = retrying(engine.ingest, e, source=args.source)
        print(json.dumps({"event_id": r.event_id, "incident_id": r.incident_id, "status": r.status,
                          "dedup_key": r.dedup_key,
                          **({"warnings": list(r.warnings)} if r.warnings else {})},
                         ensure_ascii=False))
    return EXIT_OK


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def _state(code: str) -> str:
    """An incident state as the one word people read for it (escalator/labels.py)."""
    return word(STATE, code, i18n.language())


def _outcome(code: str) -> str:
    """What an acknowledge or resolve did (:class:`~escalator.engine.engine.ActionResult`), in
    words; an outcome this CLI does not know is shown as its code."""
    return {
        "acknowledged": _("acknowledged, the walk stops"),
        "step_confirmed": _("this level confirmed, the next level is told now"),
        "step_confirmed_late": _("this level confirmed after its time ran out"),
        "seen": _("marked as seen"),
        "resolved": _("resolved"),
        "already_acknowledged": _("already acknowledged, nothing changed"),
        "already_resolved": _("already resolved, nothing changed"),
        "handled": _("handled at this level, no report needed; the incident is resolved"),
    }.get(code, code)


def _print_action(r: Any) -> None:
    """``incident 7: <what happened> (<outcome code>; <state word>)`` — the id as it is typed."""
    print(_("incident {id}: {what} ({outcome}; state: {state})").format(
        id=r.incident_id, what=_outcome(r.outcome), outcome=r.outcome, state=_state(r.state)))


def cmd_ack(args: argparse.Namespace) -> int:
    engine = _open_engine(args)
    _print_action(retrying(engine.acknowledge, args.id, actor=_actor(), via="cli"))
    return EXIT_OK


def cmd_decide(args: argparse.Namespace) -> int:
    """``escalator decide ID report|handled [--reason TEXT]``: the level's decision
    (:meth:`~escalator.engine.engine.Engine.decide`, docs/decisions.md) as the OS user."""
    from escalator.engine.decisions import DecisionError

    engine = _open_engine(args)
    try:
        r = retrying(engine.decide, args.id, decision=args.decision, reason=args.reason,
                     actor=_actor(), via="cli")
    except DecisionError as e:
        raise UsageError(f"--{e.field}: {e}" if e.field == "reason" else str(e)) from None
    _print_action(r)
    return EXIT_OK


def cmd_resolve(args: argparse.Namespace) -> int:
    engine = _open_engine(args)
    r = retrying(engine.resolve, args.id, actor=_actor(), via="cli")
    _print_action(r)
    with engine.store.transaction() as tx:
        inc = tx.get_incident(r.incident_id)
    if (r.outcome == "resolved" and inc is not None and inc.deadline_at is not None
            and inc.deadline_met_at is None):
        due = inc.deadline_at.astimezone(engine.config.school.tz).strftime("%Y-%m-%d %H:%M")
        print(_("note: the legal report ({rule}: {notify}, due {due}) was never made and no "
                "deadline escalation will follow; report it yourself if the case stands "
                "(timeline: resolved_before_report).").format(
                    rule=inc.deadline_rule, notify=", ".join(inc.deadline_notify or []), due=due),
              file=sys.stderr)
    return EXIT_OK


def cmd_note(args: argparse.Namespace) -> int:
    from escalator.engine.engine import InvalidAction

    engine = _open_engine(args)
    try:
        r = retrying(engine.add_note, args.id, text=args.text, actor=_actor(), via="cli")
    except InvalidAction as e:
        raise IntakeError([{"field": e.field, "message": e.message}]) from None
    print(_("incident {id}: {outcome}").format(id=r.incident_id, outcome=r.outcome))
    return EXIT_OK


def cmd_assign(args: argparse.Namespace) -> int:
    from escalator.engine.engine import InvalidAction

    engine = _open_engine(args)
    try:
        r = retrying(engine.assign, args.id, person_id=args.person_id, actor=_actor(), via="cli")
    except InvalidAction as e:
        raise IntakeError([{"field": e.field, "message": e.message}]) from None
    print(_("incident {id}: {outcome} ({person})").format(id=r.incident_id, outcome=r.outcome,
                                                         person=args.person_id))
    return EXIT_OK


def cmd_login_link(args: argparse.Namespace) -> int:
    from escalator.web.console.signin import issue_link

    engine = _open_engine(args)
    settings = _settings(args, engine.config)
    try:
        url = retrying(issue_link, engine.store, engine.config, settings, args.person_id,
                       engine.clock.now())
    except LookupError as e:
        raise IntakeError([{"field": "PERSON_ID", "message": str(e)}]) from None
    print(url)
    return EXIT_OK


def _local(dt: datetime | None, config: Config) -> str:
    return dt.astimezone(config.school.tz).strftime("%m-%d %H:%M:%S") if dt else "-"


def cmd_silence(args: argparse.Namespace) -> int:
    """``silence add|list|expire`` (docs/silences.md): straight on the database, like ``ack``
    (one transaction, run again when another daemon wins a race: a Conflict)."""
    return retrying(_silence, args)


def _silence(args: argparse.Namespace) -> int:
    from escalator.engine import silences

    engine = _open_engine(args)
    config, now = engine.config, engine.clock.now()
    with engine.store.transaction() as tx:
        if args.silence_command == "list":
            rows = silences.overview(tx, config, now, "all" if args.all else "current")
            _print_table([[r["id"], _silence_state(r["state"]), r["origin"],
                           " ".join(r["matchers"]), _local(r["starts_at"], config),
                           _local(r["ends_at"], config), _("weekly") if r["schedule"] else "",
                           str(r["held"]), r["created_by"], r["comment"][:30]] for r in rows],
                         [_("id"), _("state"), _("from"), _("matchers"), _("starts"), _("ends"),
                          _("schedule"), _("held"), _("by"), _("comment")])
            return EXIT_OK
        if args.silence_command == "expire":
            try:
                held = silences.expire(tx, config, args.id, by=_actor(), now=now)
            except silences.SilenceError as e:
                raise UsageError(str(e)) from None
            except LookupError as e:
                print(f"escalator: {e.args[0]}", file=sys.stderr)
                return EXIT_NOT_FOUND
            print(_("silence {id} expired; {held} held incident(s) walk from their first "
                    "level").format(id=args.id, held=held))
            return EXIT_OK
        schedule = None
        if args.weekdays:
            schedule = {"weekdays": args.weekdays, "nth": args.nth or [],
                        "start": args.start, "end": args.end}
        try:
            s = silences.create(
                tx, config, matchers=args.matcher, created_by=_actor(), comment=args.comment,
                now=now, starts_at=args.starts, ends_at=args.ends, schedule=schedule,
                exempt_critical=not args.include_critical)
        except silences.SilenceError as e:
            print(_("escalator: silence rejected: {field}: {error}").format(field=e.field, error=e),
                  file=sys.stderr)
            return EXIT_FAIL
    print(_("silence {id} made: {matchers} until {ends}").format(
        id=s.id, matchers=" ".join(s.matchers), ends=_local(s.ends_at, config)))
    return EXIT_OK


def _level(inc: Any) -> str:
    """The level an incident's walk is at, as people count (``-``: no step fired yet, e.g.
    while a silence holds it)."""
    return str(level_of(inc.policy["steps"], inc.step_index)) if inc.step_index >= 0 else "-"


def _silence_state(code: str) -> str:
    """A silence's state (``active``, ``pending``, ``expired``) in words."""
    return {"active": _("active"), "pending": _("pending"), "expired": _("expired")}.get(
        code, code)


def _when(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            _("not a time: {text!r} (YYYY-MM-DD HH:MM)").format(text=text)) from None


def cmd_incidents(args: argparse.Namespace) -> int:
    from escalator.engine.engine import NotFound

    engine = _open_engine(args)
    config, lang = engine.config, i18n.language()
    with engine.store.transaction() as tx:
        if args.id is not None:
            inc = tx.get_incident(args.id)
            if inc is None:
                raise NotFound(_("no incident {id}").format(id=args.id))
            drill = _("[DRILL] ") if inc.drill else ""
            print(f"{inc.id} [{_state(inc.state)}] {drill}{word(CATEGORY, inc.category, lang)}/"
                  f"{word(SEVERITY, inc.severity, lang)} {inc.summary}")
            print(_("policy {policy}, level {level}/{levels}, events {events}, next level "
                    "{next}").format(policy=inc.policy_id,
                                     level=_level(inc),
                                     levels=levels_in(inc.policy["steps"]),
                                     events=inc.event_count,
                                     next=_local(inc.next_step_at, config)))
            if inc.deadline_at is not None:  # docs/school-rules.md "Legal deadlines"
                from escalator.school.deadlines import describe

                print(describe(inc, config.school.tz))
            from escalator.school.clusters import member_rows

            if members := member_rows(tx, inc.id):  # a cluster: its cases, first case first
                print(_("cluster members {count}: ").format(count=len(members)) + ", ".join(
                    _("{id} ({date}, event {event})").format(
                        id=m["incident_id"] or "-", date=m["date"], event=str(m["event_id"])[:8])
                    for m in members))
            from escalator.labels import TIMELINE

            rows = [[_local(t.at, config), " ".join(dict.fromkeys(
                        (t.type, word(TIMELINE, t.type, lang)))), t.actor or "",
                     json.dumps(t.detail, ensure_ascii=False)] for t in tx.timeline(inc.id)]
            _print_table(rows, [_("time"), _("what"), _("who"), _("detail")])
            return EXIT_OK
        states = ("triggered", "acknowledged", "resolved") if args.all else ("triggered", "acknowledged")
        incidents = tx.list_incidents(states, args.limit)
    rows = [[str(i.id), _state(i.state), word(CATEGORY, i.category, lang),
             word(SEVERITY, i.severity, lang),
             f"{_level(i)}/{levels_in(i.policy['steps'])}",
             str(i.event_count), _local(i.created_at, config),
             (_("[DRILL] ") if i.drill else "") + i.summary[:40]]
            for i in incidents]
    _print_table(rows, [_("id"), _("state"), _("category"), _("severity"), _("level"),
                        _("events"), _("opened"), _("summary")])
    return EXIT_OK


def cmd_drill_report(args: argparse.Namespace) -> int:
    from escalator.school import drills

    engine = _open_engine(args)
    lang = i18n.language()
    try:
        report = drills.drill_report(engine.store, args.id)
    except drills.NotADrill as e:
        print(f"escalator: {e}", file=sys.stderr)
        return EXIT_FAIL
    print("\n".join(drills.format_header(report, engine.config, lang)))
    _print_table(drills.report_rows(report, engine.config, lang), drills.TEXT[lang]["headers"])
    print("\n".join(drills.format_silent(report, lang)))
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from escalator.delivery.quiet_hours import hold
    from escalator.engine.simulate import simulate
    from escalator.plugins import get_plugin_manager, plugins_dir_of

    config = _load(args)
    events = parse_events(_read_document(Path(args.event)))
    decide: dict[int, str] = {}
    for item in args.decide or ():
        level, _sep, what = item.partition("=")
        if not level.isdigit() or what not in ("report", "handled"):
            raise UsageError(f"--decide {item}: write LEVEL=report or LEVEL=handled (e.g. 3=report)")
        decide[int(level)] = what
    pm = get_plugin_manager(plugins_dir=plugins_dir_of(config))
    quiet = hold(config, pm.hook.school_hours(config=config)) if config.quiet_hours else None
    rows = simulate(config, events[0], horizon_seconds=args.horizon, plugin_manager=pm,
                    hold=quiet, decide=decide)
    _print_table([[r.offset, r.local_time, r.step, r.mode, r.recipient, r.channel, r.address]
                  for r in rows],
                 ["t+", _("local time"), _("level"), _("mode"), _("who"), _("channel"),
                  _("address")])
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    from escalator.plugins import collect, describe, get_plugin_manager, plugins_dir_of

    # with --config / --demo / $ESCALATOR_CONFIG: also the config's plugins_dir
    has_config = args.demo or args.config or os.environ.get("ESCALATOR_CONFIG")
    pm = get_plugin_manager(plugins_dir=plugins_dir_of(_load(args)) if has_config else None)
    reg = collect(pm)
    rows = [[p["name"], p["origin"], ", ".join(p["hooks"])] for p in describe(pm)]
    _print_table(rows, [_("plugin"), _("from"), _("hooks")])
    print("\n" + _("channel types: {types}").format(types=", ".join(sorted(reg.channels))))
    print(_("source types: {types}").format(types=", ".join(sorted(reg.sources))))
    return EXIT_OK


def _day(text: str) -> date:
    """A ``YYYY-MM-DD`` argument in the years events may carry (2000–2100)."""
    from escalator.events import OCCURRED_MAX_YEAR, OCCURRED_MIN_YEAR

    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            _("not a date: {text!r} (use YYYY-MM-DD)").format(text=text)) from None
    if not OCCURRED_MIN_YEAR <= day.year <= OCCURRED_MAX_YEAR:
        raise argparse.ArgumentTypeError(_("{text}: the year must be {first}–{last}").format(
            text=text, first=OCCURRED_MIN_YEAR, last=OCCURRED_MAX_YEAR))
    return day


def cmd_ledger_export(args: argparse.Namespace) -> int:
    from escalator.school import ledger

    if args.to < args.from_:
        raise UsageError(_("--to is before --from"))
    engine = _open_engine(args)
    tables = ledger.ledger_tables(engine.store, engine.config, args.from_, args.to,
                                  engine.clock.now())
    if args.format == "xlsx":
        out = Path(args.output or f"ledger-{args.from_}-{args.to}.xlsx")
        ledger.write_xlsx(tables, out)
        print(f"{out}: " + ", ".join(f"{t.title} {len(t.rows)}" for t in tables), file=sys.stderr)
        return EXIT_OK
    table = next(t for t in tables if t.key == args.table)
    if args.output:
        with open(args.output, "w", encoding="utf-8-sig", newline="") as f:
            ledger.write_csv(table, f)
    else:
        sys.stdout.flush()
        out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8-sig", newline="")
        ledger.write_csv(table, out)
        out.flush()
        out.detach()
    return EXIT_OK


def _local_time(text: str) -> datetime:
    """A school-local ``YYYY-MM-DD HH:MM`` argument (naive: read in the school's zone)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use 'YYYY-MM-DD HH:MM')") from None


def _roster_call(args: argparse.Namespace, fn: Any) -> Any:
    """``fn(tx, config, now)`` in one store transaction; a :class:`RosterError` is a usage
    error naming the option."""
    from escalator.school.roster import RosterError

    engine = _open_engine(args)

    def call() -> Any:
        with engine.store.transaction() as tx:
            return fn(tx, engine.config, engine.clock.now())
    try:
        return retrying(call)
    except RosterError as e:
        raise UsageError(f"--{e.field.replace('_', '-')}: {e}") from None


def cmd_roster_show(args: argparse.Namespace) -> int:
    from escalator.school import roster

    first = args.from_ or date.today()
    last = args.to or first
    if last < first:
        raise UsageError("--to is before --from")
    shifts = _roster_call(args, lambda tx, config, now: (config, roster.shifts_between(
        tx, config, first, last, [args.role] if args.role else None)))
    config, shifts = shifts
    rows = [roster.shift_row(config, s) for s in shifts]
    if args.format == "json":
        print(json.dumps(rows, ensure_ascii=False, default=str, indent=2))
        return EXIT_OK
    _print_table([[r["role"], r["start_local"], r["end_local"],
                   "、".join(p["name"] for p in r["people"]) or "（无人值班 / nobody）",
                   ",".join(f"#{o}" for o in r["overrides"])] for r in rows],
                 ["role", "from", "to", "on duty", "overrides"])
    return EXIT_OK


def cmd_roster_override(args: argparse.Namespace) -> int:
    from escalator.school import roster

    def add(tx: Any, config: Config, now: datetime) -> str:
        start, end = roster.period(config, args.role, day=args.date, start=args.start, end=args.end)
        oid = roster.add_override(tx, config, role=args.role, person=args.person,
                                  replaces=args.replaces, start=start, end=end, by=_actor(),
                                  at=now, comment=args.comment)
        [o] = [o for o in tx.roster_overrides(start, end, args.role) if o.id == oid]
        return f"override #{oid}: {roster.override_text(config, o)}"

    print(_roster_call(args, add))
    return EXIT_OK


def cmd_roster_swap(args: argparse.Namespace) -> int:
    from escalator.school import roster

    def swap(tx: Any, config: Config, now: datetime) -> list[str]:
        ids = roster.add_swap(tx, config, role=args.role, first=args.first,
                              first_day=args.first_date, second=args.second,
                              second_day=args.second_date, by=_actor(), at=now,
                              comment=args.comment)
        span = [o for d in (args.first_date, args.second_date)
                for o in tx.roster_overrides(*roster.period(config, args.role, day=d), args.role)]
        return [f"override #{o.id}: {roster.override_text(config, o)}"
                for o in {o.id: o for o in span if o.id in ids}.values()]

    print("\n".join(_roster_call(args, swap)))
    return EXIT_OK


def cmd_roster_overrides(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from escalator.school import roster

    def read(tx: Any, config: Config, now: datetime) -> list[list[str]]:
        start = now if args.from_ is None else datetime.combine(args.from_, datetime.min.time(),
                                                                config.school.tz)
        end = start + timedelta(days=366) if args.to is None else datetime.combine(
            args.to + timedelta(days=1), datetime.min.time(), config.school.tz)
        return [[f"#{o.id}", roster.override_text(config, o), o.created_by, o.comment or "",
                 "cancelled" if o.cancelled_at else ""]
                for o in tx.roster_overrides(start, end, args.role, cancelled=args.all)]

    _print_table(_roster_call(args, read), ["id", "override", "by", "comment", ""])
    return EXIT_OK


def cmd_roster_cancel(args: argparse.Namespace) -> int:
    ids = _roster_call(args, lambda tx, config, now: tx.cancel_roster_override(args.id, now,
                                                                                _actor()))
    if not ids:
        print(f"escalator: no override #{args.id} in force", file=sys.stderr)
        return EXIT_FAIL
    print("cancelled: " + ", ".join(f"#{i}" for i in ids))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from escalator.school import ledger

    engine = _open_engine(args)
    try:
        report = ledger.monthly_report(engine.store, engine.config, args.month, engine.clock.now())
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.format == "json":
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return EXIT_OK
    print(ledger.report_title(report, engine.config) + "\n")
    for headers, rows in ledger.report_tables(report, engine.config):
        _print_table(rows, headers)
        print()
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    from escalator.school import retention

    engine = _open_engine(args)
    counts = retention.purge(engine.store, engine.config, engine.clock.now(), dry_run=args.dry_run)
    days = engine.config.retention.personal_data_days
    what = (_("would purge personal data older than {days} days") if args.dry_run
            else _("purged personal data older than {days} days")).format(days=days)
    print(what + _(": events {events}, incidents {incidents}, timeline {timeline}, "
                   "notifications {notifications}, deliveries {deliveries}, case facts "
                   "{case_facts}, cluster members {cluster_members}").format(
        events=counts.events, incidents=counts.incidents, timeline=counts.timeline,
        notifications=counts.notifications, deliveries=counts.deliveries,
        case_facts=counts.case_facts, cluster_members=counts.cluster_members))
    if counts.held_open:
        print(_("kept: {count} incident(s) opened before the cutoff are still open (their data "
                "is purged {days} days after they are resolved)").format(
                    count=counts.held_open, days=days))
    return EXIT_OK


def cmd_warning_backtest(args: argparse.Namespace) -> int:
    """``escalator warning backtest``: EARS C1/C2/C3 beside the 2006 rule over past registers
    or synthetic terms (escalator/school/early_warning/backtest.py, docs/early-warning.md)."""
    from escalator.school.early_warning import backtest, synthetic

    config = _load(args) if (args.config or args.demo or os.environ.get("ESCALATOR_CONFIG")) else None
    if args.registers is None and not args.synthetic:
        raise UsageError(_("give --registers DIR or --synthetic"))
    if args.registers is not None:
        if config is None:
            raise UsageError(_("--registers needs the school's config (--config PATH)"))
        folder = Path(args.registers)
        if not folder.is_dir():
            raise UsageError(_("--registers {folder}: not a folder").format(folder=folder))
        terms, problems = backtest.terms_from_registers(folder, config)
        for p in problems:
            print(_("escalator: skipped {problem}").format(problem=p), file=sys.stderr)
        if not terms:
            raise UsageError(_("{folder}: no sickness absence in any register (*.csv)").format(
                folder=folder))
    else:
        try:
            terms = synthetic.generate(args.seed, args.terms, rate=args.rate)
        except ValueError as e:
            raise UsageError(str(e)) from None
    rows = backtest.evaluate(terms, backtest.Params.of(config))
    if args.format == "json":
        print(json.dumps({"terms": len(terms), "school_days": sum(len(t.days) for t in terms),
                          "rows": [r.as_dict() for r in rows]}, ensure_ascii=False, indent=2))
        return EXIT_OK
    lang = i18n.language()
    what = (_("synthetic, seed {seed}, {terms} term(s), rate {rate:g}").format(
        seed=args.seed, terms=args.terms, rate=args.rate) if args.synthetic else str(args.registers))
    print(what + _(": {days} school days, {outbreaks} injected outbreaks").format(
        days=sum(len(t.days) for t in terms), outbreaks=sum(len(t.outbreaks) for t in terms)) + "\n")
    headers, cells = backtest.table(rows, lang)
    _print_table(cells, headers)
    return EXIT_OK


# ------------------------------------------------------------------ parser


def _lang_of(argv: list[str]) -> str | None:
    """The ``--lang`` value in ``argv`` (``--lang en`` or ``--lang=en``), or None: read before
    the parser is built so that its help is in that language too."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        value = (argv[i + 1] if arg == "--lang" and i + 1 < len(argv)
                 else arg.partition("=")[2] if arg.startswith("--lang=") else None)
        if value in i18n.LANGUAGES:
            return value
    return None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, its help in the current language (:func:`escalator.i18n.language`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--lang", choices=i18n.LANGUAGES, default=argparse.SUPPRESS,
                        help=_("language of the output: zh (default) or en; without it, LANG / "
                               "LC_ALL starting with en chooses English"))
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="escalator", description=_("School joint prevention and control: notification and "
                                        "escalation daemon."),
        epilog=epilog(), formatter_class=formatter, parents=[common])
    parser.add_argument("--version", action="version", version=f"escalator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = _("config file (default: $ESCALATOR_CONFIG)")
    demo_help = _("use the demo's config and its state in ./escalator-demo")

    def add(name: str, help: str, func: Any, *, config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=epilog(),
                           formatter_class=formatter, parents=[common])
        p.set_defaults(func=func)
        if config:
            p.add_argument("--config", metavar="PATH", help=config_help)
            p.add_argument("--demo", action="store_true", help=demo_help)
        return p

    p = add("demo", _("run the packaged demo (示例小学) with state and spool in ./escalator-demo"),
            cmd_run, config=False)
    p.add_argument("--dir", metavar="DIR", help=_("demo folder (default: ./escalator-demo)"))
    p.set_defaults(demo=True, config=None)
    add("run", _("run the daemon"), cmd_run)
    add("check-config", _("validate the config and print every problem with its line; with a "
                          "database URL set, connect and check the server and schema versions"),
        cmd_check_config)
    p = add("migrate", _("bring the database to this escalator's schema version (the daemon "
                         "also does it at start); print the version before and after"),
            cmd_migrate)
    p.add_argument("--database", metavar="URL",
                   help=_("a postgresql:// URL or a SQLite file (default: database_url, else the "
                          "SQLite file under state_dir)"))
    p.add_argument("--check", action="store_true",
                   help=_("change nothing: exit 4 when migrations are pending"))
    p = add("store", _("the database itself: `store copy`"), None, config=False)
    store_sub = p.add_subparsers(dest="store_command", required=True, metavar="SUBCOMMAND")
    p = store_sub.add_parser(
        "copy", help=_("copy a school's SQLite database into an empty PostgreSQL database, "
                       "every table and row in one transaction; print the counts"),
        epilog=epilog(), formatter_class=formatter, parents=[common])
    p.set_defaults(func=cmd_store_copy)
    p.add_argument("--config", metavar="PATH", help=config_help)
    p.add_argument("--demo", action="store_true", help=demo_help)
    p.add_argument("--to", required=True, metavar="URL",
                   help=_("the empty PostgreSQL database (postgresql://USER@HOST/DB; put the "
                          "password in PGPASSWORD or ~/.pgpass, not on the command line)"))
    p.add_argument("--from", dest="from_", metavar="PATH",
                   help=_("the SQLite file (default: the one under state_dir)"))
    p = add("simulate", _("print who is told when, by which channel, if nobody acts (sends "
                          "nothing)"), cmd_simulate)
    p.add_argument("--event", required=True, metavar="FILE",
                   help=_("an event file (JSON or YAML)"))
    p.add_argument("--horizon", type=float, default=7 * 86400, metavar="SECONDS",
                   help=_("how far to simulate (default: 7 days)"))
    p.add_argument("--decide", action="append", metavar="LEVEL=DECISION",
                   help=_("level LEVEL (1-based) answers report or handled as soon as it is told, "
                          "e.g. --decide 3=report (repeatable; docs/decisions.md)"))
    p = add("send", _("submit the event(s) in FILE (JSON or YAML, one or a list)"), cmd_send)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--source", default="cli", help=_("source name recorded (default: cli)"))
    p = add("ack", _("acknowledge incident ID (as the OS user, from the CLI)"), cmd_ack)
    p.add_argument("id", type=int, metavar="ID")
    p = add("decide", _("a level's decision on incident ID: report (上报上一级) or handled "
                        "(本级已处置，无需上报: needs --reason)"), cmd_decide)
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("decision", choices=["report", "handled"])
    p.add_argument("--reason", metavar="TEXT",
                   help=_("why no report is needed (required for handled)"))
    p = add("resolve", _("resolve incident ID"), cmd_resolve)
    p.add_argument("id", type=int, metavar="ID")
    p = add("note", _("write a note on incident ID (timeline and ledger)"), cmd_note)
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("text", metavar="TEXT")
    p = add("assign", _("assign incident ID to PERSON_ID (a person of the config)"), cmd_assign)
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("person_id", metavar="PERSON_ID")
    p = add("login-link", _("print a one-time sign-in link to the web console for PERSON_ID "
                          "(valid 10 minutes)"), cmd_login_link)
    p.add_argument("person_id", metavar="PERSON_ID")
    p = add("incidents", _("list open incidents, or show one with its timeline"), cmd_incidents)
    p.add_argument("id", type=int, nargs="?", metavar="ID")
    p.add_argument("--all", action="store_true", help=_("include resolved incidents"))
    p.add_argument("--limit", type=int, default=50)
    add("plugins", _("list plugins (with a config: its plugins_dir too), where they came from "
                     "and their hooks"), cmd_plugins)
    p = add("ledger", _("the work ledger (工作台账): `ledger export`"), None, config=False)
    ledger_sub = p.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")
    p = ledger_sub.add_parser(
        "export", help=_("export incidents, notifications, deliveries, acknowledgements and zero "
                         "reports for school-local dates FROM..TO (both included)"),
        epilog=epilog(), formatter_class=formatter, parents=[common])
    p.set_defaults(func=cmd_ledger_export)
    p.add_argument("--config", metavar="PATH", help=config_help)
    p.add_argument("--demo", action="store_true", help=demo_help)
    p.add_argument("--from", dest="from_", required=True, type=_day, metavar="YYYY-MM-DD")
    p.add_argument("--to", required=True, type=_day, metavar="YYYY-MM-DD")
    p.add_argument("--format", choices=("csv", "xlsx"), default="csv",
                   help=_("csv: one table, UTF-8 with BOM; xlsx: every table, one sheet each"))
    p.add_argument("--table", default="incidents",
                   choices=("incidents", "notifications", "deliveries", "acknowledgements",
                            "heartbeats"), help=_("the table a CSV holds (default: incidents)"))
    p.add_argument("--output", metavar="FILE",
                   help=_("file to write (csv default: stdout; xlsx default: "
                          "ledger-FROM-TO.xlsx)"))
    p = add("report", _("monthly figures per category and severity: counts, time to acknowledge "
                        "(median, p90), deadlines missed, zero reports missed, drills"), cmd_report)
    p.add_argument("--month", required=True, metavar="YYYY-MM", help=_("school-local month"))
    p.add_argument("--format", choices=("table", "json"), default="table")
    p = add("purge", _("purge personal data older than retention.personal_data_days "
                       "(the daemon does it daily)"), cmd_purge)
    p.add_argument("--dry-run", action="store_true", help=_("count only; change nothing"))
    p = add("warning", _("early warning from sickness absence: `warning backtest`"), None,
            config=False)
    warning_sub = p.add_subparsers(dest="warning_command", required=True, metavar="SUBCOMMAND")
    p = warning_sub.add_parser(
        "backtest", help=_("EARS C1/C2/C3 beside the 2006 rule over past registers or synthetic "
                           "terms: sensitivity, false alarms per 100 school days, median days to "
                           "detection"),
        epilog=epilog(), formatter_class=formatter, parents=[common])
    p.set_defaults(func=cmd_warning_backtest)
    p.add_argument("--config", metavar="PATH",
                   help=_("config file: its early_warning parameters, calendar and classes"))
    p.add_argument("--demo", action="store_true", help=_("use the demo's config"))
    p.add_argument("--registers", metavar="DIR", help=_("a folder of past register CSVs"))
    p.add_argument("--synthetic", action="store_true", help=_("generated terms (seeded)"))
    p.add_argument("--seed", type=int, default=1,
                   help=_("seed of the synthetic terms (default 1)"))
    p.add_argument("--terms", type=int, default=4, help=_("synthetic terms (default 4)"))
    p.add_argument("--rate", type=float, default=0.01,
                   help=_("synthetic sickness absence per pupil and school day (default 0.01)"))
    p.add_argument("--format", choices=("table", "json"), default="table")
    p = add("silence", _("silences and maintenance windows: `silence add|list|expire`"), None,
            config=False)
    silence_sub = p.add_subparsers(dest="silence_command", required=True, metavar="SUBCOMMAND")
    for name, text in (("add", _("make a silence: matching events open incidents that tell "
                                 "nobody until it ends")),
                       ("list", _("list silences (the config's too)")),
                       ("expire", _("end silence ID now: what it held walks from the first "
                                    "step"))):
        p = silence_sub.add_parser(name, help=text, description=text, epilog=epilog(),
                                   formatter_class=formatter, parents=[common])
        p.set_defaults(func=cmd_silence)
        p.add_argument("--config", metavar="PATH", help=config_help)
        p.add_argument("--demo", action="store_true", help=demo_help)
        if name == "list":
            p.add_argument("--all", action="store_true", help=_("include expired silences"))
        elif name == "expire":
            p.add_argument("id", metavar="ID")
        else:
            p.add_argument("--matcher", "-m", action="append", required=True,
                           metavar="MATCHER", help=_('e.g. -m \'place=~"1号楼.*"\' (repeat: all '
                                                     "must match)"))
            p.add_argument("--comment", required=True, help=_("why (e.g. 1号楼消防改造)"))
            p.add_argument("--starts", type=_when, metavar="TIME",
                           help=_("start (default now; school-local unless an offset is given)"))
            p.add_argument("--ends", type=_when, metavar="TIME", help=_("end"))
            p.add_argument("--weekdays", type=int, nargs="+", metavar="N",
                           help=_("a weekly window on these days (1=Mon … 7=Sun)"))
            p.add_argument("--nth", type=int, nargs="+", metavar="N",
                           help=_("only the Nth such day of the month (1 … 5, -1 last)"))
            p.add_argument("--start", default="00:00", metavar="HH:MM", help=_("window start"))
            p.add_argument("--end", default="00:00", metavar="HH:MM", help=_("window end"))
            p.add_argument("--include-critical", action="store_true",
                           help=_("silence critical events too (default: they get through)"))
    _roster_parser(sub)
    p = add("drill-report", _("a drill's report (应急演练): time to acknowledge per level, who "
                              "never answered (exit 1 if ID is not a drill)"), cmd_drill_report)
    p.add_argument("id", type=int, metavar="ID")
    return parser


def _roster_parser(sub: Any) -> None:
    """``escalator roster show|override|swap|overrides|cancel`` (docs/rosters.md)."""
    p = sub.add_parser("roster", help="the duty roster (值班表): show, override, swap, overrides, "
                       "cancel", epilog=epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    rs = p.add_subparsers(dest="roster_command", required=True, metavar="SUBCOMMAND")

    def add(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        q = rs.add_parser(name, help=help, description=help, epilog=epilog(),
                          formatter_class=argparse.RawDescriptionHelpFormatter)
        q.set_defaults(func=func)
        q.add_argument("--config", metavar="PATH", help="config file (default: $ESCALATOR_CONFIG)")
        q.add_argument("--demo", action="store_true",
                       help="use the demo's config and its state in ./escalator-demo")
        return q

    q = add("show", "who is on duty from FROM to TO (school-local dates, both included)",
            cmd_roster_show)
    q.add_argument("--from", dest="from_", type=_day, metavar="YYYY-MM-DD", help="default: today")
    q.add_argument("--to", type=_day, metavar="YYYY-MM-DD", help="default: --from")
    q.add_argument("--role", help="one role (default: duty_officer and every rotation's role)")
    q.add_argument("--format", choices=("table", "json"), default="table")
    q = add("override", "PERSON is on duty as ROLE on a date's shift or from START to END, in "
            "place of REPLACES when given (张老师 替 李老师 12月8日)", cmd_roster_override)
    q.add_argument("--role", default="duty_officer")
    q.add_argument("--person", required=True, metavar="ID")
    q.add_argument("--replaces", metavar="ID")
    q.add_argument("--date", type=_day, metavar="YYYY-MM-DD", help="that date's shift")
    q.add_argument("--start", type=_local_time, metavar="'YYYY-MM-DD HH:MM'")
    q.add_argument("--end", type=_local_time, metavar="'YYYY-MM-DD HH:MM'")
    q.add_argument("--comment")
    q = add("swap", "FIRST and SECOND swap shifts: SECOND takes FIRST's shift of FIRST_DATE, "
            "FIRST takes SECOND's of SECOND_DATE", cmd_roster_swap)
    q.add_argument("--role", default="duty_officer")
    q.add_argument("--first", required=True, metavar="ID")
    q.add_argument("--first-date", required=True, type=_day, metavar="YYYY-MM-DD")
    q.add_argument("--second", required=True, metavar="ID")
    q.add_argument("--second-date", required=True, type=_day, metavar="YYYY-MM-DD")
    q.add_argument("--comment")
    q = add("overrides", "list overrides in force (default: from now, a year ahead)",
            cmd_roster_overrides)
    q.add_argument("--from", dest="from_", type=_day, metavar="YYYY-MM-DD")
    q.add_argument("--to", type=_day, metavar="YYYY-MM-DD")
    q.add_argument("--role")
    q.add_argument("--all", action="store_true", help="include cancelled overrides")
    q = add("cancel", "withdraw override ID (both halves of a swap)", cmd_roster_cancel)
    q.add_argument("id", type=int, metavar="ID")


def main(argv: list[str] | None = None) -> int:
    from escalator.engine.engine import NotFound
    from escalator.plugins import PluginError
    from escalator.store.base import StoreError

    argv = sys.argv[1:] if argv is None else argv
    i18n.set_language(_lang_of(argv))  # before the parser: its help is in that language
    args = build_parser().parse_args(argv)
    from escalator.service import logs

    logs.configure(os.environ.get("ESCALATOR_LOG_FORMAT", "auto"), level=logging.WARNING)
    errors: dict[type[Exception], tuple[str, int]] = {  # what is printed before each, exit code
        UsageError: ("", EXIT_USAGE),
        ConfigError: (_("invalid config "), EXIT_FAIL),
        IntakeError: (_("input rejected: "), EXIT_FAIL),
        NotFound: ("", EXIT_NOT_FOUND),
        PluginError: (_("plugin error: "), EXIT_FAIL),
        StoreError: (_("database error: "), EXIT_FAIL),  # full, read-only, not a database
    }
    try:
        return args.func(args)
    except tuple(errors) as e:
        prefix, code = next(v for k, v in errors.items() if isinstance(e, k))
        text = str(e)
        if isinstance(e, NotFound) and isinstance(getattr(args, "id", None), int):
            text = _("no incident {id}").format(id=args.id)  # the engine's words are English
        print(f"escalator: {prefix}{text}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # e.g. `escalator incidents | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as e:  # e.g. --output in a folder that does not exist
        print(f"escalator: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())

