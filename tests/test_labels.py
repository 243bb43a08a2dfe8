"""One word per incident state in every text a person reads (escalator/labels.py)."""

from __future__ import annotations

from pathlib import Path

from escalator.labels import STATE, word

ROOT = Path(__file__).resolve().parents[1]
OTHER_WORDS = ("已处置完毕", "已结束", "处置中")
"""Words the ack page, the drill report and the ledger once used for the same states."""


def test_each_state_has_one_distinct_word_per_language():
    for lang in ("zh", "en"):
        assert set(STATE[lang]) == {"triggered", "acknowledged", "resolved"}
        assert len(set(STATE[lang].values())) == 3
    assert word(STATE, "resolved", "zh") == "已解除"
    assert word(STATE, "unknown", "zh") == "unknown"


def test_no_user_text_uses_another_word_for_a_state():
    texts = [p for ext in ("*.py", "*.html", "*.j2") for p in (ROOT / "escalator").rglob(ext)]
    texts += list((ROOT / "plugins").rglob("*.py"))
    found = [(p.relative_to(ROOT), w) for p in texts for w in OTHER_WORDS
             if w in p.read_text(encoding="utf-8") and p.name != "test_labels.py"]
    assert found == []


def test_the_ledger_the_drill_report_and_the_ack_page_take_the_words_from_labels():
    from escalator.school import drills, ledger
    from escalator.web.routers import ack

    assert drills.TEXT["zh"]["states"] is STATE["zh"]
    assert all(ledger._TEXT["zh"][s] == STATE["zh"][s] for s in STATE["zh"])
    assert ack.STATE is STATE
