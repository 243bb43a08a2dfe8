"""Synthetic school terms for the backtest (``escalator warning backtest --synthetic``):
realistic sickness-absence baselines, a weekly pattern, the real holiday calendar, and injected
outbreaks of given size and growth. Seeded and deterministic: the same seed gives the same terms
on every machine (``random.Random``; no global state).

Defaults and where they come from (docs/early-warning.md "Backtest"):

- **Baseline rate** 2.3 % of pupils absent sick per school day — the low end of the 2.3–3.7 %
  baseline in Donaldson et al., BMC Infect Dis 2021;21:744 (a review of 15 studies, mostly UK
  and US). Chinese rural primary schools reported 2.74 % (Public Health 2014;128(9):792–798)
  but also far less (0.87 ‰ all-cause in one Hubei system), so it is a parameter.
- **Weekly pattern**: Monday ×1.15, Friday ×0.9 (absence after the weekend; our assumption,
  not a published figure).
- **Syndrome mix** of a sick absence: fever with cough 40 %, fever 20 %, vomiting/diarrhoea
  20 %, cough alone 10 %, rash 5 %, no symptom given 5 % (our assumption).
- **Outbreaks**: per term ``outbreaks`` (default 4), each in one class (or, one in three, a
  whole grade rising slowly), starting on a school day from the 12th of the term, with
  ``first`` cases on its first day (1–2) growing by ``growth`` (1.3–1.8) a school day up to
  ``size`` (6–18 pupils), in one syndrome (respiratory, gastrointestinal or rash).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from escalator.school.calendar import library_workday

TERMS: list[tuple[date, date]] = [
    (date(2024, 9, 2), date(2025, 1, 17)),
    (date(2025, 2, 17), date(2025, 7, 4)),
    (date(2025, 9, 1), date(2026, 1, 23)),
    (date(2026, 3, 2), date(2026, 7, 10)),
]
"""Terms the generator lays its days on (cycled): real dates, so the holidays and 调休 make-up
days of the ``chinesecalendar`` library (National Day, Mid-Autumn, Qingming, May Day, Dragon
Boat) fall inside them."""

MIX: list[tuple[float, tuple[str, ...]]] = [
    (0.40, ("fever", "cough")), (0.20, ("fever",)), (0.20, ("vomiting", "diarrhoea")),
    (0.10, ("cough",)), (0.05, ("rash",)), (0.05, ()),
]
OUTBREAK_SYMPTOMS: dict[str, tuple[str, ...]] = {
    "respiratory": ("fever", "cough"), "gastrointestinal": ("vomiting", "diarrhoea"),
    "rash": ("fever", "rash"),
}
WEEKDAY = {0: 1.15, 4: 0.9}


@dataclass(frozen=True)
class Case:
    """One sick pupil on one day: ``class_id``, ``pupil`` (unique within the term) and the
    symptom codes."""

    class_id: str
    pupil: str
    symptoms: tuple[str, ...]


@dataclass(frozen=True)
class Outbreak:
    """An injected outbreak: ``scope`` (``class:3-2`` or ``grade:3``), its ``classes``, the
    ``syndrome`` group and ``symptoms``, ``start`` (a school day), ``days`` (school days it
    ran: cases were added on each) and ``size`` (pupils in all)."""

    scope: str
    classes: tuple[str, ...]
    syndrome: str
    symptoms: tuple[str, ...]
    start: date
    end: date
    size: int


@dataclass
class Term:
    """A generated term: its school ``days`` (school-local dates, in order), class ``sizes``,
    the ``cases`` of each day and the injected ``outbreaks``."""

    days: list[date]
    sizes: dict[str, int]
    cases: dict[date, list[Case]] = field(default_factory=dict)
    outbreaks: list[Outbreak] = field(default_factory=list)


def school_days(first: date, last: date) -> list[date]:
    """Workdays of the holiday calendar from ``first`` to ``last`` (make-up days included;
    Monday–Friday in a year the library does not know)."""
    out, d = [], first
    while d <= last:
        workday = library_workday(d)
        if (d.weekday() < 5) if workday is None else workday:
            out.append(d)
        d += timedelta(days=1)
    return out


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth; lam is small (a class's expected sick pupils a day)
    limit, k, p = pow(2.718281828459045, -lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def generate(seed: int, terms: int = 4, *, grades: int = 6, classes_per_grade: int = 4,
             class_size: int = 45, rate: float = 0.023, outbreaks: int = 4) -> list[Term]:
    """``terms`` synthetic terms (seeded by ``seed``): ``grades`` × ``classes_per_grade``
    classes of ``class_size`` pupils; sick absence at ``rate`` of pupils a school day (before
    the weekly pattern); ``outbreaks`` injected per term (module docstring). Raises
    ``ValueError`` for a negative count or a rate outside 0..0.5."""
    if terms < 1 or outbreaks < 0 or not 0 <= rate <= 0.5:
        raise ValueError("terms ≥ 1, outbreaks ≥ 0, 0 ≤ rate ≤ 0.5")
    rng = random.Random(seed)
    sizes = {f"{g}-{c}": class_size for g in range(1, grades + 1)
             for c in range(1, classes_per_grade + 1)}
    out: list[Term] = []
    serial = 0
    for n in range(terms):
        first, last = TERMS[n % len(TERMS)]
        term = Term(school_days(first, last), dict(sizes))
        for day in term.days:
            cases = []
            for cid, size in sizes.items():
                lam = size * rate * WEEKDAY.get(day.weekday(), 1.0)
                for _ in range(_poisson(rng, lam)):
                    serial += 1
                    r, acc = rng.random(), 0.0
                    symptoms: tuple[str, ...] = ()
                    for share, s in MIX:
                        acc += share
                        if r <= acc:
                            symptoms = s
                            break
                    cases.append(Case(cid, f"b{serial}", symptoms))
            term.cases[day] = cases
        for _ in range(outbreaks):
            syndrome = rng.choice(sorted(OUTBREAK_SYMPTOMS))
            grade_wide = rng.random() < 1 / 3
            g = rng.randint(1, grades)
            classes = (tuple(f"{g}-{c}" for c in range(1, classes_per_grade + 1)) if grade_wide
                       else (f"{g}-{rng.randint(1, classes_per_grade)}",))
            start_index = rng.randint(11, max(11, len(term.days) - 15))
            size = rng.randint(6, 18) * (2 if grade_wide else 1)
            growth = rng.uniform(1.3, 1.8)
            today, added, i = float(rng.randint(1, 2)), 0, start_index
            while added < size and i < len(term.days):
                n_today = min(size - added, max(1, round(today)))
                for _ in range(n_today):
                    serial += 1
                    term.cases[term.days[i]].append(
                        Case(rng.choice(classes), f"o{serial}", OUTBREAK_SYMPTOMS[syndrome]))
                added += n_today
                today *= growth
                i += 1
            term.outbreaks.append(Outbreak(
                f"grade:{g}" if grade_wide else f"class:{classes[0]}", classes, syndrome,
                OUTBREAK_SYMPTOMS[syndrome], term.days[start_index], term.days[i - 1], size))
        out.append(term)
    return out
