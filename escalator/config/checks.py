"""Cross-reference checks of a parsed config, run by ``escalator check-config`` and at load.

``run_checks(config)`` returns ``[(loc, message, level)]`` where ``loc`` is the YAML path as a
tuple (``("policies", "fire", "steps", 0, "targets", 1)``) and ``level`` is ``"error"`` or
``"warning"``. Each rule is one small function below, listed once in ``CHECKS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from escalator.config.models import (
    RELATIVE_ROLES,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
    Config,
    Person,
    StepMode,
)
from escalator.config.models import RELATIVE_ROLES as _RELATIVE
from escalator.engine.targets import Target, UnknownTarget, parse_target
from escalator.i18n import _

Finding = tuple[tuple[Any, ...], str, str]

HELD_RELATIVE_ROLES = {"class_teacher", "grade_leader"}
"""Relative roles that people hold in their ``roles`` list (the others come from rosters)."""



def _not_held_hint(role: str) -> str:
    if role == "duty_officer":
        return _(" (duty officers come from duty_roster and rosters, not from a person's roles)")
    if role == "guardian":
        return _(" (guardians come from the guardian roster, not from a person's roles)")
    return ""


def nearest(name: str, known: Any) -> str:
    """`` (did you mean 'x'?)`` naming the known name closest to ``name`` (difflib ratio at
    least 0.6), or an empty string when none is close."""
    import difflib

    match = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return _(" (did you mean {name!r}?)").format(name=match[0]) if match else ""


def _unknown_policy(name: str, config: Config) -> str:
    return _("unknown policy {name!r}").format(name=name) + nearest(name, config.policies)


def unknown_target(text: str, config: Config) -> str:
    """Why ``text`` names no role, person or unit (:func:`parse_target` raised), with the
    nearest known name of that kind."""
    prefix, sep, rest = text.partition(":")
    roles = [*config.roles, *sorted(_RELATIVE)]
    if not sep:
        known = [*roles, *(u.id for u in config.units)]
        return _("unknown role {name!r}").format(name=text) + nearest(text, known)
    if prefix == "person":
        return _("unknown person {name!r}").format(name=rest) + nearest(
            rest, [p.id for p in config.people])
    if prefix == "unit":
        return _("unknown unit {name!r}").format(name=rest) + nearest(
            rest, [u.id for u in config.units])
    if prefix == "role":
        return _("unknown role {name!r}").format(name=rest) + nearest(rest, roles)
    return _("unknown target type {prefix!r} (use person:, unit: or role:)").format(prefix=prefix)


def _error(loc: tuple[Any, ...], message: str) -> Finding:
    return (loc, message, "error")


def _warning(loc: tuple[Any, ...], message: str) -> Finding:
    return (loc, message, "warning")


def _seconds(value: float) -> str:
    """``604800`` → ``"7d"``, ``90`` → ``"90s"``: the largest unit that divides evenly."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


def _step_targets(config: Config) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every step target with its location."""
    for pid, policy in config.policies.items():
        for i, step in enumerate(policy.steps):
            for j, text in enumerate(step.targets):
                yield ("policies", pid, "steps", i, "targets", j), text


def check_step_targets(config: Config) -> Iterator[Finding]:
    """Rule 1: every step target names a known role, person or unit."""
    for loc, text in _step_targets(config):
        try:
            parse_target(text, config)
        except UnknownTarget:
            yield _error(loc, unknown_target(text, config))


def check_register_notify(config: Config) -> Iterator[Finding]:
    """``registers.notify`` (told about a register's refused rows, docs/spool.md) names known
    targets — checked when a spool source reads registers; an unknown one reaches nobody, and
    the duty officer is told instead."""
    if not any(s.type == "spool" for s in config.sources.values()):
        return
    for j, text in enumerate(config.registers.notify):
        try:
            parse_target(text, config)
        except UnknownTarget:
            yield _warning(("registers", "notify", j), _(
                "{error}: a register's refused rows reach the duty officer instead").format(
                    error=unknown_target(text, config)))


def check_person_roles(config: Config) -> Iterator[Finding]:
    """Rule 2: a person's roles are defined in ``roles:`` or are held relative roles."""
    for i, person in enumerate(config.people):
        for j, role in enumerate(person.roles):
            if role not in config.roles and role not in HELD_RELATIVE_ROLES:
                hint = _not_held_hint(role) or nearest(role, [*config.roles, *HELD_RELATIVE_ROLES])
                yield _error(("people", i, "roles", j),
                             _("unknown role {name!r}").format(name=role) + hint)


def check_contact_channels(config: Config) -> Iterator[Finding]:
    """Rule 3: every contact method of a person or unit uses a configured channel."""
    for section, items in (("people", config.people), ("units", config.units)):
        for i, item in enumerate(items):
            for j, contact in enumerate(item.contacts):
                if contact.channel not in config.channels:
                    yield _error((section, i, "contacts", j, "channel"),
                                 _("unknown channel {name!r}").format(name=contact.channel)
                                 + nearest(contact.channel, config.channels))


def check_route_policies(config: Config) -> Iterator[Finding]:
    """Rule 4: every route names a defined policy, or ``none`` (log only)."""
    for i, route in enumerate(config.routes):
        if route.policy != "none" and route.policy not in config.policies:
            yield _error(("routes", i, "policy"), _unknown_policy(route.policy, config))


def check_roster_people(config: Config) -> Iterator[Finding]:
    """Rule 5: every duty roster entry names a known person."""
    for i, shift in enumerate(config.duty_roster):
        if config.person(shift.person) is None:
            yield _error(("duty_roster", i, "person"),
                         _("unknown person {name!r}").format(name=shift.person)
                         + nearest(shift.person, [p.id for p in config.people]))


def check_person_classes(config: Config) -> Iterator[Finding]:
    """Rule 6: a person's classes and grades exist in ``school:`` (when the school lists them)."""
    school = config.school
    for i, person in enumerate(config.people):
        for field, known in (("classes", school.classes), ("grades", school.grades)):
            if not known:
                continue
            for j, value in enumerate(getattr(person, field)):
                if value not in known:
                    text = (_("unknown class {name!r} (not in school.classes)")
                            if field == "classes"
                            else _("unknown grade {name!r} (not in school.grades)"))
                    yield _error(("people", i, field, j),
                                 text.format(name=value) + nearest(value, known))


def _candidates(target: Target, config: Config) -> list[Any] | None:
    """Everyone ``target`` could ever reach (people or units); None when it cannot be known."""
    if target.kind == "person":
        return [p for p in config.people if p.id == target.name]
    if target.kind == "unit":
        return [u for u in config.units if u.id == target.name]
    rotating = {pid for r in config.rosters.rotations.values() if r.role == target.name
                for pid in r.people}
    if target.kind == "role" and rotating:  # a roster-backed role: its rotations' people
        return [p for p in config.people if p.id in rotating]
    if target.kind == "role" or target.name in HELD_RELATIVE_ROLES:
        return [p for p in config.people if target.name in p.roles]
    if target.name == "duty_officer":
        return [p for p in config.people
                if p.id in rotating or any(s.person == p.id for s in config.duty_roster)]
    return None  # guardian: from the guardian roster, not known here


def _nobody(target: Target) -> str:
    """Why a role ``target`` reaches nobody."""
    if target.name == "duty_officer":
        return _("the duty roster lists no known person (duty_roster, rosters)")
    return _("role {name!r} is held by nobody").format(name=target.name)


def check_targets_reach_someone(config: Config) -> Iterator[Finding]:
    """Rule 7: every knowable target reaches at least one person or unit with a contact method."""
    for loc, text in _step_targets(config):
        try:
            target = parse_target(text, config)
        except UnknownTarget:
            continue  # reported by check_step_targets
        found = _candidates(target, config)
        if found is None:
            continue
        if not found:
            yield _error(loc, _("target {text!r} resolves to nobody: {why}").format(
                text=text, why=_nobody(target)))
        elif not any(r.contacts for r in found):
            yield _error(loc, _("target {text!r} resolves only to recipients with no contact "
                                "method").format(text=text))


def _teaches(person: Person, class_id: str) -> bool:
    return "class_teacher" in person.roles and class_id in person.classes


def check_class_teachers(config: Config) -> Iterator[Finding]:
    """Rule 8: every class in ``school.classes`` has a class teacher."""
    for i, class_id in enumerate(config.school.classes):
        if not any(_teaches(p, class_id) for p in config.people):
            yield _error(("school", "classes", i),
                         _("class {name!r} has no class teacher (a person with role "
                           "class_teacher and this class in classes)").format(name=class_id))


def check_duplicate_ids(config: Config) -> Iterator[Finding]:
    """Rule 9: person and unit ids are unique, and no unit id is also a role name."""
    people: dict[str, int] = {}
    for i, person in enumerate(config.people):
        if person.id in people:
            yield _error(("people", i, "id"),
                         _("duplicate person id {id!r} (also people[{index}])").format(
                             id=person.id, index=people[person.id]))
        people.setdefault(person.id, i)
    units: dict[str, int] = {}
    for i, unit in enumerate(config.units):
        if unit.id in units:
            yield _error(("units", i, "id"),
                         _("duplicate unit id {id!r} (also units[{index}])").format(
                             id=unit.id, index=units[unit.id]))
        elif unit.id in people:
            yield _error(("units", i, "id"),
                         _("unit id {id!r} is also a person id (people[{index}])").format(
                             id=unit.id, index=people[unit.id]))
        elif unit.id in config.roles or unit.id in RELATIVE_ROLES:
            yield _error(("units", i, "id"),
                         _("unit id {id!r} is also a role name: a bare target {id!r} is "
                           "ambiguous (rename one, or write unit:{id} / role:{id})").format(
                               id=unit.id))
        units.setdefault(unit.id, i)


def check_timeouts(config: Config) -> Iterator[Finding]:
    """Rule 10: escalate and report steps wait between TIMEOUT_MIN and TIMEOUT_MAX."""
    for pid, policy in config.policies.items():
        for i, step in enumerate(policy.steps):
            if step.mode != StepMode.inform and not TIMEOUT_MIN <= step.timeout <= TIMEOUT_MAX:
                yield _error(("policies", pid, "steps", i, "timeout"),
                             _("timeout {timeout} is out of range: it must be between {min} "
                               "and {max}").format(timeout=_seconds(step.timeout),
                                 min=_seconds(TIMEOUT_MIN), max=_seconds(TIMEOUT_MAX)))


def check_default_route(config: Config) -> Iterator[Finding]:
    """Rule 11: exactly one route has ``default: true``."""
    defaults = [i for i, r in enumerate(config.routes) if r.default]
    if not defaults:
        yield _error(("routes",), _("no default route: exactly one route needs "
                                    "'default: true'"))
    for i in defaults[1:]:
        yield _error(("routes", i, "default"),
                     _("more than one default route (routes[{index}] is already the "
                       "default)").format(index=defaults[0]))


def check_people_reachable(config: Config) -> Iterator[Finding]:
    """Rule 12 (warning): every person has a contact method."""
    for i, person in enumerate(config.people):
        if not person.contacts:
            yield _warning(("people", i), _("person has no contact method"))


def check_shadowed_routes(config: Config) -> Iterator[Finding]:
    """Rule 13 (warning): no route follows a non-default route that matches everything."""
    catch_all: int | None = None
    for i, route in enumerate(config.routes):
        if catch_all is not None:
            yield _warning(("routes", i),
                           _("route can never be reached: routes[{index}] has no match "
                             "conditions and takes every event").format(index=catch_all))
        elif not route.default and route.match.model_dump(exclude_defaults=True) == {}:
            catch_all = i


def check_heartbeat_policies(config: Config) -> Iterator[Finding]:
    """Rule 14: every heartbeat monitor names a defined policy."""
    for name, monitor in config.heartbeats.items():
        if monitor.policy not in config.policies:
            yield _error(("heartbeats", name, "policy"), _unknown_policy(monitor.policy, config))


def check_channel_templates(config: Config) -> Iterator[Finding]:
    """Rule 16: every channel template override compiles (a broken one would fail each send)."""
    import jinja2

    from escalator.delivery.render import compile_template

    for cid, channel in config.channels.items():
        for part, source in channel.templates.items():
            try:
                compile_template(source)
            except jinja2.TemplateSyntaxError as e:
                yield _error(("channels", cid, "templates", part),
                             _("template error: {error}").format(error=e.message))


def check_secrets_resolvable(config: Config) -> Iterator[Finding]:
    """Rule 20 (warning): every channel's and source's ``*_env`` / ``*_file`` secret can be read
    here (:func:`escalator.config.load.resolve_secrets`); the daemon refuses to start without
    it. A warning, not an error: ``check-config`` may run where the service's environment file
    is not loaded. Never shows a value."""
    from escalator.config.load import resolve_secrets

    sections = (("channels", config.channels), ("sources", config.sources))
    for section, items in sections:
        for item_id, item in items.items():
            for key, value in item.options.items():
                if not key.endswith(("_env", "_file")):
                    continue
                try:
                    resolve_secrets({key: value}, config.base_dir)
                except ValueError as e:
                    yield _warning((section, item_id, "options", key),
                                   _("{error}: the daemon will refuse to start without it").format(
                                       error=e))


def check_contact_addresses(config: Config) -> Iterator[Finding]:
    """Rule 23: a contact's address fits its channel — a phone number (mainland mobile or
    E.164) for an SMS channel, an e-mail address for the e-mail channel — and a unit's
    ``phone`` is a phone number (a landline too). The rules and their sources:
    :mod:`escalator.config.contacts`."""
    from escalator.config.contacts import (
        EMAIL_CHANNEL_TYPES,
        SMS_CHANNEL_TYPES,
        is_email,
        is_phone,
    )

    for section, items in (("people", config.people), ("units", config.units)):
        for i, item in enumerate(items):
            for j, contact in enumerate(item.contacts):
                channel = config.channels.get(contact.channel)
                kind = channel.type if channel is not None else None
                if kind in SMS_CHANNEL_TYPES and not is_phone(contact.to):
                    yield _error((section, i, "contacts", j, "to"), _(
                        "{address!r} is not a phone number: write a mainland mobile number "
                        "(11 digits starting 13–19, e.g. 13955550001) or an international one "
                        "with + and the country code (e.g. +8613955550001)").format(
                            address=contact.to))
                elif kind in EMAIL_CHANNEL_TYPES and not is_email(contact.to):
                    yield _error((section, i, "contacts", j, "to"), _(
                        "{address!r} is not an e-mail address (name@domain, e.g. "
                        "wangli@school.example)").format(address=contact.to))
    for i, unit in enumerate(config.units):
        if unit.phone is not None and not is_phone(unit.phone, landline=True):
            yield _error(("units", i, "phone"), _(
                "{address!r} is not a phone number: write a mobile number (e.g. 13955550001), "
                "a landline with its area code (e.g. 010-12345678) or +country code and "
                "number").format(address=unit.phone))


def check_calendar_years(config: Config) -> Iterator[Finding]:
    """Rule 15 (warning): when a heartbeat monitor expects reports on school days only, the
    holiday calendar knows this year (and every year a term touches), or the administrator
    entered overrides for it; else school days in that year are taken as Monday–Friday."""
    from escalator.school.calendar import startup_warnings

    for message in startup_warnings(config, datetime.now(config.school.tz).date()):
        yield _warning(("school", "calendar"), message)


def check_guardian_roster(config: Config) -> Iterator[Finding]:
    """Rule 17: when a step targets ``guardian``, ``guardians.roster`` is configured, exists and
    parses (every row complete, every channel configured and not a chat group). Errors name
    rows and columns, never a cell's value (the roster is personal data)."""
    from escalator.school.guardians import RosterError, load_roster, roster_path

    uses = [loc for loc, text in _step_targets(config) if text.rpartition(":")[2] == "guardian"]
    if not uses and config.guardians is None:
        return
    if config.guardians is None:
        yield _error(uses[0], _("target 'guardian' needs a guardian roster: add "
                                "guardians: {{roster: path/to/guardians.csv}}"))
        return
    try:
        load_roster(config)
    except RosterError as e:
        path = roster_path(config)
        if e.errors:
            for err in e.errors[:20]:
                yield _error(("guardians", "roster"),
                             _("{path}: row {row} (line {line}), column {column}: "
                               "{message}").format(path=path, row=err["row"], line=err["line"],
                                                   column=err["column"], message=err["message"]))
        else:
            yield _error(("guardians", "roster"), e.reason if str(path) in e.reason
                         else f"{path}: {e.reason}")


def check_cluster_references(config: Config) -> Iterator[Finding]:
    """Rule 18: ``clusters.policy`` is a defined policy; the deadline rules that ``clusters``
    names exist; every deadline rule's ``notify`` target names a known role, person or unit."""
    from escalator.school.deadlines import settings

    rules = settings(config).rules
    if config.clusters is not None:
        if config.clusters.policy not in config.policies:
            yield _error(("clusters", "policy"), _unknown_policy(config.clusters.policy, config))
        for loc, rid in ((("clusters", "deadline"), config.clusters.deadline),
                         (("clusters", "notifiable", "deadline"), config.clusters.notifiable.deadline)):
            if rid not in rules:
                yield _error(loc, _("unknown deadline rule {name!r} (not in "
                                    "deadlines.rules)").format(name=rid) + nearest(rid, rules))
    if config.clusters is None and config.deadlines is None:
        return
    for rid, rule in rules.items():
        configured = _configured_rule(config, rid)
        for j, text in enumerate(rule.notify):
            try:
                parse_target(text, config)
            except UnknownTarget:
                if configured:
                    yield _error(("deadlines", "rules", rid, "notify", j),
                                 unknown_target(text, config))
                else:
                    yield _error(("deadlines",), _("default deadline rule {name!r}: {error}").format(
                        name=rid, error=unknown_target(text, config)))


def _configured_rule(config: Config, rid: str) -> bool:
    """Whether deadline rule ``rid`` is in the config file (not a default kept by the merge;
    a rule written out exactly as its default counts as the default)."""
    from escalator.config.models import default_deadline_rule

    if config.deadlines is None:
        return False
    return config.deadlines.rules.get(rid) != default_deadline_rule(rid)


def _overlaps(a: Any, b: Any) -> bool:
    """Whether two route matches (:class:`~escalator.config.models.Match`) can both hold."""
    for name in ("kind", "category", "severity"):
        x, y = getattr(a, name), getattr(b, name)
        if x is not None and y is not None and not set(x) & set(y):
            return False
    return all(b.labels.get(k, v) == v for k, v in a.labels.items())


def _reached_after(config: Config, steps: list[Any], notify: list[str]
                   ) -> tuple[float | None, list[str]]:
    """Seconds of step timeouts before a walk (nobody acting) has told every ``notify`` target
    (inform steps go straight on), or None and the targets it never tells."""
    def key(text: str) -> tuple[str, str] | None:
        try:
            t = parse_target(text, config)
        except UnknownTarget:
            return None
        return (t.kind, t.name)

    wanted = {key(t) for t in notify} - {None}
    told: set[tuple[str, str] | None] = set()
    elapsed = 0.0
    for step in steps:
        told |= {key(t) for t in step.targets}
        if wanted <= told:
            return elapsed, []
        elapsed += 0.0 if step.mode == StepMode.inform else step.timeout
    return None, [t for t in notify if key(t) is not None and key(t) not in told]


def check_deadline_chains(config: Config) -> Iterator[Finding]:
    """Rule 19 (warnings): for each deadline rule with ``within`` > 0 ("at once" rules are
    skipped):

    - its lead time (the rule's ``lead``, else ``deadlines.lead``) is shorter than ``within``
      (else the engine tells the required level as soon as the incident opens);
    - a chain that walks an incident with that deadline (the cluster policy; the policies of
      routes the rule's ``match`` overlaps) reaches the rule's ``notify`` level, when nobody
      acts, before the deadline less the lead time. Otherwise the engine tells the level
      itself at that moment (``deadline_escalation``): the chain never tells some of them, tells
      them only past the deadline, or tells them after the deadline escalation has fired."""
    from escalator.school.deadlines import lead, settings

    rules = settings(config).rules
    for rid, rule in rules.items():
        if rule.within <= 0:
            continue
        ahead = lead(config, rule)
        if ahead >= rule.within:
            loc = (("deadlines", "rules", rid, "lead") if rule.lead is not None
                   else ("deadlines", "lead"))
            yield _warning(loc, _("lead {lead} is not shorter than the {within} deadline of rule "
                                  "{rule!r}: the engine tells its level itself as soon as the "
                                  "incident opens").format(lead=_seconds(ahead),
                                                           within=_seconds(rule.within), rule=rid))
        policies: list[str] = []
        if config.clusters is not None and config.clusters.deadline == rid:
            policies.append(config.clusters.policy)
        if rule.match is not None and config.deadlines is not None:
            policies += [r.policy for r in config.routes
                         if not r.default and _overlaps(r.match, rule.match)]
        for pid in dict.fromkeys(policies):
            policy = config.policies.get(pid)
            if policy is None:
                continue
            after, never = _reached_after(config, policy.steps, rule.notify)
            targets = ", ".join(rule.notify)
            if after is None:
                yield _warning(("policies", pid),
                               _("chain never tells {targets}, required within {within} by "
                                 "deadline rule {rule!r} (the engine will tell them itself at "
                                 "the deadline less the lead time)").format(
                                   targets=", ".join(never), within=_seconds(rule.within),
                                   rule=rid))
            elif after > rule.within:
                yield _warning(("policies", pid),
                               _("chain tells {targets} only after {after} of step timeouts, "
                                 "past the {within} deadline of rule {rule!r} (the engine will "
                                 "tell them itself at the deadline less the lead time)").format(
                                   targets=targets, after=_seconds(after),
                                   within=_seconds(rule.within), rule=rid))
            elif rule.within - ahead < after and ahead < rule.within:  # else: the lead warning
                yield _warning(("policies", pid),
                               _("chain tells {targets} after {after} of step timeouts, later "
                                 "than the {within} deadline of rule {rule!r} less its {lead} "
                                 "lead: the engine's deadline escalation will tell them first, "
                                 "at {first} (the deadline is still met)").format(
                                   targets=targets, after=_seconds(after),
                                   within=_seconds(rule.within), rule=rid, lead=_seconds(ahead),
                                   first=_seconds(rule.within - ahead)))


def check_early_warning(config: Config) -> Iterator[Finding]:
    """Rule 21: ``early_warning`` (docs/early-warning.md): its ``notify`` targets and
    ``policy`` exist, the policy outbreak incidents walk and their deadline rule exist, watched
    ``groups`` are syndrome groups; a warning without ``school.calendar.terms`` (vacations
    would count as school days with no absence)."""
    ew = config.early_warning
    if ew is None or not ew.enabled:
        return
    from escalator.school.deadlines import settings
    from escalator.school.early_warning.outbreaks import policy_id
    from escalator.school.early_warning.series import syndromes

    for j, text in enumerate(ew.notify):
        try:
            parse_target(text, config)
        except UnknownTarget:
            yield _error(("early_warning", "notify", j), unknown_target(text, config))
    if ew.policy is not None and ew.policy not in config.policies:
        yield _error(("early_warning", "policy"), _unknown_policy(ew.policy, config))
    if ew.outbreaks.enabled:
        pid = policy_id(config)
        if pid not in config.policies:
            yield _error(("early_warning", "outbreaks", "policy"),
                         _unknown_policy(pid, config) + _(
                             " (outbreak incidents walk early_warning.outbreaks.policy, else "
                             "clusters.policy, else 'cluster')"))
        rules = settings(config).rules
        if ew.outbreaks.deadline not in rules:
            yield _error(("early_warning", "outbreaks", "deadline"),
                         _("unknown deadline rule {name!r}").format(name=ew.outbreaks.deadline)
                         + nearest(ew.outbreaks.deadline, rules))
    known = syndromes(config)
    for j, g in enumerate(ew.groups or []):
        if g not in known:
            yield _error(("early_warning", "groups", j),
                         _("unknown syndrome group {name!r} (known: {known})").format(
                             name=g, known=", ".join(known)) + nearest(g, known))
    if not config.school.calendar.terms:
        yield _warning(("school", "calendar"),
                       _("early_warning without school.calendar.terms: every workday of the "
                         "vacations counts as a school day with no absence, and a new term's "
                         "first week is judged against them; enter the terms"))


def check_quieting(config: Config) -> Iterator[Finding]:
    """Rule 22: silences, inhibit rules and grouping (docs/silences.md): standing silences'
    ids are unique; a silence already over is dead text; an inhibit rule without ``equal``
    lets one open incident swallow every target event of the whole school; ``group_by`` on a
    route whose policy is ``none`` does nothing."""
    seen: set[str] = set()
    now = datetime.now(config.school.tz)
    for i, s in enumerate(config.silences):
        if s.id in seen:
            yield _error(("silences", i, "id"),
                         _("duplicate silence id {id!r}").format(id=s.id))
        seen.add(s.id)
        end = s.ends_at
        if end is not None and (end if end.tzinfo else end.replace(tzinfo=config.school.tz)) <= now:
            yield _warning(("silences", i, "ends_at"),
                           _("silence {id!r} is over: remove it from the config").format(
                               id=s.id))
    for i, rule in enumerate(config.inhibit_rules):
        if not rule.equal:
            yield _warning(("inhibit_rules", i),
                           _("no 'equal': one open incident matching source_matchers holds "
                             "back every target event in the whole school (name e.g. equal: "
                             "[building])"))
    for i, route in enumerate(config.routes):
        if route.group_by and route.policy == "none":
            yield _warning(("routes", i, "group_by"),
                           _("the route's policy is 'none' (no incident): group_by does "
                             "nothing"))


def check_rosters(config: Config) -> Iterator[Finding]:
    """Rule 23: every rotation names known people and a role that is ``duty_officer`` or
    defined in ``roles:``; (warning) nobody on duty as a roster-backed role in use during the
    next ``rosters.gap_check_days`` days, by the config alone (docs/rosters.md)."""
    from escalator.school.roster import gap_warnings, local_text

    for rid, rot in config.rosters.rotations.items():
        loc = ("rosters", "rotations", rid)
        if rot.role != "duty_officer" and rot.role not in config.roles:
            yield _error((*loc, "role"), f"unknown role {rot.role!r} (duty_officer, or a role "
                                         "defined in roles:)")
        for i, pid in enumerate(rot.people):
            if config.person(pid) is None:
                yield _error((*loc, "people", i), f"unknown person {pid!r}")
    if any(config.person(pid) is None for r in config.rosters.rotations.values()
           for pid in r.people) or config.rosters.gap_check_days == 0:
        return
    days = config.rosters.gap_check_days
    gaps = gap_warnings(config, datetime.now(config.school.tz), days)
    for role in dict.fromkeys(role for role, _gap in gaps):
        spans = [g for r, g in gaps if r == role]
        listed = "; ".join(f"{local_text(config, g.start)} to {local_text(config, g.end)}"
                           for g in spans[:5])
        more = f" and {len(spans) - 5} more" if len(spans) > 5 else ""
        yield _warning(("rosters",), f"nobody is on duty as {role} in the next {days} days: "
                       f"{listed}{more} (school-local; add a rotation, a duty_roster shift or "
                       f"`escalator roster override`)")


def check_quiet_hours(config: Config) -> Iterator[Finding]:
    """Rule 24: ``quiet_hours.channels`` are configured channels."""
    quiet = config.quiet_hours
    for i, cid in enumerate((quiet.channels or []) if quiet else []):
        if cid not in config.channels:
            yield _error(("quiet_hours", "channels", i), f"unknown channel {cid!r}")


def check_replies(config: Config) -> Iterator[Finding]:
    """Replies (docs/replies.md): an ``answer_channel`` is a configured channel (error); a
    webhook's secret and the IMAP password can be read here (warning, as for channel secrets;
    never shown)."""
    from escalator.config.load import resolve_secrets

    replies = config.replies
    if replies is None:
        return
    for name, hook in replies.webhooks.items():
        if hook.answer_channel is not None and hook.answer_channel not in config.channels:
            yield _error(("replies", "webhooks", name, "answer_channel"),
                         f"unknown channel {hook.answer_channel!r}")
        options = hook.model_dump(include={"secret_env", "secret_file"}, exclude_none=True)
        try:
            resolve_secrets(options, config.base_dir)
        except ValueError as e:
            yield _warning(("replies", "webhooks", name, next(iter(options))),
                           f"{e}: this webhook answers 404 without it")
    mail = replies.email
    if mail is not None and mail.answer_channel is not None and mail.answer_channel not in config.channels:
        yield _error(("replies", "email", "answer_channel"), f"unknown channel {mail.answer_channel!r}")
    if mail is not None and mail.imap is not None:
        options = mail.imap.model_dump(include={"password_env", "password_file"}, exclude_none=True)
        try:
            resolve_secrets(options, config.base_dir)
        except ValueError as e:
            yield _warning(("replies", "email", "imap", next(iter(options))),
                           f"{e}: the mailbox cannot be read without it")


CHECKS: list[Callable[[Config], Iterator[Finding]]] = [
    check_step_targets,
    check_person_roles,
    check_contact_channels,
    check_route_policies,
    check_roster_people,
    check_person_classes,
    check_targets_reach_someone,
    check_class_teachers,
    check_duplicate_ids,
    check_timeouts,
    check_default_route,
    check_people_reachable,
    check_shadowed_routes,
    check_heartbeat_policies,
    check_channel_templates,
    check_calendar_years,
    check_guardian_roster,
    check_cluster_references,
    check_deadline_chains,
    check_secrets_resolvable,
    check_early_warning,
    check_register_notify,
    check_quieting,
    check_rosters,
    check_quiet_hours,
    check_contact_addresses,
    check_replies,
]
"""Every rule, in the order its findings are listed."""


def run_checks(config: Config) -> list[Finding]:
    """Every cross-reference problem in ``config``; an empty list when there is none."""
    return [finding for check in CHECKS for finding in check(config)]
