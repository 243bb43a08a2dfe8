"""The Event: what every source hands to escalator, validated by pydantic.

Shape as fixed by DESIGN.md ("Event"). Symptom codes follow WS/T 772 (学校传染病症状监测预警
技术规范); the list here is the subset DESIGN.md names.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from escalator.classes import normalise_class, normalise_grade

SUMMARY_MAX = 500
"""Longest accepted ``summary`` (characters). Longer summaries are rejected, never truncated."""
DETAILS_MAX = 4000
"""Longest accepted ``details`` (characters)."""
OCCURRED_MIN_YEAR, OCCURRED_MAX_YEAR = 2000, 2100
"""``occurred_at`` must fall in these years (a zero time such as Go's ``0001-01-01`` is refused)."""


class Kind(StrEnum):
    incident = "incident"
    suspected_case = "suspected_case"
    absence = "absence"
    heartbeat = "heartbeat"


class Category(StrEnum):
    fire = "fire"
    traffic = "traffic"
    food_safety = "food_safety"
    building = "building"
    public_security = "public_security"
    infectious_disease = "infectious_disease"
    bullying = "bullying"
    mental_health = "mental_health"
    accident = "accident"
    other = "other"


class Severity(StrEnum):
    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"
    info = "info"


class Action(StrEnum):
    trigger = "trigger"
    acknowledge = "acknowledge"
    resolve = "resolve"


class Symptom(StrEnum):
    """WS/T 772 symptom codes."""

    fever = "fever"
    cough = "cough"
    headache = "headache"
    sore_throat = "sore_throat"
    parotid_swelling = "parotid_swelling"
    abdominal_pain = "abdominal_pain"
    diarrhoea = "diarrhoea"
    vomiting = "vomiting"
    rash = "rash"
    dizziness = "dizziness"
    fatigue = "fatigue"
    conjunctival_congestion = "conjunctival_congestion"
    jaundice = "jaundice"


ShortStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class Subject(BaseModel):
    """A pupil or staff member, by pseudonymous ``id`` (a school number, or a ``P-…`` id derived
    by a register source). A name is never required.

    Personal data (PIPL Arts. 28, 31: everything about a child under 14 is sensitive): the
    optional ``name`` (≤ 50 characters), ``guardian_phone`` (a parent's phone, ≤ 30 characters:
    digits, spaces, ``+``, ``-``, brackets), ``sex`` (≤ 10 characters) and ``age`` (0–150 years)
    are kept only in the stored event (the ledger), for the school doctor's follow-up and
    reports. Renderers must never show them — nor ``id`` — to group audiences; the built-in
    renderer shows subject data to nobody.
    """

    model_config = ConfigDict(extra="forbid")
    id: ShortStr
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)] | None = None
    guardian_phone: Annotated[str, StringConstraints(
        strip_whitespace=True, min_length=3, max_length=30, pattern=r"^\+?[0-9][0-9 ()\-]*$")] | None = None
    sex: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10)] | None = None
    age: int | None = Field(default=None, ge=0, le=150)


class Event(BaseModel):
    """One input event.

    Required: ``kind``, ``category``, ``summary`` (1..500 characters). ``occurred_at``: an aware
    time is kept; a naive one is read in the school's timezone by :meth:`normalised`; missing means
    the time received. Raises ``pydantic.ValidationError`` naming each bad field.
    """

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    kind: Kind
    category: Category
    summary: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=SUMMARY_MAX)]
    severity: Severity = Severity.medium
    action: Action = Action.trigger
    details: Annotated[str, StringConstraints(max_length=DETAILS_MAX)] | None = None
    class_id: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\d{1,2}-\d{1,2}$")] | None = None
    grade: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\d{1,2}$")] | None = None
    dormitory: ShortStr | None = None
    place: ShortStr | None = None
    subject: Subject | None = None
    symptoms: list[Symptom] = Field(default_factory=list, max_length=20)
    diagnosis: ShortStr | None = None
    affected_count: int | None = Field(default=None, ge=0, le=100_000)
    occurred_at: datetime | None = None
    reported_by: ShortStr | None = None
    source: ShortStr | None = None
    dedup_key: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)] | None = None
    drill: bool = False
    labels: dict[Annotated[str, StringConstraints(max_length=100)], Annotated[str, StringConstraints(max_length=500)]] = Field(
        default_factory=dict, max_length=50
    )

    @field_validator("grade", mode="before")
    @classmethod
    def _grade_as_text(cls, v: Any) -> Any:
        """A grade as the school's id (``三年级`` → ``3``, ``初一`` → ``7``): the one class
        rule, :mod:`escalator.classes`."""
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        return normalise_grade(v) if isinstance(v, str) and v.strip() else v

    @field_validator("class_id", mode="before")
    @classmethod
    def _class_as_id(cls, v: Any) -> Any:
        """A class as the school's id (``３－１`` → ``3-1``, ``四年级三班`` → ``4-3``): the one
        class rule, :mod:`escalator.classes`; a class the school does not have is kept (the
        engine warns about it)."""
        return normalise_class(v) if isinstance(v, str) and v.strip() else v

    @field_validator("dedup_key")
    @classmethod
    def _not_drill_namespace(cls, v: str | None) -> str | None:
        if v is not None and v.casefold().startswith("drill/"):
            raise ValueError("must not start with 'drill/': that prefix marks a drill's key "
                             "(send drill: true instead)")
        return v

    @field_validator("occurred_at")
    @classmethod
    def _plausible_time(cls, v: datetime | None) -> datetime | None:
        if v is not None and not (OCCURRED_MIN_YEAR <= v.year <= OCCURRED_MAX_YEAR):
            raise ValueError(f"year {v.year} is out of range ({OCCURRED_MIN_YEAR}–{OCCURRED_MAX_YEAR})")
        return v

    def normalised(self, received_at: datetime, tz: tzinfo) -> Event:
        """Return a copy with ``occurred_at`` aware and in UTC, and ``grade`` filled from ``class_id``.

        ``received_at``: aware UTC time of receipt, used when ``occurred_at`` is missing.
        ``tz``: the school's zone, used to read a naive ``occurred_at``.
        """
        occurred = self.occurred_at or received_at
        if occurred.tzinfo is None:
            occurred = occurred.replace(tzinfo=tz)
        grade = self.grade or (self.class_id.split("-")[0] if self.class_id else None)
        return self.model_copy(update={"occurred_at": occurred.astimezone(UTC), "grade": grade})

    def derived_dedup_key(self, tz: tzinfo) -> str:
        """The dedup key: the given ``dedup_key``, or one derived by this documented rule.

        - With a ``subject``: ``{kind}/{category}/subject:{id}/{local date of occurred_at}`` —
          one pupil reported twice on one school day is one incident (cases/README: "one pupil
          counts once").
        - Otherwise: ``{kind}/{category}/{class_id|dormitory|place|grade|-}/{sha256(source,
          summary)[:16]}`` — the same report from the same source about the same place.

        - A drill (``drill: true``) has ``drill/`` in front of either, so a drill and a real
          report never share an incident (a real case must never be walked as a drill, nor a
          drill count on a real incident).

        Call on a :meth:`normalised` event.
        """
        prefix = "drill/" if self.drill else ""
        if self.dedup_key:
            return prefix + self.dedup_key
        if self.subject is not None:
            assert self.occurred_at is not None
            day = self.occurred_at.astimezone(tz).date().isoformat()
            return f"{prefix}{self.kind.value}/{self.category.value}/subject:{self.subject.id}/{day}"
        where = self.class_id or self.dormitory or self.place or (f"grade:{self.grade}" if self.grade else "-")
        digest = hashlib.sha256(f"{self.source or ''}\x00{self.summary}".encode()).hexdigest()[:16]
        return f"{prefix}{self.kind.value}/{self.category.value}/{where}/{digest}"
