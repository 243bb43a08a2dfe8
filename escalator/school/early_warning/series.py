"""Daily sickness-absence series: which events count, under which groups, and the counts and
rates per class, grade and school on school days (docs/early-warning.md "Series").

A **series** is a scope and a group, written ``<scope>/<group>``: scope ``school``,
``grade:<g>`` or ``class:<id>``; group ``all`` (every sickness absence) or a syndrome group id
(``respiratory``, …; the groups of ``clusters.syndromes``, else the defaults). Its value on a
school-local date is the number of distinct pupils counted that day; its rate divides by the
pupils of the scope: a class's size from the register's 应到人数 when one gave it (the latest on
or before the date), else ``school.class_sizes``; a grade's or the school's is the sum over its
classes (None when a class's size is unknown). Only school days (:mod:`escalator.school.calendar`) are
in a series: weekends, holidays, vacations and 调休 are skipped, make-up school days included.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta

from escalator.config.models import Config, EarlyWarningConfig, Syndrome
from escalator.config.school_defaults import SYNDROMES
from escalator.events import Category, Event, Symptom
from escalator.school.calendar import SchoolCalendar

CN_GRADES = ["", "一", "二", "三", "四", "五", "六", "七", "八", "九", "十", "十一", "十二"]
ALL = "all"


def pupil_digest(subject_id: str) -> str:
    """The pupil as early warning stores it (``EwCase.pupil``): SHA-256 of the subject id, hex
    (one pupil counts once a day; the id itself is never kept)."""
    return hashlib.sha256(subject_id.encode("utf-8")).hexdigest()


def syndromes(config: Config) -> dict[str, Syndrome]:
    """The syndrome groups: ``clusters.syndromes`` when clusters are on, else the defaults."""
    if config.clusters is not None:
        return dict(config.clusters.syndromes)
    return {k: Syndrome(**v) for k, v in SYNDROMES.items()}


def watched_groups(config: Config) -> list[str]:
    """``all`` and the syndrome groups watched (``early_warning.groups``, default all)."""
    cfg = config.early_warning
    groups = syndromes(config)
    chosen = list(groups) if cfg is None or cfg.groups is None else [
        g for g in cfg.groups if g in groups]
    return [ALL, *chosen]


def is_sickness_absence(cfg: EarlyWarningConfig, ev: Event) -> bool:
    """Whether ``ev`` (normalised) counts in the series: a trigger of a kind in
    ``early_warning.kinds`` (default ``absence``), not a drill, with a pupil and a class, and
    ill: symptoms, a diagnosis, category ``infectious_disease`` — except an absence whose
    ``labels.reason`` says ``personal`` or ``unknown`` (事假, 原因待查)."""
    if ev.kind not in cfg.kinds or ev.drill or ev.subject is None or not ev.class_id:
        return False
    if ev.labels.get("reason") in ("personal", "unknown"):
        return False
    return bool(ev.symptoms or ev.diagnosis or ev.category == Category.infectious_disease)


def groups_of(config: Config, symptoms: list[Symptom]) -> list[str]:
    """``all`` and every syndrome group listing one of ``symptoms`` (a case counts in each)."""
    watched = watched_groups(config)
    groups = syndromes(config)
    return [ALL] + [g for g in watched[1:] if any(s in groups[g].symptoms for s in symptoms)]


def class_size_label(ev: Event) -> int | None:
    """The class size (应到人数) a register row carried in ``labels.class_size``, or None."""
    text = ev.labels.get("class_size", "")
    return int(text) if text.isdigit() and 0 < int(text) <= 500 else None


def series_of(scopes: list[str], class_id: str, groups: list[str]) -> list[str]:
    """The series a case of ``class_id`` in ``groups`` counts in, for the watched ``scopes``."""
    grade = class_id.split("-")[0]
    where = {"class": f"class:{class_id}", "grade": f"grade:{grade}", "school": "school"}
    return [f"{where[s]}/{g}" for s in ("class", "grade", "school") if s in scopes
            for g in groups]


@dataclass(frozen=True)
class SeriesKey:
    """A parsed series key: ``scope`` (``school``, ``grade:3``, ``class:3-2``) and ``group``."""

    scope: str
    group: str

    @classmethod
    def parse(cls, key: str) -> SeriesKey:
        scope, _, group = key.rpartition("/")
        return cls(scope, group)

    @property
    def key(self) -> str:
        return f"{self.scope}/{self.group}"

    @property
    def class_id(self) -> str | None:
        return self.scope.removeprefix("class:") if self.scope.startswith("class:") else None

    @property
    def grade(self) -> str | None:
        if self.scope.startswith("grade:"):
            return self.scope.removeprefix("grade:")
        return self.class_id.split("-")[0] if self.class_id else None


def scope_label(scope: str, lang: str) -> str:
    """``school`` → 全校 / whole school; ``grade:3`` → 三年级 / grade 3; ``class:3-2`` →
    三年级2班 / class 3-2; ``dormitory:B301`` → 宿舍B301 / dormitory B301."""
    kind, _, value = scope.partition(":")
    if kind == "school":
        return "全校" if lang == "zh" else "whole school"
    if kind == "dormitory":
        return f"宿舍{value}" if lang == "zh" else f"dormitory {value}"
    grade = value.split("-")[0]
    g = int(grade) if grade.isdigit() else 0
    word = CN_GRADES[g] if 0 < g < len(CN_GRADES) else grade
    if kind == "grade":
        return f"{word}年级" if lang == "zh" else f"grade {value}"
    number = value.split("-")[1] if "-" in value else value
    return f"{word}年级{int(number)}班" if lang == "zh" else f"class {value}"


GROUP_EN = {ALL: "all sickness absence", "rash": "fever with rash", "parotitis": "parotid swelling",
            "conjunctivitis": "conjunctival congestion", "jaundice": "jaundice",
            "gastrointestinal": "diarrhoea, vomiting", "respiratory": "respiratory symptoms",
            "fever": "fever"}


def group_label(config: Config, group: str, lang: str) -> str:
    """A group's name: ``all`` → 全部因病缺勤 / all sickness absence; a syndrome group's
    configured name (zh) or its English name."""
    if lang != "zh":
        return GROUP_EN.get(group, group.replace("_", " "))
    if group == ALL:
        return "全部因病缺勤"
    syndrome = syndromes(config).get(group)
    return (syndrome.name if syndrome and syndrome.name else group)


def series_label(config: Config, key: str, lang: str) -> str:
    """``class:3-2/respiratory`` → ``三年级2班（发热、咳嗽等呼吸道症状）`` / ``class 3-2
    (respiratory symptoms)``."""
    sk = SeriesKey.parse(key)
    where, what = scope_label(sk.scope, lang), group_label(config, sk.group, lang)
    return f"{where}（{what}）" if lang == "zh" else f"{where} ({what})"


class SchoolDays:
    """School-day arithmetic over :class:`~escalator.school.calendar.SchoolCalendar` (cached)."""

    LIMIT = 400
    """How far back (calendar days) a search for school days goes."""

    def __init__(self, config: Config) -> None:
        self.cal = SchoolCalendar(config)
        self.terms = config.school.calendar.terms
        self._cache: dict[date, bool] = {}

    def is_school_day(self, day: date) -> bool:
        got = self._cache.get(day)
        if got is None:
            got = self._cache[day] = self.cal.is_school_day(day)
        return got

    def term_start(self, day: date) -> date | None:
        """The first day of the configured term containing ``day`` (None: no terms, or none
        contains it)."""
        return next((t.start for t in self.terms if t.start <= day <= t.end), None)

    def before(self, day: date, n: int, not_before: date | None) -> list[date]:
        """Up to ``n`` school days before ``day``, oldest first, none before ``not_before``."""
        out: list[date] = []
        d = day
        floor = not_before or day - timedelta(days=self.LIMIT)
        while len(out) < n:
            d -= timedelta(days=1)
            if d < floor:
                break
            if self.is_school_day(d):
                out.append(d)
        return out[::-1]
