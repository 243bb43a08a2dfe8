"""Pydantic models of the administrator's YAML config (one file).

Top level: ``school``, ``roles``, ``people``, ``units``, ``channels``, ``policies``, ``routes``,
``duty_roster``, ``rosters``, ``quiet_hours``, ``heartbeats``, ``sources``, ``daemon``, ``api``,
``delivery``. Durations are seconds (int) or
strings such as ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``. Cross-references (a person's role, a
step's target, a route's policy, …) are checked by :mod:`escalator.config.checks`, not here.
"""

from __future__ import annotations

import copy
import re
from datetime import date, time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from escalator.config import early_warning_defaults, school_defaults
from escalator.config.duty import QuietHoursConfig, RostersConfig
from escalator.config.quieting import InhibitRule, SilenceConfig, check_group_summary
from escalator.config.replies import RepliesConfig
from escalator.events import Category, Kind, Severity, Symptom

TIMEOUT_MIN = 5
"""Shortest step timeout (seconds)."""
TIMEOUT_MAX = 7 * 86400
"""Longest step timeout (seconds): one week."""

RELATIVE_ROLES = {"class_teacher", "grade_leader", "duty_officer", "guardian"}
"""Roles resolved against the event when a step fires (DESIGN.md "Targets")."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds from an int/float or a string like ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``.

    Raises ``ValueError`` for anything else.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as '15m'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"not a duration: {value!r} (use seconds or e.g. '30s', '15m', '2h')")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Term(_Model):
    """A school term (学期): ``start`` and ``end`` dates, both included."""

    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> Term:
        if self.end < self.start:
            raise ValueError("a term's end is before its start")
        return self


class SchoolHours(_Model):
    """The school-local hours of a school day: ``start`` (included) to ``end`` (excluded)."""

    start: time = time(7, 30)
    end: time = time(17, 30)


class DayOverride(StrEnum):
    """What an administrator says a date is, over the calendar library."""

    holiday = "holiday"
    school_day = "school_day"


class SchoolCalendarConfig(_Model):
    """``school.calendar`` (docs/school-rules.md): ``terms`` (none = every workday is a school
    day), per-date ``overrides`` (e.g. the State Council's holiday schedule for a year the
    calendar library does not know yet) and ``school_hours``."""

    terms: list[Term] = Field(default_factory=list)
    overrides: dict[date, DayOverride] = Field(default_factory=dict)
    school_hours: SchoolHours = Field(default_factory=SchoolHours)


class School(_Model):
    """The school: ``classes`` are ``"grade-class"`` ids such as ``"3-2"``; ``grades`` like ``"3"``.

    A class may be written ``{id: "3-2", size: 45}``: its size (应到人数, pupils) goes to
    ``class_sizes`` (the denominator of sickness-absence rates, docs/early-warning.md)."""

    name: str
    timezone: str = "Asia/Shanghai"
    language: str = Field(default="zh", pattern=r"^(zh|en)$")
    grades: list[str] = Field(default_factory=list)
    classes: list[Annotated[str, Field(pattern=r"^\d{1,2}-\d{1,2}$")]] = Field(default_factory=list)
    class_sizes: dict[Annotated[str, Field(pattern=r"^\d{1,2}-\d{1,2}$")],
                      Annotated[int, Field(ge=1, le=500)]] = Field(default_factory=dict)
    """Pupils per class (``{"3-2": 45}``), from ``classes`` entries with a ``size``."""
    calendar: SchoolCalendarConfig = Field(default_factory=SchoolCalendarConfig)

    @model_validator(mode="before")
    @classmethod
    def _class_entries(cls, data: Any) -> Any:
        """``classes: [{id: "3-2", size: 45}, "3-1"]`` → ids in ``classes``, sizes in
        ``class_sizes`` (early warning's denominator)."""
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            return data
        if not any(isinstance(c, dict) for c in data["classes"]):
            return data
        data = dict(data)
        sizes = dict(data.get("class_sizes") or {})
        ids: list[Any] = []
        for c in data["classes"]:
            if isinstance(c, dict) and set(c) <= {"id", "size"} and "id" in c:
                ids.append(c["id"])
                if c.get("size") is not None:
                    sizes[str(c["id"])] = c["size"]
            else:
                ids.append(c)
        data["classes"], data["class_sizes"] = ids, sizes
        return data

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown IANA timezone {v!r}") from e
        return v

    @field_validator("grades", mode="before")
    @classmethod
    def _grades_text(cls, v: Any) -> Any:
        return [str(g) for g in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _grades_from_classes(self) -> School:
        for c in self.classes:
            g = c.split("-")[0]
            if g not in self.grades:
                self.grades.append(g)
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Role(_Model):
    """A role an administrator defines: a display name (``name``, Chinese) and a note."""

    name: str | None = None
    description: str | None = None


class ContactMethod(_Model):
    """One way to reach a person or unit: a configured ``channel`` id and the address ``to``."""

    channel: Id
    to: str = Field(min_length=1, max_length=500)


class Person(_Model):
    """A person: ``roles`` (role names), the ``classes``/``grades`` they hold, ``contacts`` in order.

    Contact methods are tried in order: the first is used, the next on a permanent failure.
    """

    id: Id
    name: str = Field(min_length=1, max_length=100)
    title: str | None = None
    roles: list[str] = Field(default_factory=list)
    classes: list[str] = Field(default_factory=list)
    grades: list[str] = Field(default_factory=list)
    contacts: list[ContactMethod] = Field(default_factory=list)
    access: Literal["none", "viewer", "responder", "administrator"] = "responder"
    """What the person may do in the web console (docs/console.md): ``viewer`` looks (no
    pupils' names), ``responder`` also acts on incidents, ``administrator`` everything (the
    settings page too); ``none`` cannot sign in."""

    @field_validator("grades", mode="before")
    @classmethod
    def _grades_text(cls, v: Any) -> Any:
        return [str(g) for g in v] if isinstance(v, list) else v


class Unit(_Model):
    """An external partner unit (联防联控单位): district CDC, police station, education bureau, …

    ``responsible`` names its responsible person (责任人); ``contacts`` as for a person.
    ``drills``: whether drill events (``drill: true``) may reach it.
    """

    id: Id
    name: str = Field(min_length=1, max_length=100)
    responsible: str | None = None
    phone: str | None = None
    contacts: list[ContactMethod] = Field(default_factory=list)
    drills: bool = False


class ChannelConfig(_Model):
    """A configured channel: its plugin ``type`` and plugin-specific ``options``.

    An option whose key ends in ``_env`` is read from that environment variable, one ending in
    ``_file`` from that file (relative to the config file); both yield the key without the suffix.
    """

    type: Id
    options: dict[str, Any] = Field(default_factory=dict)
    templates: dict[Literal["title", "body"], str] = Field(default_factory=dict)
    """Jinja2 overrides of the packaged message templates for this channel."""


class StepMode(StrEnum):
    """How a step waits (DESIGN.md "Escalation policy")."""

    escalate = "escalate"
    report = "report"
    inform = "inform"


class Step(_Model):
    """One escalation step: whom to tell (``targets``), how long to wait (``timeout``), ``mode``.

    Targets: a role name (administrator-defined or relative: ``class_teacher``, ``grade_leader``,
    ``duty_officer``, ``guardian``), a unit id, or explicit ``person:ID`` / ``unit:ID`` /
    ``role:NAME``. ``timeout`` is seconds (ignored for ``inform`` steps, which go straight on).
    """

    targets: list[str] = Field(min_length=1)
    timeout: Duration = 900.0
    mode: StepMode = StepMode.escalate
    name: str | None = None
    on_report_only: bool = False
    """Reached only when the level before decides to report (上报): its timeout stops the walk
    there and reminds it instead (docs/decisions.md). Never the first step."""
    remind_every: Duration | None = None
    """Seconds between reminders while the walk waits on this level; None: the policy's."""


class Policy(_Model):
    """An escalation policy: ordered ``steps``; ``repeat`` = how many more times to walk them."""

    name: str | None = None
    steps: list[Step] = Field(min_length=1)
    repeat: int = Field(default=0, ge=0, le=10)
    remind_every: Duration | None = 3600.0
    """Seconds between reminders to the level the walk stops at (the last level that waits,
    once the chain is walked; or the level before a step ``on_report_only``) until someone
    acts; ``0``/``off``/None: no reminders. Default one hour (docs/decisions.md)."""
    ack_timeout: Duration | None = None
    """Seconds an acknowledged incident may stay unresolved before it is triggered again and
    walks its chain from the first step (PagerDuty's acknowledgement timeout); None: never."""

    @field_validator("remind_every", "ack_timeout", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        return None if v in (0, "0", "off", False) else v

    @model_validator(mode="after")
    def _gates(self) -> Policy:
        if self.steps[0].on_report_only:
            raise ValueError("steps[0]: the first step cannot be on_report_only (nobody before it decides)")
        for name in ("remind_every", "ack_timeout"):
            v = getattr(self, name)
            if v is not None and not TIMEOUT_MIN <= v <= TIMEOUT_MAX:
                raise ValueError(f"{name}: between {TIMEOUT_MIN} s and 7 days, or off")
        for i, step in enumerate(self.steps):
            if step.remind_every is not None and not TIMEOUT_MIN <= step.remind_every <= TIMEOUT_MAX:
                raise ValueError(f"steps[{i}].remind_every: between {TIMEOUT_MIN} s and 7 days")
        return self


def _one_or_many(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


class Match(_Model):
    """Route conditions; each given field must match (a list means any of)."""

    kind: Annotated[list[Kind], BeforeValidator(_one_or_many)] | None = None
    category: Annotated[list[Category], BeforeValidator(_one_or_many)] | None = None
    severity: Annotated[list[Severity], BeforeValidator(_one_or_many)] | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class Route(_Model):
    """A route: ``match`` → ``policy`` (a policy id, or ``none`` to log without an incident).

    Routes are tried in order; the first that matches wins; the one with ``default: true``
    (exactly one) is used when none matches.
    """

    match: Match = Field(default_factory=Match)
    policy: str
    default: bool = False
    urgency: Literal["high", "low"] | None = None
    """Quiet hours (docs/quiet-hours.md): ``high`` — its incidents' messages go at once at any
    hour; ``low`` — they wait for school hours whatever the severity; unset: by severity."""
    group_by: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list)
    """Grouping (docs/silences.md): events of this route with the same values of these fields
    or labels are one incident (its dedup key is the group's), told once with the count."""
    group_wait: Duration = Field(default=0.0, ge=0, le=TIMEOUT_MAX)
    """Seconds a new group waits for more members before its first step fires."""
    group_interval: Duration = Field(default=0.0, ge=0, le=TIMEOUT_MAX)
    """Seconds between update messages about new members (0: no updates)."""
    group_summary: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """The group incident's summary, e.g. ``"{place} 共 {count} 个探测器报警"``
    (:data:`escalator.config.quieting.GROUP_FIELDS`)."""

    @model_validator(mode="after")
    def _grouping(self) -> Route:
        if not self.group_by and (self.group_wait or self.group_interval or self.group_summary):
            raise ValueError("group_wait, group_interval and group_summary need group_by")
        if self.group_summary is not None:
            check_group_summary(self.group_summary, self.group_by)
        return self


class DutyShift(_Model):
    """One 值班 entry: ``person`` is on duty on ``weekdays`` (1=Mon … 7=Sun) and/or ``dates``,
    between ``start`` and ``end`` (school-local times; ``end`` ≤ ``start`` crosses midnight).
    With neither ``weekdays`` nor ``dates``: every day.
    """

    person: Id
    weekdays: list[Annotated[int, Field(ge=1, le=7)]] = Field(default_factory=list)
    dates: list[date] = Field(default_factory=list)
    start: time = time(0, 0)
    end: time = time(0, 0)


class Heartbeat(_Model):
    """A heartbeat monitor (docs/school-rules.md), e.g. the daily zero report (零报告): a
    ``kind: heartbeat`` event for it is expected every (school) day by ``expect_by``
    (school-local) + ``grace``; when none came, an incident walks ``policy``.

    An event feeds the monitor named by its ``labels.monitor``, else by its ``source``; a
    monitor also takes events whose monitor label or source is in ``sources``.
    """

    name: str | None = None
    expect_by: time
    grace: Duration = 0.0
    school_days_only: bool = True
    policy: Id
    sources: list[str] = Field(default_factory=list)
    category: Category = Category.other
    severity: Severity = Severity.high
    zero_report: bool | None = None
    """A daily zero report (零报告: "no new cases today"): checked against the day's recorded
    cases and open clusters (:mod:`escalator.school.zero_reports`). None: yes when
    ``category`` is ``infectious_disease``."""
    mismatch_notify: list[str] | None = None
    """Targets told when a zero report contradicts the day's records (零报告与登记不符).
    None: the roles ``school_doctor`` and ``leadership`` that the config has, else the
    monitor's ``policy``."""

    @property
    def is_zero_report(self) -> bool:
        return self.zero_report if self.zero_report is not None else (
            self.category == Category.infectious_disease)


class GuardiansConfig(_Model):
    """``guardians`` (docs/school-rules.md "Guardians"): the guardian roster for the relative
    role ``guardian``. ``roster``: a CSV file (UTF-8 or GBK; relative to the config file) mapping
    a pupil id (school number or the registers' pseudonymous ``P-…`` id) to guardians' contacts;
    ``encoding``: declare it instead of detecting; ``channel``: the channel of rows whose channel
    cell is empty; ``message``: what guardians are asked to do (default: per event kind);
    ``contact``: the school contact shown to guardians; ``drills``: whether drill events reach
    guardians (default: no)."""

    roster: str = Field(min_length=1)
    encoding: str | None = None
    channel: Id | None = None
    message: str | None = Field(default=None, max_length=200)
    contact: str | None = Field(default=None, max_length=100)
    drills: bool = False


class Threshold(_Model):
    """A cluster threshold: at least ``count`` distinct pupils within ``days`` consecutive
    school-local days (``days: 1`` = one day)."""

    count: int = Field(ge=1, le=1000)
    days: int = Field(ge=1, le=60)


class Syndrome(_Model):
    """A syndrome group (症候群): its display ``name`` and the WS/T 772 ``symptoms`` it covers."""

    name: str | None = None
    symptoms: list[Symptom] = Field(min_length=1)


def _default_thresholds() -> list[Threshold]:
    return [Threshold(**t) for t in school_defaults.CLUSTER_THRESHOLDS]


class Disease(_Model):
    """A disease with its own cluster ``thresholds``, matched on an event's ``diagnosis`` (any
    of ``diagnoses`` appearing in it, case-insensitive); ``source``: where the rule comes from."""

    name: str | None = None
    diagnoses: list[str] = Field(min_length=1)
    thresholds: list[Threshold] = Field(min_length=1)
    source: str | None = None


class Notifiable(_Model):
    """Notifiable diseases (法定传染病): a case whose ``diagnosis`` contains one of
    ``diagnoses`` (case-insensitive) gets the ``deadline`` rule (default: at once, CDC)."""

    diagnoses: list[str] = Field(
        default_factory=lambda: list(school_defaults.NOTIFIABLE_DISEASES))
    deadline: Id = "notifiable_disease"


class ClustersConfig(_Model):
    """``clusters`` (docs/school-rules.md "Symptom clusters"): cases (suspected_case or
    sickness absence with a subject and a class or dormitory) of one syndrome group or disease
    reaching a threshold open a cluster incident that walks ``policy`` with the ``deadline``
    rule (default ``school_cluster``: CDC and education bureau within 24 h). Defaults and their
    sources: :mod:`escalator.config.school_defaults`."""

    policy: Id = "cluster"
    deadline: Id = "school_cluster"
    severity: Severity = Severity.high
    thresholds: list[Threshold] = Field(default_factory=_default_thresholds, min_length=1)
    syndromes: dict[Id, Syndrome] = Field(
        default_factory=lambda: {k: Syndrome(**v) for k, v in school_defaults.SYNDROMES.items()})
    diseases: dict[Id, Disease] = Field(
        default_factory=lambda: {k: Disease(**v) for k, v in school_defaults.DISEASES.items()})
    notifiable: Notifiable = Field(default_factory=Notifiable)


class DeadlineRule(_Model):
    """A legal reporting deadline: by ``within`` after the first event (0 = at once) the
    ``notify`` targets (step-target syntax) must have been told; ``lead`` (default: the
    section's) before it, the engine tells them itself. ``match``: the incidents it applies to
    (by their first event); without one, only the rules that name it (``clusters``) apply it."""

    name: str | None = None
    within: Duration = Field(ge=0)
    notify: list[str] = Field(min_length=1)
    lead: Duration | None = Field(default=None, ge=0)
    match: Match | None = None
    source: str | None = None


def default_deadline_rule(rule_id: str) -> DeadlineRule | None:
    """The default rule ``rule_id`` of :mod:`escalator.config.school_defaults`, or None."""
    raw = school_defaults.DEADLINE_RULES.get(rule_id)
    return None if raw is None else DeadlineRule(**copy.deepcopy(raw))


class DeadlinesConfig(_Model):
    """``deadlines`` (docs/school-rules.md "Legal deadlines"): ``lead`` (default 30 min) and the
    ``rules`` (default: notifiable_disease at once, school_cluster 24 h, public_health_emergency
    2 h; see :mod:`escalator.config.school_defaults`). Configured rules MERGE over the defaults:
    a rule with a default's name replaces it, the other defaults stay (first, in their order;
    new rules follow in file order)."""

    lead: Duration = Field(default=school_defaults.DEADLINE_LEAD, ge=0)
    rules: dict[Id, DeadlineRule] = Field(
        default_factory=lambda: {k: DeadlineRule(**copy.deepcopy(v))
                                 for k, v in school_defaults.DEADLINE_RULES.items()})

    @field_validator("rules", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # None or a wrong type: the field's own error
        return {**copy.deepcopy(school_defaults.DEADLINE_RULES), **value}


# ------------------------------------------------------------------ early warning
# (docs/early-warning.md; escalator/school/early_warning/). Defaults with their sources:
# escalator/config/early_warning_defaults.py.


class EarsMethod(_Model):
    """One EARS method (C1, C2 or C3): signal when max(0, z − ``k``) > ``h`` (C3: the sum of
    that over the day and the two school days before it, on the C2 baseline); ``enabled``;
    ``source``: where the parameters come from."""

    enabled: bool = True
    k: float = Field(ge=0, le=10)
    h: float = Field(gt=0, le=50)
    source: str | None = None


def _default_methods() -> dict[str, EarsMethod]:
    return {k: EarsMethod(**v) for k, v in early_warning_defaults.EARS_METHODS.items()}


class OutbreakThreshold(_Model):
    """A published outbreak standard: ≥ ``count`` distinct pupils with the disease in one
    ``scope`` (``school``, ``grade``, ``class``, ``dormitory``) within ``days`` consecutive
    school-local days."""

    scope: Literal["school", "grade", "class", "dormitory"]
    count: int = Field(ge=1, le=10000)
    days: int = Field(ge=1, le=60)


class OutbreakRule(_Model):
    """A disease's outbreak standards (``thresholds``), matched on an event's ``diagnosis``
    (any of ``diagnoses``, as ``clusters`` matches); ``ili``: also count influenza-like illness
    by its case definition (≥ 38 ℃ with cough or sore throat); ``source``: where it comes from."""

    name: str | None = None
    name_en: str | None = None
    diagnoses: list[str] = Field(min_length=1)
    ili: bool = False
    thresholds: list[OutbreakThreshold] = Field(min_length=1)
    source: str | None = None


class OutbreaksConfig(_Model):
    """``early_warning.outbreaks``: per-disease fixed thresholds at every scope they are
    published for (default :data:`~escalator.config.early_warning_defaults.OUTBREAK_RULES`).
    ``rules`` MERGE over the defaults (a rule with a default's id replaces it). Reaching one
    opens an incident walking ``policy`` (default: ``clusters.policy``, else ``cluster``) with
    the ``deadline`` rule (default ``school_cluster``: CDC and bureau within 24 h)."""

    enabled: bool = True
    policy: Id | None = None
    deadline: Id = "school_cluster"
    severity: Severity = Severity.high
    rules: dict[Id, OutbreakRule] = Field(
        default_factory=lambda: {k: OutbreakRule(**copy.deepcopy(v))
                                 for k, v in early_warning_defaults.OUTBREAK_RULES.items()})

    @field_validator("rules", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {**copy.deepcopy(early_warning_defaults.OUTBREAK_RULES), **value}


ZERO_REPORT_MISMATCH_POLICY = "zero_report_mismatch"
"""The policy a zero report that contradicts the day's records walks (零报告与登记不符), added
by :meth:`Config._zero_report_mismatch_policy` when a zero-report monitor exists."""

EARLY_WARNING_POLICY = "early_warning"
"""The policy id early-warning signals walk when ``early_warning.policy`` is not set: one
``inform`` step to ``early_warning.notify``, added to ``policies`` when the config is loaded
unless the config defines a policy with this id (:meth:`Config._early_warning_policy`)."""


class EarlyWarningConfig(_Model):
    """``early_warning`` (docs/early-warning.md): daily sickness-absence series per class,
    grade and school, overall and per syndrome group (``clusters.syndromes``, or the default
    groups), judged by EARS C1/C2/C3 on school days only; a signal opens an ``early_warning``
    incident that tells ``notify`` (one inform step, the policy :data:`EARLY_WARNING_POLICY`;
    default the school doctor) or walks ``policy`` when given. ``kinds``: which events are counted (``absence``: sickness absence;
    add ``suspected_case`` to count pupils at school with symptoms). ``scopes``: which series.
    ``min_sd``: floor of the baseline sd (pupils). ``evaluate_at``: school-local time after which
    the daily reconcile judges today's series (events are judged as they arrive).
    ``outbreaks``: published per-disease thresholds per school, grade, class and dormitory."""

    enabled: bool = True
    kinds: list[Kind] = Field(default_factory=lambda: [Kind.absence], min_length=1)
    scopes: list[Literal["class", "grade", "school"]] = Field(
        default_factory=lambda: ["class", "grade", "school"], min_length=1)
    groups: list[Id] | None = None
    """Syndrome groups watched besides the overall series (default: every syndrome group)."""
    baseline_days: int = Field(default=early_warning_defaults.EARS_BASELINE_DAYS, ge=3, le=56)
    guard_days: int = Field(default=early_warning_defaults.EARS_GUARD_DAYS, ge=0, le=14)
    min_sd: float = Field(default=early_warning_defaults.MIN_SD, gt=0, le=100)
    methods: dict[Literal["C1", "C2", "C3"], EarsMethod] = Field(default_factory=_default_methods)
    notify: list[str] = Field(default_factory=lambda: ["school_doctor"], min_length=1)
    policy: Id | None = None
    severity: Severity = Severity.medium
    evaluate_at: time = time(10, 0)
    outbreaks: OutbreaksConfig = Field(default_factory=OutbreaksConfig)

    @field_validator("methods", mode="before")
    @classmethod
    def _merge_methods(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = copy.deepcopy(early_warning_defaults.EARS_METHODS)
        for name, given in value.items():
            out[name] = ({**out.get(name, {}), **given} if isinstance(given, dict) else given)
        return out


class SourceConfig(_Model):
    """A source to run: plugin ``type`` and ``options`` (e.g. the spool source's ``path``)."""

    type: Id
    options: dict[str, Any] = Field(default_factory=dict)


class DaemonSection(_Model):
    """Daemon settings in the file; ``ESCALATOR_*`` environment variables win over these."""

    state_dir: str | None = None
    spool_dir: str | None = None
    http_listen: str | None = None
    log_format: str | None = None
    public_base_url: str | None = None
    node: str | None = None
    node_ttl: float | None = None
    database_url: str | None = None
    """Where the store lives: ``postgresql://user@host/db`` or a SQLite file (relative to the
    config file's folder); default ``escalator.sqlite3`` under ``state_dir``. Environment:
    ``ESCALATOR_DATABASE_URL`` (put a password there or in ``~/.pgpass``, not in the file)."""


class TokenSpec(_Model):
    """An API bearer token: its secret from ``token_env`` (an environment variable) or
    ``token_file`` (a file, relative to the config file); ``admin`` tokens may do everything,
    others only submit events, Alertmanager alerts and heartbeats."""

    token_env: str | None = None
    token_file: str | None = None
    admin: bool = False

    @model_validator(mode="after")
    def _one_secret(self) -> TokenSpec:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("give exactly one of token_env, token_file")
        return self


class PagerDutySpec(_Model):
    """A PagerDuty Events v2 integration: its routing key from ``routing_key_env`` or
    ``routing_key_file``."""

    routing_key_env: str | None = None
    routing_key_file: str | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> PagerDutySpec:
        if (self.routing_key_env is None) == (self.routing_key_file is None):
            raise ValueError("give exactly one of routing_key_env, routing_key_file")
        return self


class ApiSection(_Model):
    """The HTTP API (``docs/api.md``): ``tokens`` (name → :class:`TokenSpec`; the name is
    recorded as the source/actor), ``pagerduty`` (name → :class:`PagerDutySpec`) and
    ``max_body_bytes`` (largest request body; default 1 MiB)."""

    tokens: dict[Id, TokenSpec] = Field(default_factory=dict)
    pagerduty: dict[Id, PagerDutySpec] = Field(default_factory=dict)
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)


class RetentionSection(_Model):
    """``retention`` (docs/school-rules.md "Retention", docs/privacy.md): how long personal data
    is kept. ``personal_data_days``: days after an incident is resolved (or an event without an
    incident was received) before its pupil data — subject id, name, guardian phone, free-text
    details, the reporter, guardians' names and addresses, and the text of messages sent — is
    purged; counts, times, categories and deadlines stay. Default 180 days: PIPL Art. 19 (保存期限
    应当为实现处理目的所必要的最短时间) asks for the shortest period the purpose needs; set it to the
    school's own record-keeping rule."""

    personal_data_days: int = Field(default=180, ge=30, le=36500)


class ConsoleSection(_Model):
    """``console`` (docs/console.md): the web console served at ``/``. ``pupil_data_roles``:
    the roles (besides a class's own teacher and console administrators) that see pupils'
    personal data — PIPL Art. 31 (a child under 14: only those whose work needs it);
    ``session_hours``: how long a sign-in lasts."""

    pupil_data_roles: list[str] = Field(default_factory=lambda: ["school_doctor"])
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)


def _switch(value: Any) -> Any:
    """``digest: off`` / ``false`` (YAML reads ``off`` as false) → disabled; ``on`` / ``true`` →
    enabled with the defaults; a mapping as it is."""
    if isinstance(value, bool):
        return {"enabled": value}
    if isinstance(value, str) and value.strip().lower() in ("off", "on", "false", "true"):
        return {"enabled": value.strip().lower() in ("on", "true")}
    return value


class DigestConfig(_Model):
    """``delivery.digest``: when more than ``after`` messages wait for one address (one channel
    id and address), they go as one digest message (docs/delivery.md "Digests"); nothing is
    dropped, each is recorded in the ledger as ``digested``. ``enabled: false`` (or
    ``digest: off``): every message goes on its own."""

    enabled: bool = True
    after: int = Field(default=5, ge=1, le=1000)


class DeliverySection(_Model):
    """``delivery`` (docs/delivery.md): ``concurrency_per_channel`` — sends in flight at once per
    channel id (one per address at a time); ``digest`` (:class:`DigestConfig`);
    ``step_wait_cap`` — seconds (at most) a step's timeout waits for its first message to be
    delivered (or fail for good): the step times out at most ``step_wait_cap`` + its timeout
    after it fired."""

    concurrency_per_channel: int = Field(default=8, ge=1, le=256)
    digest: Annotated[DigestConfig, BeforeValidator(_switch)] = Field(default_factory=DigestConfig)
    step_wait_cap: Duration = Field(default=600.0, ge=0, le=TIMEOUT_MAX)


class IntakeSection(_Model):
    """``intake`` (docs/classes.md "Times"): ``future_skew``, how far (seconds) an event's
    ``occurred_at`` may lie ahead of the time received before the answer and the incident's
    timeline carry a warning (a clock set wrong). A time in the future is never used for
    timers, days or dedup keys: it is replaced by the time received (the written time is kept
    in ``labels.occurred_at_as_sent``)."""

    future_skew: Duration = Field(default=600.0, ge=0)


class RegisterLayout(_Model):
    """A register form of the school's own (``registers.layouts``, docs/spool.md "Layouts"):
    ``columns`` maps a column heading as written (``缺勤原因(描述症状、就诊记录)``) to a field of
    the register ``kind`` (``absence``: date, class, grade, pupil, name, sex, age, phone,
    reason, symptoms, onset, reporter, enrolled, missed; ``chenwujian``: the morning-check
    fields). Used for files whose name matches ``files`` (glob, e.g. ``缺勤*.csv``) or that come
    from a source in ``sources``; with neither, for every register whose header it fits."""

    kind: Literal["absence", "chenwujian"] = "absence"
    columns: dict[str, str] = Field(min_length=1)
    files: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_fields(self) -> RegisterLayout:
        known = REGISTER_FIELDS[self.kind]
        for heading, field in self.columns.items():
            if field.startswith("symptom:") and self.kind == "chenwujian":
                if field[len("symptom:"):] not in {s.value for s in Symptom}:
                    raise ValueError(f"column {heading!r}: unknown symptom code "
                                     f"{field[len('symptom:'):]!r} (known: "
                                     f"{', '.join(s.value for s in Symptom)})")
            elif field not in known:
                raise ValueError(f"column {heading!r}: unknown field {field!r} for a {self.kind} "
                                 f"register (known: {', '.join(known)}"
                                 + (", symptom:<code>)" if self.kind == "chenwujian" else ")"))
        return self


REGISTER_FIELDS: dict[str, tuple[str, ...]] = {
    "absence": ("date", "class", "grade", "pupil", "reason", "symptoms", "onset", "reporter",
                "enrolled", "missed", "name", "sex", "age", "phone", "no"),
    "chenwujian": ("no", "grade", "class", "name", "sex", "age", "phone", "present", "other",
                   "temperature", "seen_doctor", "diagnosis", "date", "enrolled"),
}
"""The fields a register layout may map a heading to (:mod:`escalator.intake.registers` reads
them; ``tests/test_register_rows.py`` checks both lists agree)."""


class RegistersSection(_Model):
    """``registers`` (docs/spool.md): ``layouts`` (:class:`RegisterLayout`) and ``notify``,
    the targets told how many rows of which register were refused and why (default: the
    school doctor, ``school_doctor``)."""

    layouts: list[RegisterLayout] = Field(default_factory=list)
    notify: list[str] = Field(default_factory=lambda: ["school_doctor"], min_length=1)


class Config(_Model):
    """The whole config file. Build it with :func:`escalator.config.load_config`."""

    school: School
    roles: dict[Id, Role] = Field(default_factory=dict)
    people: list[Person] = Field(default_factory=list)
    units: list[Unit] = Field(default_factory=list)
    channels: dict[Id, ChannelConfig] = Field(default_factory=dict)
    policies: dict[Id, Policy] = Field(default_factory=dict)
    routes: list[Route] = Field(min_length=1)
    duty_roster: list[DutyShift] = Field(default_factory=list)
    heartbeats: dict[Id, Heartbeat] = Field(default_factory=dict)
    sources: dict[Id, SourceConfig] = Field(default_factory=dict)
    daemon: DaemonSection = Field(default_factory=DaemonSection)
    plugins_dir: str | None = None
    """A folder of ``*.py`` plugin files to load (relative to the config file's folder)."""
    administrators: list[str] = Field(default_factory=list)
    """Targets told about the daemon's own problems (a config reload that failed)."""
    api: ApiSection = Field(default_factory=ApiSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)
    """How long personal data is kept (:mod:`escalator.school.retention`)."""
    guardians: GuardiansConfig | None = None
    """The guardian roster (relative role ``guardian``); None: ``guardian`` reaches nobody."""
    clusters: ClustersConfig | None = None
    """Symptom clusters and notifiable diagnoses (docs/school-rules.md); None: off."""
    deadlines: DeadlinesConfig | None = None
    """Legal reporting deadlines; None: only those of ``clusters`` (with the default rules)."""
    early_warning: EarlyWarningConfig | None = None
    """Early warning from sickness absence (docs/early-warning.md); None: off."""
    delivery: DeliverySection = Field(default_factory=DeliverySection)
    """How the delivery worker sends: concurrency, digests, the step-wait cap."""
    rosters: RostersConfig = Field(default_factory=RostersConfig)
    """Rotations for ``duty_officer`` and other roles (docs/rosters.md)."""
    quiet_hours: QuietHoursConfig | None = None
    """Which messages wait for school hours (docs/quiet-hours.md); None: none wait."""
    intake: IntakeSection = Field(default_factory=IntakeSection)
    """How events are screened on intake: the allowed clock skew."""
    registers: RegistersSection = Field(default_factory=RegistersSection)
    """CSV registers: the school's own layouts; who is told about refused rows."""
    silences: list[SilenceConfig] = Field(default_factory=list)
    """Standing silences and maintenance windows (docs/silences.md)."""
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)
    """Inhibit rules (docs/silences.md "Inhibition")."""
    console: ConsoleSection = Field(default_factory=ConsoleSection)
    """The web console: who sees pupils' data, how long a sign-in lasts."""
    replies: RepliesConfig | None = None
    """Answering from the phone: reply codes, SMS webhooks, e-mail replies (docs/replies.md)."""

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source: Path | None = PrivateAttr(default=None)
    _warnings: list[Any] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _early_warning_policy(self) -> Config:
        """Early warning on without its own ``policy``: add the policy
        :data:`EARLY_WARNING_POLICY` (one ``inform`` step to ``early_warning.notify``, named in
        ``school.language``) unless ``policies`` has one with that id."""
        ew = self.early_warning
        if (ew is not None and ew.enabled and ew.policy is None
                and EARLY_WARNING_POLICY not in self.policies):
            name = ("因病缺勤早期预警" if self.school.language == "zh"
                    else "Sickness-absence early warning")
            self.policies[EARLY_WARNING_POLICY] = Policy(
                name=name, steps=[Step(targets=list(ew.notify), mode=StepMode.inform)])
        return self

    @model_validator(mode="after")
    def _zero_report_mismatch_policy(self) -> Config:
        """A zero-report monitor: add the policy :data:`ZERO_REPORT_MISMATCH_POLICY` (one
        ``inform`` step to the monitors' ``mismatch_notify``, default the roles
        ``school_doctor`` and ``leadership`` the config has) unless ``policies`` has one."""
        if ZERO_REPORT_MISMATCH_POLICY in self.policies:
            return self
        targets: list[str] = []
        for monitor in self.heartbeats.values():
            if monitor.is_zero_report:
                wanted = monitor.mismatch_notify
                if wanted is None:
                    wanted = [r for r in ("school_doctor", "leadership") if r in self.roles]
                targets += [t for t in wanted if t not in targets]
        if targets:
            name = "零报告与登记不符" if self.school.language == "zh" else "Zero report contradicts the records"
            self.policies[ZERO_REPORT_MISMATCH_POLICY] = Policy(
                name=name, steps=[Step(targets=targets, mode=StepMode.inform)])
        return self

    @property
    def base_dir(self) -> Path:
        """The config file's folder: relative paths in the file are read from here."""
        return self._base_dir

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def warnings(self) -> list[Any]:
        """Warnings (:class:`~escalator.config.load.Problem`) found when loading."""
        return self._warnings

    def person(self, pid: str) -> Person | None:
        return next((p for p in self.people if p.id == pid), None)

    def unit(self, uid: str) -> Unit | None:
        return next((u for u in self.units if u.id == uid), None)
