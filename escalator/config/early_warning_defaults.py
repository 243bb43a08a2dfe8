"""Default data for early warning from sickness absence (docs/early-warning.md): the EARS
parameters and the published per-disease outbreak thresholds at school scope.

Pure data (no imports from the rest of escalator), read by :mod:`escalator.config.models` as the
defaults of ``early_warning:``. Every entry names its source, and says where we could not check
it against the original text; an administrator overrides any of them in the config file.
"""

from __future__ import annotations

from typing import Any

EARS_BASELINE_DAYS = 7
"""Length of the EARS baseline in school days. Source: Hutwagner L, Browne T, Seeman GM,
Fleischauer AT. Comparing aberration detection methods with simulated data. Emerg Infect Dis
2005;11(2):314–316 (C1, C2, C3 use a 7-day moving baseline); the R package ``surveillance``
(``earsC``, ``baseline = 7``) implements the same. The EID text itself was not available to us:
the definitions here follow the ``surveillance`` documentation and Fricker et al., Stat Med
2008;27:3407–3429, which it cites."""

EARS_GUARD_DAYS = 2
"""The guard band of C2 and C3: their baseline is school days t−9..t−3 (two days between the
baseline and the day judged). Same sources as :data:`EARS_BASELINE_DAYS` (``earsC``: C2 can be
judged from index ``baseline + 3``, C3 from ``baseline + 5``)."""

QIN_2014 = ("Qin et al., Online Journal of Public Health Informatics 2014 (conference "
            "abstract, PMC4050765; school sickness absence, one primary school in Shayang County, Hubei, "
            "April 2012 – January 2013): best Youden index per method — C1 (k=0.5, c=2.0) 0.95, "
            "C2 (k=0.5, c=3.0) 0.98, C3 (k=0.5, c=5.0) 0.97")

EARS_METHODS: dict[str, dict[str, Any]] = {
    "C1": {"k": 0.5, "h": 2.0, "source": QIN_2014},
    "C2": {"k": 0.5, "h": 3.0, "source": QIN_2014},
    "C3": {"k": 0.5, "h": 5.0, "source": QIN_2014},
}
"""EARS C1-MILD, C2-MEDIUM, C3-ULTRA with the parameters that scored best on Chinese school
sickness-absence data (Qin et al. 2014, the paper's ``c`` is ``h`` here). With ``z`` = (observed
− baseline mean) / max(baseline sd, ``min_sd``): C1 and C2 signal when max(0, z − k) > h; C3
when the sum over the day and the two school days before it of max(0, z₂ − k) > h (z₂: the C2
value of that day). Hutwagner's original EARS uses k = 1, h = 2 (C1, C2: z > 3) and C3 > 2."""

MIN_SD = 1.0
"""Floor of the baseline standard deviation, in pupils. A class with no sick pupil in seven
days has sd 0, and any single absence would be infinitely unusual. NOT a published figure: the
``surveillance`` package has ``minSigma`` (default 0) for the same purpose; 1 pupil is our
choice from the synthetic backtest (docs/early-warning.md): with 0.5, false alarms were 5–15
times as many for little gain. With 1, a quiet class signals by C1 at 3 sick pupils in a day
(z = 3, 3 − k > 2) and by C2 at 4."""

HUZHOU_2023 = ("湖州市卫生健康委员会《学校常见传染病聚集性疫情标准》（2023-09-11，转引国家相关指南）"
               "(Huzhou health commission, 2023, citing the national guidance)")

OUTBREAK_RULES: dict[str, dict[str, Any]] = {
    "ili": {
        "name": "流感样病例", "name_en": "influenza-like illness",
        "diagnoses": ["流感样病例", "流感样", "influenza-like illness", "ILI"],
        "ili": True,
        "thresholds": [{"scope": "school", "count": 10, "days": 7}],
        "source": HUZHOU_2023 + "：7天内同一托幼机构或学校出现10例及以上流感样病例（体温≥38℃，伴咽痛或"
                  "咳嗽之一）；national: 《全国流感监测方案》 流感样病例暴发",
    },
    "norovirus": {
        "name": "诺如病毒感染", "name_en": "norovirus infection",
        "diagnoses": ["诺如病毒", "诺如", "norovirus"],
        "thresholds": [{"scope": "school", "count": 10, "days": 7}],
        "source": HUZHOU_2023 + "：7天内同一托幼机构或学校发生10例及以上诺如病毒感染病例",
    },
    "scarlet_fever": {
        "name": "猩红热", "name_en": "scarlet fever",
        "diagnoses": ["猩红热", "scarlet fever"],
        "thresholds": [{"scope": "school", "count": 10, "days": 7}],
        "source": HUZHOU_2023 + "：7天内同一托幼机构或学校发生10例及以上猩红热病例",
    },
    "mumps": {
        "name": "流行性腮腺炎", "name_en": "mumps",
        "diagnoses": ["流行性腮腺炎", "腮腺炎", "mumps"],
        "thresholds": [{"scope": "school", "count": 5, "days": 7}],
        "source": HUZHOU_2023 + "：7天内同一托幼机构或学校发生5例及以上流行性腮腺炎病例",
    },
    "varicella": {
        "name": "水痘", "name_en": "varicella",
        "diagnoses": ["水痘", "varicella", "chickenpox"],
        "thresholds": [{"scope": "school", "count": 5, "days": 7}],
        "source": HUZHOU_2023 + "：7天内同一托幼机构或学校发生5例及以上水痘病例",
    },
    "rubella": {
        "name": "风疹", "name_en": "rubella",
        "diagnoses": ["风疹", "rubella", "German measles"],
        "thresholds": [{"scope": "school", "count": 5, "days": 7}],
        "source": HUZHOU_2023 + "：7天内同一托幼机构或学校发生5例及以上风疹病例",
    },
    "ahc": {
        "name": "急性出血性结膜炎", "name_en": "acute haemorrhagic conjunctivitis",
        "diagnoses": ["急性出血性结膜炎", "acute haemorrhagic conjunctivitis",
                      "acute hemorrhagic conjunctivitis"],
        "thresholds": [{"scope": "school", "count": 3, "days": 7}],
        "source": HUZHOU_2023 + "：7天内同一托幼机构或学校发生3例及以上急性出血性结膜炎病例",
    },
    "hfmd": {
        "name": "手足口病", "name_en": "hand-foot-mouth disease",
        "diagnoses": ["手足口病", "手足口", "hfmd", "hand-foot-mouth disease",
                      "hand-foot-and-mouth disease", "hand, foot and mouth disease",
                      "hand foot and mouth disease"],
        "thresholds": [{"scope": "school", "count": 5, "days": 7},
                       {"scope": "class", "count": 2, "days": 7},
                       {"scope": "dormitory", "count": 2, "days": 7}],
        "source": HUZHOU_2023 + "：7天内同一托幼机构或学校发生5例及以上，或同一班级或宿舍发生2例及以上"
                  "手足口病病例；《手足口病聚集性和暴发疫情处置工作规范（2012版）》",
    },
    "measles": {
        "name": "麻疹", "name_en": "measles",
        "diagnoses": ["麻疹", "measles"],
        "thresholds": [{"scope": "school", "count": 2, "days": 10}],
        "source": HUZHOU_2023 + "：10天内同一托幼机构或学校发生2例及以上麻疹病例",
    },
    "bacillary_dysentery": {
        "name": "细菌性痢疾", "name_en": "bacillary dysentery",
        "diagnoses": ["细菌性痢疾", "菌痢", "bacillary dysentery", "shigellosis"],
        "thresholds": [{"scope": "school", "count": 10, "days": 3}],
        "source": HUZHOU_2023 + "：3天内同一托幼机构或学校发生10例及以上细菌性痢疾病例（或2例及以上死亡）",
    },
}
"""Published school outbreak standards (聚集性疫情标准) per disease, each threshold with its scope
(``school``, ``grade``, ``class``, ``dormitory``), count of distinct pupils and window in
consecutive school-local calendar days. Checked against the Huzhou health commission's page of
2023-09-11 (wjw.huzhou.gov.cn), which lists exactly these figures and also dengue (14 days, one
campus, ≥ 3 local cases; not shipped: not a school-absence disease). The national texts it
relies on (国家卫生健康委 / 中国疾控中心 disease guidelines) were not available to check line by
line: see docs/early-warning.md. No standard is published per grade: add one in the config if
your authority sets it. A diagnosis is matched like ``clusters`` (Chinese names as substrings,
ASCII names on word boundaries; of two diseases matched by nested names — ``German measles`` and
``measles`` — only the longer counts). ``ili``: also a case with cough or sore throat and a
recorded temperature ≥ 38 ℃ (without a recorded temperature: with fever)."""
