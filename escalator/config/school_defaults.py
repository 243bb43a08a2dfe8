"""Default data for the school's epidemic rules: syndrome groups, per-disease cluster thresholds,
the notifiable-disease list and the legal reporting deadlines (docs/school-rules.md).

Pure data (no imports from the rest of escalator), read by :mod:`escalator.config.models` as the
defaults of ``clusters:`` and ``deadlines:``. Every entry names its source; an administrator
overrides any of them in the config file. Durations are seconds.
"""

from __future__ import annotations

from typing import Any

CLUSTER_THRESHOLDS: list[dict[str, int]] = [
    {"count": 3, "days": 1},
    {"count": 5, "days": 3},
]
"""A school cluster (聚集性疫情) of one syndrome group in one class or dormitory: ≥ 3 distinct
pupils in one school-local day, or ≥ 5 within three consecutive days. Source: 《学校和托幼机构
传染病疫情报告工作规范（试行）》 (卫生部办公厅、教育部办公厅, 2006), 报告内容与时限 (一): "在同一宿舍或者
同一班级，1天内有3例或者连续3天内有多个学生（5例以上）患病，并有相似症状（如发热、皮疹、腹泻、呕吐、
黄疸等）或者共同用餐、饮水史时"."""

SYNDROMES: dict[str, dict[str, Any]] = {
    # A case counts in EVERY group that lists one of its symptoms (a pupil with fever and cough
    # in "respiratory" and in "fever"). The order only decides which group opens a cluster when
    # several reach a threshold with the same case (the more specific first).
    "rash": {"name": "发热伴出疹", "symptoms": ["rash"]},
    "parotitis": {"name": "腮腺肿大", "symptoms": ["parotid_swelling"]},
    "conjunctivitis": {"name": "结膜充血（红眼）", "symptoms": ["conjunctival_congestion"]},
    "jaundice": {"name": "黄疸", "symptoms": ["jaundice"]},
    "gastrointestinal": {"name": "腹泻、呕吐", "symptoms": ["diarrhoea", "vomiting", "abdominal_pain"]},
    "respiratory": {"name": "发热、咳嗽等呼吸道症状", "symptoms": ["cough", "sore_throat"]},
    "fever": {"name": "发热", "symptoms": ["fever", "headache", "dizziness", "fatigue"]},
}
"""Syndrome groups (症候群) over the WS/T 772 symptom codes (:class:`escalator.events.Symptom`):
"similar symptoms" of the 2006 rule, whose own examples are 发热、皮疹、腹泻、呕吐、黄疸. The groups
follow the syndromes used in school symptom surveillance (WS/T 772 学校传染病症状监测预警技术规范:
发热、呼吸道、腹泻/胃肠道、皮疹 …); general symptoms (fever, headache, dizziness, fatigue) are
the "fever" group. A case counts in every group it touches (escalator/clusters.py)."""

HFMD_NAMES: list[str] = [
    "手足口病", "手足口", "hfmd", "hand-foot-mouth disease", "hand-foot-and-mouth disease",
    "hand, foot and mouth disease", "hand foot and mouth disease",
]
"""The names of hand-foot-mouth disease in a ``diagnosis``: the HFMD cluster rule and the
notifiable list both use them."""

DISEASES: dict[str, dict[str, Any]] = {
    "hfmd": {
        "name": "手足口病",
        "diagnoses": list(HFMD_NAMES),
        "thresholds": [{"count": 2, "days": 7}],
        "source": "《手足口病聚集性和暴发疫情处置工作规范（2012版）》（卫生部办公厅）：一周内同一班级"
                  "（或宿舍）发生2例及以上手足口病病例为聚集性疫情",
    },
}
"""Per-disease cluster thresholds, matched on an event's ``diagnosis`` (a listed name appearing
in it, case-insensitive; an ASCII name on word boundaries); such a case counts under the
disease, and under every syndrome group of its symptoms as well."""

NOTIFIABLE_DISEASES: list[str] = [
    # 甲类 (class A)
    "鼠疫", "霍乱",
    # 乙类 (class B)
    "传染性非典型肺炎", "艾滋病", "病毒性肝炎", "脊髓灰质炎", "人感染高致病性禽流感",
    "人感染H7N9禽流感", "麻疹", "流行性出血热", "狂犬病", "流行性乙型脑炎", "登革热", "炭疽",
    "细菌性痢疾", "阿米巴性痢疾", "肺结核", "伤寒", "副伤寒", "流行性脑脊髓膜炎", "百日咳", "白喉",
    "新生儿破伤风", "猩红热", "布鲁氏菌病", "淋病", "梅毒", "钩端螺旋体病", "血吸虫病", "疟疾",
    "新型冠状病毒感染", "新型冠状病毒肺炎", "新冠肺炎", "新冠", "猴痘",
    # 丙类 (class C)
    "流行性感冒", "流感", "甲流", "乙流", "流行性腮腺炎", "腮腺炎", "风疹", "急性出血性结膜炎", "麻风病", "斑疹伤寒",
    "黑热病", "包虫病", "丝虫病", "感染性腹泻病", "手足口病", "手足口",
    # The same in English, with the usual abbreviations (matched on word boundaries: "flu" is
    # not listed, it would take "flu-like" and "stomach flu"; nor "AIDS")
    "plague", "cholera",
    "SARS", "HIV", "viral hepatitis", "hepatitis A", "hepatitis B", "hepatitis C", "hepatitis D",
    "hepatitis E", "poliomyelitis", "polio", "avian influenza", "bird flu", "H5N1", "H7N9", "H1N1", "H3N2",
    "measles", "haemorrhagic fever with renal syndrome", "hemorrhagic fever with renal syndrome",
    "HFRS", "rabies", "Japanese encephalitis", "dengue", "anthrax", "dysentery", "shigellosis",
    "tuberculosis", "TB", "typhoid", "paratyphoid", "meningococcal meningitis",
    "meningococcal disease", "epidemic meningitis",
    "pertussis", "whooping cough", "diphtheria", "neonatal tetanus", "scarlet fever",
    "brucellosis", "gonorrhoea", "gonorrhea", "syphilis", "leptospirosis", "schistosomiasis",
    "malaria", "COVID-19", "COVID", "SARS-CoV-2", "mpox", "monkeypox",
    "influenza", "mumps", "rubella", "German measles", "acute haemorrhagic conjunctivitis",
    "acute hemorrhagic conjunctivitis", "leprosy", "typhus", "kala-azar",
    "visceral leishmaniasis", "echinococcosis", "hydatid disease", "filariasis",
    "infectious diarrhoea", "infectious diarrhea", *HFMD_NAMES[2:],
]
"""法定传染病: the diseases listed under 《中华人民共和国传染病防治法》 第三条 (甲类、乙类、丙类) with
the additions announced by the health administration since (人感染H7N9禽流感 2013, 手足口病 2008,
新型冠状病毒感染 2020, 猴痘 2023), in Chinese and in English (with the usual abbreviations: HFMD,
COVID-19, TB …). Matched in ``diagnosis``, case-insensitively: a Chinese name as a substring, an
ASCII name on word boundaries (typhoid not inside "paratyphoid", TB not inside a longer code); the
longest name found is the one recorded.
The list changes by announcement (国家卫生健康委公告): keep ``clusters.notifiable.diagnoses``
current."""

DEADLINE_LEAD = 1800.0
"""How long before a deadline the engine tells the required level itself (30 minutes)."""

DEADLINE_RULES: dict[str, dict[str, Any]] = {
    "notifiable_disease": {
        "name": "法定传染病病例",
        "within": 0.0,
        "notify": ["district_cdc"],
        "source": "《中华人民共和国传染病防治法》：学校发现传染病疫情应当及时向所在地疾病预防控制机构报告"
                  "（学校由疫情报告人立即报告；时限以属地卫生健康部门规定为准）",
    },
    "school_cluster": {
        "name": "学校聚集性疫情",
        "within": 86400.0,
        "notify": ["district_cdc", "education_bureau"],
        "source": "《学校和托幼机构传染病疫情报告工作规范（试行）》（2006）：学校疫情报告人应当在24小时内"
                  "报告属地疾病预防控制机构和教育行政部门",
    },
    "public_health_emergency": {
        "name": "突发公共卫生事件",
        "within": 7200.0,
        "notify": ["district_cdc", "education_bureau"],
        "match": {"kind": ["incident", "suspected_case", "absence"],
                  "category": ["infectious_disease", "food_safety"], "severity": ["critical"]},
        "source": "《突发公共卫生事件应急条例》第十九条、第二十条：有关单位发现突发公共卫生事件，"
                  "应当在2小时内向所在地县级人民政府卫生行政主管部门报告",
    },
}
"""Reporting deadlines (``within``, from the first event's ``occurred_at``; an "at once" rule,
``within: 0``, from when escalator received it) and the level that must have been told by then
(``notify``: step targets). ``school_cluster`` applies to cluster incidents and
``notifiable_disease`` to a case whose diagnosis is notifiable (``clusters:``); a rule with a
``match`` applies to every incident whose first event matches (``critical`` infectious-disease
or food-safety events: the reporter judges them a public-health emergency)."""
