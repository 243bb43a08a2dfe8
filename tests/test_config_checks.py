"""Tests of escalator.config.checks: one YAML fixture per rule, each problem with path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from escalator.config import ConfigError, load_config
from escalator.config.checks import run_checks
from escalator.config.load import check_config

FIXTURES = Path(__file__).parent / "fixtures" / "config"

# fixture → every problem expected, in reported order: (level, path, line, message fragment)
CASES = {
    # Rule 1: unknown role / person / unit in a step target.
    "unknown_role_in_target": [
        ("error", "policies.main.steps[0].targets[1]", 18, "unknown role 'cdc'"),
    ],
    "unknown_person_in_target": [
        ("error", "policies.main.steps[1].targets[1]", 19, "unknown person 'ghost'"),
    ],
    "unknown_unit_in_target": [
        ("error", "policies.main.steps[0].targets[0]", 17, "unknown unit 'police'"),
    ],
    # Rule 2: a person's role that is not defined, or that nobody holds.
    "unknown_role_in_person": [
        ("error", "people[0].roles[1]", 12, "unknown role 'nurse'"),
        ("error", "people[1].roles[0]", 17, "unknown role 'duty_officer'"),
    ],
    # Rule 3: unknown channel in a person's or a unit's contact method.
    "unknown_channel": [
        ("error", "people[0].contacts[1].channel", 14, "unknown channel 'sms'"),
        ("error", "units[0].contacts[0].channel", 20, "unknown channel 'wecom'"),
    ],
    # Rule 4: unknown policy in a route ("none" is allowed).
    "unknown_policy_in_route": [
        ("error", "routes[0].policy", 19, "unknown policy 'fir'"),
    ],
    # Rule 5: unknown person in the duty roster.
    "unknown_person_in_roster": [
        ("error", "duty_roster[1].person", 16, "unknown person 'ghost'"),
    ],
    # Rule 6: a person's class / grade not in school.classes / school.grades.
    "unknown_class_of_person": [
        ("error", "people[0].classes[1]", 13, "unknown class '1-3'"),
        ("error", "people[0].grades[1]", 16, "unknown grade '2'"),
    ],
    # Rule 7: targets that reach nobody, or nobody with a contact method (guardian: skipped).
    "target_resolves_to_nobody": [
        ("warning", "people[0]", 10, "person has no contact method"),
        ("error", "policies.main.steps[0].targets[0]", 20, "'class_teacher' resolves to nobody"),
        ("error", "policies.main.steps[0].targets[1]", 21, "'grade_leader' resolves to nobody"),
        ("error", "policies.main.steps[0].targets[2]", 22, "duty roster lists no known person"),
        ("error", "policies.main.steps[0].targets[3]", 23, "role 'nurse' is held by nobody"),
        ("error", "policies.main.steps[0].targets[4]", 24, "'leader' resolves only to recipients"),
        ("error", "policies.main.steps[0].targets[5]", 25, "'police' resolves only to recipients"),
    ],
    # Rule 8: a class without a class teacher.
    "class_without_teacher": [
        ("error", "school.classes[1]", 6, "class '1-2' has no class teacher"),
    ],
    # Rule 9: duplicate ids, and a unit id that is also a person id or a role name.
    "duplicate_ids": [
        ("error", "people[1].id", 15, "duplicate person id 't1'"),
        ("error", "units[1].id", 21, "duplicate unit id 'police'"),
        ("error", "units[2].id", 23, "unit id 't1' is also a person id"),
        ("error", "units[3].id", 25, "unit id 'leadership' is also a role name"),
    ],
    # Rule 9: a duplicate mapping key is caught by the YAML loader.
    "duplicate_key": [
        ("error", "", 17, "the key 'main' appears twice in the same section"),
    ],
    # Rule 10: step timeouts out of range (inform steps ignore their timeout).
    "timeout_out_of_range": [
        ("error", "policies.main.steps[0].timeout", 17, "timeout 2s is out of range"),
        ("error", "policies.main.steps[1].timeout", 20, "between 5s and 7d"),
    ],
    # Rule 11: not exactly one default route.
    "no_default_route": [
        ("error", "routes", 17, "no default route"),
    ],
    "two_default_routes": [
        ("error", "routes[1].default", 22, "more than one default route"),
    ],
    # Rule 12: a person with no contact method (warning).
    "person_without_contact": [
        ("warning", "people[1]", 13, "person has no contact method"),
    ],
    # Rule 13: routes after a catch-all route can never be reached (warning).
    "unreachable_route": [
        ("warning", "routes[2]", 21, "route can never be reached: routes[1]"),
        ("warning", "routes[3]", 23, "route can never be reached: routes[1]"),
    ],
    # Rule 14: a YAML syntax error.
    # Rule 16: a channel template override that does not compile.
    "broken_template": [
        ("error", "channels.console.templates.title", 12, "template error"),
    ],
    # Rule 20: a channel secret whose variable / file cannot be read here (warning).
    "unreadable_secret": [
        ("warning", "channels.console.options.token_env", 12,
         "environment variable ESCALATOR_TEST_VARIABLE_NEVER_SET is not set: the daemon will "
         "refuse to start without it"),
        ("warning", "channels.console.options.secret_file", 13, "no-such-secret.txt"),
    ],
    "yaml_syntax_error": [
        ("error", "", 6, "a second ': ' on this line: put a value that contains ': ' in quotes"),
    ],
    # Rule 18: clusters name an unknown policy / deadline rule; a deadline rule an unknown unit.
    "unknown_cluster_policy": [
        ("error", "clusters.policy", 14, "unknown policy 'clusters'"),
        ("error", "clusters.deadline", 15, "unknown deadline rule 'cluster_24h'"),
        ("error", "deadlines.rules.notifiable_disease.notify[0]", 18, "'health_office'"),
    ],
    # Rule 19: chains whose timeouts add up past a legal deadline (warning).
    "chain_slower_than_deadline": [
        ("warning", "policies.cluster", 22,
         "chain tells district_cdc, education_bureau only after 30h of step timeouts, past the "
         "1d deadline of rule 'school_cluster'"),
        ("warning", "policies.case", 28,
         "chain never tells district_cdc, education_bureau, required within 2h by deadline rule "
         "'public_health_emergency'"),
    ],
    # Rule 19: a chain that tells only some of the required units names just the missing ones.
    "chain_misses_a_unit": [
        ("warning", "policies.cluster", 19,
         "chain never tells education_bureau, required within 1d by deadline rule "
         "'school_cluster'"),
    ],
    # Rule 19: a lead time not shorter than the deadline (the section's; a rule's own).
    "deadline_lead_too_long": [
        ("warning", "deadlines.lead", 14,
         "lead 1d is not shorter than the 1d deadline of rule 'school_cluster'"),
        ("warning", "deadlines.rules.food_poisoning.lead", 17,
         "lead 3h is not shorter than the 2h deadline of rule 'food_poisoning'"),
    ],
    # Rule 19: a chain that reaches the units within the deadline but after the deadline less
    # the lead: the deadline escalation fires first.
    "chain_after_deadline_less_lead": [
        ("warning", "policies.cluster", 21,
         "chain tells district_cdc, education_bureau after 1410m of step timeouts, later than "
         "the 1d deadline of rule 'school_cluster' less its 1h lead: the engine's deadline "
         "escalation will tell them first, at 23h"),
    ],
    # Configured deadline rules merge over the defaults: a custom rule alone is fine.
    "custom_deadline_rule_merges": [],
    # registers.notify (a register's refused rows) names a role nobody defined (a warning).
    "unknown_register_notify": [
        ("warning", "registers.notify[0]", 24, "unknown role 'school_doctor'"),
    ],
    # Validation by the pydantic models: a misspelled field.
    # Rule 22: silences, inhibit rules, grouping (docs/silences.md).
    "quieting": [
        ("warning", "routes[0].group_by", 17, "group_by does nothing"),
        ("error", "silences[1].id", 25, "duplicate silence id 'fire_alarm_test'"),
        ("warning", "silences[1].ends_at", 28, "is over"),
        ("warning", "inhibit_rules[0]", 30, "no 'equal'"),
    ],
    # Replies: answer channels configured, webhook secrets readable (docs/replies.md).
    "reply_answer_channel": [
        ("warning", "replies.webhooks.aliyun.secret_env", 21, "TEST_ESCALATOR_NO_SUCH_VARIABLE"),
        ("warning", "replies.webhooks.gateway.secret_file", 25, "cannot read"),
        ("error", "replies.webhooks.gateway.answer_channel", 26, "unknown channel 'aliyun_sms'"),
        ("error", "replies.email.answer_channel", 29, "unknown channel 'mail'"),
        ("warning", "replies.email.imap.password_file", 33, "cannot read"),
    ],
    "unknown_field": [
        ("error", "policies.main.steps[0].timout", 17, "unknown field (did you mean 'timeout'?)"),
    ],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_fixture(name: str) -> None:
    config, problems = check_config(FIXTURES / f"{name}.yaml")
    expected = CASES[name]
    got = [(p.level, p.path, p.line) for p in problems]
    assert got == [(level, path, line) for level, path, line, _ in expected], problems
    for problem, (_, _, _, fragment) in zip(problems, expected, strict=True):
        assert fragment in problem.message
    has_error = any(level == "error" for level, *_ in expected)
    assert (config is None) == has_error


def test_every_rule_fixture_is_tested() -> None:
    on_disk = {p.stem for p in FIXTURES.glob("*.yaml")}
    assert on_disk == set(CASES) | {"valid", "several_problems"}


def test_valid_config_has_no_problems() -> None:
    config, problems = check_config(FIXTURES / "valid.yaml")
    assert problems == []
    assert config is not None
    assert run_checks(config) == []


def test_warnings_do_not_stop_loading() -> None:
    config = load_config(FIXTURES / "person_without_contact.yaml")
    assert [(w.path, w.message) for w in config.warnings] == [
        ("people[1]", "person has no contact method")
    ]


def test_several_problems_are_all_reported() -> None:
    path = FIXTURES / "several_problems.yaml"
    _, problems = check_config(path)
    assert [(p.level, p.path, p.line) for p in problems] == [
        ("error", "people[0].roles[1]", 10),
        ("error", "people[0].contacts[0].channel", 12),
        ("warning", "people[1]", 13),
        ("error", "duty_roster[0].person", 16),
        ("error", "policies.main.steps[0].targets[1]", 20),
        ("error", "policies.main.steps[0].timeout", 21),
        ("error", "routes[0].policy", 24),
    ]
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    err = caught.value
    assert len(err.problems) == 7
    text = str(err)
    assert "6 error(s)" in text
    assert "policies.main.steps[0].targets[1] (level 1, line 20): unknown role 'cdc'" in text
    assert "routes[0].policy (line 24): unknown policy 'fir'" in text
    assert "person has no contact method" not in text  # warnings are not listed as errors


def test_configured_deadline_rules_merge_over_the_defaults() -> None:
    config = load_config(FIXTURES / "custom_deadline_rule_merges.yaml")
    assert config.deadlines is not None
    rules = config.deadlines.rules
    assert list(rules) == ["notifiable_disease", "school_cluster", "public_health_emergency",
                           "food_poisoning"]
    assert rules["school_cluster"].within == 86400 and rules["food_poisoning"].within == 7200
    # a rule named like a default replaces it; the others stay
    replaced = load_config(FIXTURES / "deadline_lead_too_long.yaml").deadlines
    assert replaced is not None
    assert replaced.rules["public_health_emergency"].notify == ["district_cdc"]
    assert replaced.rules["public_health_emergency"].match is None
    assert replaced.rules["school_cluster"].notify == ["district_cdc", "education_bureau"]


def test_a_missing_unit_of_a_default_rule_is_reported_on_the_section() -> None:
    from escalator.config.models import default_deadline_rule

    config = load_config(FIXTURES / "custom_deadline_rule_merges.yaml")
    config.units = [u for u in config.units if u.id != "education_bureau"]
    found = [f for f in run_checks(config) if f[2] == "error" and f[0][0] == "deadlines"]
    assert [(loc, message) for loc, message, _ in found] == [
        (("deadlines",), "default deadline rule 'school_cluster': unknown role 'education_bureau'"),
        (("deadlines",),
         "default deadline rule 'public_health_emergency': unknown role 'education_bureau'"),
    ]
    assert default_deadline_rule("school_cluster") == config.deadlines.rules["school_cluster"]
