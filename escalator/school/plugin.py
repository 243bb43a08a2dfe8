"""The built-in school rules as a plugin (docs/school-rules.md), registered like any other
through :data:`escalator.plugins.BUILTIN_PLUGINS`.

Order (the order the engine calls them, :mod:`escalator.engine.rules`): heartbeat monitors,
legal deadlines, symptom clusters and notifiable diagnoses, early warning from sickness absence
(docs/early-warning.md), the zero report checked against the records (零报告与登记不符),
guardians, drills, the duty roster (docs/rosters.md). Deadlines come before clusters on an
event: a new incident gets its deadline by its match before a cluster it founds gets the cluster deadline;
early warning comes after clusters, so a cluster the case founded or joined is open when early
warning links signals to it.
"""

from __future__ import annotations

from escalator.config.models import Config
from escalator.engine.rules import Rule
from escalator.hookspecs import hookimpl
from escalator.school.calendar import SchoolCalendar
from escalator.school.clusters import ClusterRule
from escalator.school.deadlines import LegalDeadlineRule
from escalator.school.drills import DrillRule
from escalator.school.early_warning import EarlyWarningRule
from escalator.school.guardians import GuardianRule
from escalator.school.heartbeats import HeartbeatRule
from escalator.school.roster import RosterRule
from escalator.school.zero_reports import ZeroReportRule


@hookimpl
def escalator_rules(config: Config) -> list[Rule]:
    """The school rules, for every config (each does nothing without its config section)."""
    return [HeartbeatRule(), LegalDeadlineRule(), ClusterRule(), EarlyWarningRule(),
            ZeroReportRule(), GuardianRule(), DrillRule(), RosterRule()]


@hookimpl
def school_hours(config: Config) -> SchoolCalendar:
    """Quiet hours' school hours: the school calendar (school days, ``school_hours``)."""
    return SchoolCalendar(config)
