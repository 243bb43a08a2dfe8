"""Backtest of the early-warning methods beside the 2006 rule (``escalator warning backtest``;
docs/early-warning.md "Backtest").

Pure functions over in-memory terms (:class:`escalator.school.early_warning.synthetic.Term`): the same
series (class, grade, school × overall and syndrome groups, school days only, each term's
history starting at its first day) and the same EARS functions (:mod:`.ears`) as the daemon,
with the parameters of a config's ``early_warning`` section (or the defaults).

Figures per method:

- **sensitivity** — injected outbreaks detected / outbreaks. A signal detects an outbreak when
  its day is from the outbreak's first school day to two school days after its last, and its
  series covers one of the outbreak's classes (the class, its grade or the school) in the
  outbreak's syndrome group, a group its symptoms touch, or ``all``.
- **false alarms per 100 school days** — signals (one per series and day: the incidents the
  daemon would open) that detect no outbreak, per 100 school days.
- **median days to detection** — school days from an outbreak's first day to its first signal
  (0 = the same day), over the outbreaks detected.
- **earlier than the 2006 rule** — outbreaks the method detected before the rule fired (or
  that the rule never caught).

The 2006 rule (``2006 rule`` row): per class and syndrome group, ≥ 3 distinct pupils in a day or
≥ 5 within three consecutive days (the ``clusters`` defaults); a class and group fires at most
once in 7 days (its cluster stays open and later cases join it).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from escalator.config.models import Config, EarlyWarningConfig, Syndrome
from escalator.config.school_defaults import CLUSTER_THRESHOLDS, SYNDROMES
from escalator.school.early_warning import ears
from escalator.school.early_warning.synthetic import Case, Outbreak, Term

RULE = "2006 rule"
SLACK_DAYS = 2
"""School days after an outbreak's last case during which a signal still detects it."""


@dataclass(frozen=True)
class Params:
    """What the backtest runs: the ``early_warning`` settings and the syndrome groups."""

    ew: EarlyWarningConfig
    syndromes: dict[str, Syndrome]

    @classmethod
    def of(cls, config: Config | None) -> Params:
        ew = (config.early_warning if config is not None and config.early_warning is not None
              else EarlyWarningConfig())
        groups = (dict(config.clusters.syndromes) if config is not None and config.clusters
                  else {k: Syndrome(**v) for k, v in SYNDROMES.items()})
        if ew.groups is not None:
            groups = {g: s for g, s in groups.items() if g in ew.groups}
        return cls(ew, groups)

    def groups_of(self, symptoms: Iterable[str]) -> list[str]:
        s = set(symptoms)
        return [g for g, syn in self.syndromes.items() if s & {x.value for x in syn.symptoms}]


@dataclass
class Row:
    """One line of the report (``None``: not defined, e.g. no outbreak to detect)."""

    method: str
    outbreaks: int
    detected: int
    signals: int
    false_alarms: int
    school_days: int
    median_days: float | None
    earlier_than_rule: int | None

    @property
    def sensitivity(self) -> float | None:
        return self.detected / self.outbreaks if self.outbreaks else None

    @property
    def false_per_100_days(self) -> float:
        return 100 * self.false_alarms / self.school_days if self.school_days else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "outbreaks": self.outbreaks, "detected": self.detected,
                "sensitivity": self.sensitivity, "signals": self.signals,
                "false_alarms": self.false_alarms,
                "false_alarms_per_100_school_days": round(self.false_per_100_days, 2),
                "median_days_to_detection": self.median_days,
                "earlier_than_2006_rule": self.earlier_than_rule, "school_days": self.school_days}


def series_counts(term: Term, p: Params) -> dict[str, dict[date, int]]:
    """Distinct pupils per series and school day (series keys as the daemon writes them)."""
    out: dict[str, dict[date, set[str]]] = defaultdict(lambda: defaultdict(set))
    for day in term.days:
        for case in term.cases.get(day, []):
            grade = case.class_id.split("-")[0]
            where = {"class": f"class:{case.class_id}", "grade": f"grade:{grade}",
                     "school": "school"}
            for scope in p.ew.scopes:
                for g in ["all", *p.groups_of(case.symptoms)]:
                    out[f"{where[scope]}/{g}"][day].add(case.pupil)
    return {k: {d: len(v) for d, v in days.items()} for k, days in out.items()}


def signals(term: Term, p: Params) -> dict[str, list[tuple[str, int]]]:
    """Per method, the (series, index of the school day) it signals on."""
    counts = series_counts(term, p)
    out: dict[str, list[tuple[str, int]]] = {m: [] for m, c in p.ew.methods.items() if c.enabled}
    for key, by_day in counts.items():
        values = [by_day.get(d, 0) for d in term.days]
        for i, x in enumerate(values):
            if x == 0:
                continue
            history = values[:i]
            for m in out:
                c = p.ew.methods[m]
                j = ears.judge(m, history[-(p.ew.baseline_days + p.ew.guard_days + 2):], x,
                               k=c.k, h=c.h, min_sd=p.ew.min_sd, baseline=p.ew.baseline_days,
                               guard=p.ew.guard_days)
                if j is not None and j.signal:
                    out[m].append((key, i))
    return out


def rule_2006(term: Term, p: Params) -> list[tuple[str, str, int]]:
    """(class, syndrome group, index of the school day) on which the 2006 rule fires."""
    by: dict[tuple[str, str], dict[date, set[str]]] = defaultdict(lambda: defaultdict(set))
    for day in term.days:
        for case in term.cases.get(day, []):
            for g in p.groups_of(case.symptoms):
                by[(case.class_id, g)][day].add(case.pupil)
    fired: list[tuple[str, str, int]] = []
    for (cid, g), days in by.items():
        last_fire: date | None = None
        for i, day in enumerate(term.days):
            if last_fire is not None and (day - last_fire).days < 7:
                continue
            for t in CLUSTER_THRESHOLDS:
                pupils: set[str] = set()
                for back in range(t["days"]):
                    pupils |= days.get(day - timedelta(days=back), set())
                if len(pupils) >= t["count"]:
                    fired.append((cid, g, i))
                    last_fire = day
                    break
    return fired


def _covers(o: Outbreak, key: str, p: Params) -> bool:
    scope, _, group = key.rpartition("/")
    grades = {c.split("-")[0] for c in o.classes}
    in_scope = (scope == "school" or scope in {f"grade:{g}" for g in grades}
                or scope in {f"class:{c}" for c in o.classes})
    return in_scope and (group == "all" or group in p.groups_of(o.symptoms))


def evaluate(terms: list[Term], p: Params) -> list[Row]:
    """The report rows: one per enabled method, then the 2006 rule."""
    found: dict[str, list[int | None]] = defaultdict(list)  # method → days to detection per outbreak
    rule_days: list[int | None] = []
    tallies: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # method → [signals, false]
    total_days = sum(len(t.days) for t in terms)
    methods = [m for m, c in p.ew.methods.items() if c.enabled]
    for term in terms:
        index = {d: i for i, d in enumerate(term.days)}
        spans = [(index[o.start], index[o.end] + SLACK_DAYS) for o in term.outbreaks]
        sig = signals(term, p)
        for m in methods:
            first: list[int | None] = [None] * len(term.outbreaks)
            for key, i in sig[m]:
                hit = False
                for n, o in enumerate(term.outbreaks):
                    lo, hi = spans[n]
                    if lo <= i <= hi and _covers(o, key, p):
                        hit = True
                        first[n] = i - lo if first[n] is None else min(first[n], i - lo)
                tallies[m][0] += 1
                tallies[m][1] += not hit
            found[m].extend(first)
        fired = rule_2006(term, p)
        first_rule: list[int | None] = [None] * len(term.outbreaks)
        for cid, g, i in fired:
            hit = False
            for n, o in enumerate(term.outbreaks):
                lo, hi = spans[n]
                if lo <= i <= hi and cid in o.classes and g in p.groups_of(o.symptoms):
                    hit = True
                    first_rule[n] = i - lo if first_rule[n] is None else min(first_rule[n], i - lo)
            tallies[RULE][0] += 1
            tallies[RULE][1] += not hit
        rule_days.extend(first_rule)
    rows = []
    for m in [*methods, RULE]:
        days = rule_days if m == RULE else found[m]
        hits = [d for d in days if d is not None]
        earlier = None if m == RULE else sum(
            1 for d, r in zip(days, rule_days, strict=True) if d is not None and (r is None or d < r))
        rows.append(Row(m, len(days), len(hits), tallies[m][0], tallies[m][1], total_days,
                        statistics.median(hits) if hits else None, earlier))
    return rows


def terms_from_registers(folder: Path, config: Config) -> tuple[list[Term], list[str]]:
    """One :class:`Term` per configured school term (or one for the whole span) from every
    ``*.csv`` register in ``folder`` (sickness absences only; drills and 事假 left out), and the
    problems met (a file that is not a register is skipped and named). School days come from
    the config's calendar."""
    from escalator.intake.registers import RegisterError, parse_register
    from escalator.school.early_warning.series import SchoolDays, is_sickness_absence

    ew = config.early_warning or EarlyWarningConfig()
    problems: list[str] = []
    cases: dict[date, list[Case]] = defaultdict(list)
    seen: set[tuple[date, str]] = set()
    for path in sorted(folder.glob("*.csv")):
        if not path.is_file():
            problems.append(f"{path.name}: not a file")
            continue
        try:
            subs = parse_register(path.read_bytes(), config, key=b"escalator-backtest")
        except RegisterError as e:
            rows = "; ".join(
                f"row {err['row']}" + (f" ({err['column']})" if err.get("column") else "")
                + f": {err['message']}" for err in e.errors[:5] if "row" in err)
            problems.append(f"{path.name}: {e.reason}" + (f" — {rows}" if rows else ""))
            continue
        for sub in subs:
            assert sub.event.occurred_at is not None  # a register dates every row
            ev = sub.event.normalised(sub.event.occurred_at, config.school.tz)
            if sub.ledger_only or not is_sickness_absence(ew, ev):
                continue
            assert ev.occurred_at is not None and ev.subject is not None and ev.class_id
            day = ev.occurred_at.astimezone(config.school.tz).date()
            if (day, ev.subject.id) in seen:
                continue
            seen.add((day, ev.subject.id))
            cases[day].append(Case(ev.class_id, ev.subject.id, tuple(s.value for s in ev.symptoms)))
    if not cases:
        return [], problems
    days = SchoolDays(config)
    first, last = min(cases), max(cases)
    spans = [(t.start, t.end) for t in config.school.calendar.terms
             if t.end >= first and t.start <= last] or [(first, last)]
    terms = []
    sizes = dict(config.school.class_sizes)
    for start, end in spans:
        span_days, d = [], max(start, first)
        while d <= min(end, last):
            if days.is_school_day(d):
                span_days.append(d)
            d += timedelta(days=1)
        terms.append(Term(span_days, sizes, {d: cases.get(d, []) for d in span_days}))
    return terms, problems


def table(rows: list[Row], lang: str = "zh") -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the report (zh or en)."""
    headers = (["方法", "暴发数", "检出", "灵敏度", "信号数", "误报/100上课日", "检出用时中位数（上课日）",
                "早于2006规则"] if lang == "zh" else
               ["method", "outbreaks", "detected", "sensitivity", "signals",
                "false alarms /100 school days", "median days to detection",
                "earlier than 2006 rule"])
    cells = []
    for r in rows:
        cells.append([r.method, str(r.outbreaks), str(r.detected),
                      "—" if r.sensitivity is None else f"{r.sensitivity:.0%}", str(r.signals),
                      f"{r.false_per_100_days:.1f}",
                      "—" if r.median_days is None else f"{r.median_days:g}",
                      "—" if r.earlier_than_rule is None else str(r.earlier_than_rule)])
    return headers, cells
