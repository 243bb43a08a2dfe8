"""A district's own rule for the tests, loaded through a config's ``plugins_dir`` (the worked
example of docs/plugins.md "Writing a rule"): an absence whose family cannot be reached
(``labels.contact: lost``) opens a "pupil unaccounted for" incident for the class, walking the
district's policy ``missing_pupil`` (nothing happens when the config has no such policy)."""

from escalator.engine.rules import Rule
from escalator.events import Event
from escalator.hookspecs import hookimpl

POLICY = "missing_pupil"


class UnreachableFamily(Rule):
    name = "district_unreachable_family"

    def on_event(self, ops, tx, event):
        ev = event.event
        if (not event.routed or event.status == "ledger" or ev.kind != "absence"
                or ev.labels.get("contact") != "lost" or POLICY not in ops.config.policies):
            return
        where = ev.class_id or ev.dormitory or "?"
        result = ops.open_incident(
            Event(kind="incident", category="public_security", severity="high",
                  summary=f"{where} 学生缺勤，家长联系不上", class_id=ev.class_id,
                  grade=ev.grade, occurred_at=ev.occurred_at, drill=ev.drill,
                  dedup_key=f"unreachable-family/{event.incident_id or event.id}"),
            policy=POLICY, source="district")
        ops.add_timeline(result.incident_id, "district_rule", self.name,
                         {"event_id": event.id, "absence_incident": event.incident_id})


@hookimpl
def escalator_rules(config):
    return [UnreachableFamily()]
