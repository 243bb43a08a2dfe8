"""Who may see and do what in the console (docs/console.md, "Roles").

Accounts are the config's ``people``; each person's ``access`` (default ``responder``):

- ``viewer``: sees the pages, acts on nothing, never sees pupils' personal data;
- ``responder``: also acknowledges, decides, resolves, notes and assigns;
- ``administrator``: everything, the settings page too.

Pupils' personal data (an incident's free-text summary, its notes, the event's subject and
reporter, guardians as recipients) is shown only to those whose work needs it — PIPL Art. 31
(personal information of a minor under 14 is sensitive; processed only as the purpose needs):
console administrators, the roles of ``console.pupil_data_roles`` (the school doctor by
default), and a class teacher for an incident of their own class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from escalator.config.models import Config, Person

ACT = ("responder", "administrator")


@dataclass(frozen=True)
class Viewer:
    """The signed-in person and their session's form token (``csrf``)."""

    person: Person
    csrf: str

    @property
    def access(self) -> str:
        return self.person.access

    @property
    def can_act(self) -> bool:
        """Acknowledge, decide, resolve, note, assign."""
        return self.person.access in ACT

    @property
    def is_admin(self) -> bool:
        return self.person.access == "administrator"

    def sees_pupils(self, config: Config, incident: Any | None = None) -> bool:
        """Whether pupils' personal data of ``incident`` (any incident when None: lists that
        mix incidents show it only to those who see all) may be shown to this person."""
        p = self.person
        if p.access == "viewer":
            return False
        if p.access == "administrator" or set(p.roles) & set(config.console.pupil_data_roles):
            return True
        class_id = getattr(incident, "class_id", None)
        return bool(incident is not None and class_id and "class_teacher" in p.roles
                    and class_id in p.classes)
