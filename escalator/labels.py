"""The words people read for escalator's codes, in Simplified Chinese (default) and English:
one table per vocabulary, used by messages (``escalator.delivery.render``), the web pages, the
ledger and the monthly report, drill reports and the CLI — so a state or a category has one word
everywhere.

Each table maps a language (``zh``, ``en``) to code → word; :func:`word` looks one up with the
code itself as the fallback.
"""

from __future__ import annotations

CATEGORY = {
    "zh": {
        "fire": "火警", "traffic": "交通安全", "food_safety": "食品安全", "building": "校舍安全",
        "public_security": "治安安全", "infectious_disease": "传染病", "bullying": "学生欺凌",
        "mental_health": "心理健康", "accident": "意外伤害", "other": "其他",
    },
    "en": {
        "fire": "fire", "traffic": "traffic", "food_safety": "food safety", "building": "building",
        "public_security": "public security", "infectious_disease": "infectious disease",
        "bullying": "bullying", "mental_health": "mental health", "accident": "accident",
        "other": "other",
    },
}

SEVERITY = {
    "zh": {"critical": "特急", "high": "紧急", "medium": "一般", "low": "较低", "info": "通知"},
    "en": {"critical": "CRITICAL", "high": "HIGH", "medium": "MEDIUM", "low": "LOW", "info": "INFO"},
}

KIND = {
    "zh": {"incident": "突发事件", "suspected_case": "疑似病例", "absence": "因病缺勤",
           "heartbeat": "报告", "cluster": "聚集性疫情"},
    "en": {"incident": "incident", "suspected_case": "suspected case", "absence": "sickness absence",
           "heartbeat": "report", "cluster": "school cluster"},
}
"""Kinds as words; ``cluster``: a school cluster incident (escalator/clusters.py; its event's
label ``cluster``), which is kind ``incident`` in the store."""

ROLE = {
    "zh": {"class_teacher": "班主任", "grade_leader": "年级组长", "duty_officer": "值班人员",
           "guardian": "监护人"},
    "en": {"class_teacher": "class teacher", "grade_leader": "grade leader",
           "duty_officer": "duty officer", "guardian": "guardian"},
}

SYMPTOM = {
    "zh": {"fever": "发热", "cough": "咳嗽", "headache": "头痛", "sore_throat": "咽痛",
           "parotid_swelling": "腮腺肿大", "abdominal_pain": "腹痛", "diarrhoea": "腹泻",
           "vomiting": "呕吐", "rash": "皮疹", "dizziness": "头晕", "fatigue": "乏力",
           "conjunctival_congestion": "结膜充血", "jaundice": "黄疸"},
    "en": {},
}

STATE = {
    "zh": {"triggered": "待处理", "acknowledged": "已确认", "resolved": "已解除"},
    "en": {"triggered": "triggered", "acknowledged": "acknowledged", "resolved": "resolved"},
}
"""Incident states: one word each, on every page, message, export and report."""


TIMELINE = {
    "zh": {"silenced": "已静默", "silence_ended": "静默结束，开始通知", "inhibited": "已抑制（并入本事件）",
           "group_wait": "分组等待", "group_wait_over": "分组等待结束", "group_update": "分组新增通报",
           "severity_raised": "级别提升（更严重的报告并入）"},
    "en": {"silenced": "silenced", "silence_ended": "silence over, walking",
           "inhibited": "inhibited (attached here)", "group_wait": "group waiting",
           "group_wait_over": "group wait over", "group_update": "group update sent",
           "severity_raised": "severity raised (a more severe report joined)"},
}
"""Timeline entries of silences, inhibition, grouping (docs/silences.md) and a raised severity
(a more severe event counted on an open incident) as words."""


def word(table: dict[str, dict[str, str]], code: str, lang: str) -> str:
    """``table[lang][code]``, or ``code`` itself when the table has no word for it."""
    return table.get(lang, {}).get(code, code)


def level_numbers(modes: list[str]) -> list[int]:
    """The level number people read (第N级, level N) for each step of a chain whose steps have
    these ``mode`` values, counted from 1: only steps that wait for someone (``escalate``,
    ``report``) are levels; an ``inform`` step (a copy, e.g. to the guardians) carries the number
    of the level before it, or 1 when it comes first. So a copy between two levels never makes
    the staff see 第1级 and then 第3级. ``["report", "inform", "report"]`` → ``[1, 1, 2]``,
    ``["inform", "escalate"]`` → ``[1, 1]``. The one rule for every text (messages, the
    acknowledge page, simulate, the CLI, drill reports, check-config)."""
    out: list[int] = []
    level = 0
    for mode in modes:
        if str(mode) != "inform":
            level += 1
        out.append(max(level, 1))
    return out


def level_of(steps: list, index: int) -> int:
    """The level number of step ``index`` (0-based) of ``steps`` — step models or the
    incident's policy snapshot (``{"mode": …}`` dicts) — with :func:`level_numbers`; for an
    index past the end, the position counted from 1."""
    modes = [str(s.get("mode", "escalate") if isinstance(s, dict) else s.mode) for s in steps]
    numbers = level_numbers(modes)
    return numbers[index] if 0 <= index < len(numbers) else index + 1


def levels_in(steps: list) -> int:
    """How many levels a chain has (the last step's level number; 0 for no steps)."""
    return level_of(steps, len(steps) - 1) if steps else 0
