"""Chinese for administrators (issue 13 point 8): the gettext catalog built with Babel, the choice
of language (``--lang``, ``LC_ALL``/``LANG``, Chinese by default), and the CLI, check-config and
spool sidecar text in both languages."""

from __future__ import annotations

import gettext
import io
import json
import os
import string
import subprocess
import sys

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from escalator import i18n
from escalator.i18n import _

from .conftest import CASES, FIXTURES, ROOT
from .test_spool import Wired

PO = ROOT / "escalator" / "locale" / "zh" / "LC_MESSAGES" / "escalator.po"
MO = PO.with_suffix(".mo")
EXE = [sys.executable, "-m", "escalator.cli"]


def catalog():
    with PO.open("rb") as f:
        return read_po(f)


def extracted() -> set[str]:
    """Every message Babel extracts from the code with the project's babel.cfg."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as f:
        method_map, options_map = parse_mapping_cfg(f)
    ids = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map, options_map, keywords={"_": None, "ngettext": (1, 2)}):
        ids.add(message if isinstance(message, str) else message[0])
    return ids


# --- the catalog ----------------------------------------------------------------------------


def test_every_extracted_message_has_a_chinese_translation():
    cat = catalog()
    ids = extracted()
    assert len(ids) > 150  # the extraction found the marked messages at all
    missing = sorted(m for m in ids if m not in cat or not cat[m].string)
    fuzzy = sorted(m.id for m in cat if m.id and m.fuzzy)
    stale = sorted(m.id for m in cat if m.id and m.id not in ids)
    assert missing == [], "run pybabel extract + update and translate (docs/i18n.md)"
    assert fuzzy == [] and stale == []


def test_the_compiled_catalog_is_up_to_date_with_the_po_file():
    compiled = io.BytesIO()
    write_mo(compiled, catalog())
    compiled.seek(0)
    want = gettext.GNUTranslations(compiled)._catalog
    with MO.open("rb") as f:
        got = gettext.GNUTranslations(f)._catalog
    assert got == want, "run pybabel compile -d escalator/locale -D escalator"


def test_translations_keep_every_placeholder():
    def fields(text: str) -> set[str]:
        return {name for _t, name, _s, _c in string.Formatter().parse(text) if name is not None}

    for m in catalog():
        if m.id:
            assert fields(m.string) == fields(m.id), m.id


def test_the_catalog_ships_as_package_data():
    import tomllib

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    data = conf["tool"]["setuptools"]["package-data"]["escalator"]
    assert "locale/*/LC_MESSAGES/*.mo" in data


# --- which language -------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "lang"), [
    ({}, "zh"),
    ({"LANG": "C.UTF-8"}, "zh"),
    ({"LANG": "zh_CN.UTF-8"}, "zh"),
    ({"LANG": "en_US.UTF-8"}, "en"),
    ({"LANG": "en_GB"}, "en"),
    ({"LANG": "en_US.UTF-8", "LC_ALL": "zh_CN.UTF-8"}, "zh"),  # LC_ALL wins
    ({"LANG": "zh_CN.UTF-8", "LC_ALL": "en_US.UTF-8"}, "en"),
])
def test_language_from_the_environment(monkeypatch, env, lang):
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert i18n.language() == lang
    i18n.set_language("en" if lang == "zh" else "zh")  # --lang wins over the environment
    try:
        assert i18n.language() != lang
    finally:
        i18n.set_language(None)
    with pytest.raises(ValueError):
        i18n.set_language("fr")


def test_a_message_in_each_language(monkeypatch):
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert _("unknown field") == "未知字段"
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    assert _("unknown field") == "unknown field"


# --- the CLI in both languages ----------------------------------------------------------------


def run(*args: str, lang: str | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("ESCALATOR_") and k not in ("LANG", "LC_ALL", "LC_MESSAGES")}
    if lang is not None:
        full["LANG"] = lang
    full.update(env or {})
    return subprocess.run([*EXE, *args], capture_output=True, text=True, env=full, timeout=60)


def test_cli_speaks_chinese_by_default_and_english_on_request(tmp_path):
    bad = FIXTURES / "config" / "several_problems.yaml"
    zh = run("check-config", "--config", str(bad))  # no LANG at all
    assert zh.returncode == 1
    assert "错误：policies.main.steps[0].targets[1]（第 1 级，第 20 行）：未知的角色 'cdc'" in zh.stderr
    assert "个错误，配置未被接受" in zh.stderr
    c_locale = run("check-config", "--config", str(bad), lang="C.UTF-8")
    assert c_locale.stderr == zh.stderr
    en = run("check-config", "--config", str(bad), lang="en_US.UTF-8")
    assert "error: policies.main.steps[0].targets[1] (level 1, line 20): unknown role 'cdc'" \
        in en.stderr and "error(s); the config was not accepted" in en.stderr
    assert run("check-config", "--config", str(bad), "--lang", "en").stderr == en.stderr
    assert run("--lang", "zh", "check-config", "--config", str(bad),
               lang="en_US.UTF-8").stderr == zh.stderr
    assert "退出码" in run("--help").stdout and "exit codes" in run("--help", "--lang=en").stdout


def test_cli_incidents_ack_and_resolve_in_both_languages(tmp_path):
    env = {"ESCALATOR_STATE_DIR": str(tmp_path / "state"),
           "ESCALATOR_CONFIG": str(FIXTURES / "engine.yaml")}
    sent = run("send", str(CASES / "events/fever_single.json"), env=env)
    assert sent.returncode == 0, sent.stderr
    listing = run("incidents", env=env).stdout.splitlines()
    assert listing[0].split()[:3] == ["编号", "状态", "类别"]
    assert listing[1].split()[:4] == ["1", "待处理", "传染病", "一般"]  # labels.STATE's word
    en = run("incidents", "--lang", "en", env=env).stdout.splitlines()
    assert en[1].split()[:2] == ["1", "triggered"]
    ack = run("ack", "1", env=env)
    assert ack.stdout.strip() == "事件 1：本级已确认，已立即通知下一级（step_confirmed；状态：待处理）"
    show = run("incidents", "1", env=env).stdout.splitlines()
    assert show[0].startswith("1 [待处理] 传染病/")
    assert show[1].startswith("处置链 report_chain，第 2/4 级")  # levels counted from 1
    res = run("resolve", "1", "--lang", "en", env=env)
    assert res.stdout.strip() == "incident 1: resolved (resolved; state: resolved)"
    missing = run("ack", "42", env=env)
    assert missing.returncode == 3 and missing.stderr.strip() == "escalator: 没有事件 42"


# --- spool sidecars ---------------------------------------------------------------------------


@pytest.mark.parametrize(("lang", "reason"), [
    ("zh_CN.UTF-8", "不是有效的 JSON："), ("en_US.UTF-8", "not valid JSON: ")])
async def test_a_sidecar_reason_in_each_language_with_a_stable_code(
        harness, tmp_path, monkeypatch, lang, reason):
    monkeypatch.setenv("LANG", lang)
    wired = Wired(harness, tmp_path / "spool")
    wired.drop("broken.json", '{"kind": "incident",')
    wired.drop("linked.json", b"{}")
    os.link(wired.incoming / "linked.json", tmp_path / "second-name.json")
    await wired.scan()
    side = wired.sidecar("broken.json")
    assert side["code"] == "bad_json" and side["reason"].startswith(reason)
    assert wired.sidecar("linked.json")["code"] == "hard_link"
    bad = json.loads((CASES / "bad" / "wrong_types.json").read_text(encoding="utf-8"))
    wired.drop("wrong.json", bad)
    await wired.scan()
    side = wired.sidecar("wrong.json")
    assert side["code"] == "invalid_event" and side["errors"]
    assert side["reason"] == (_("invalid event: {count} problem(s), listed under errors")
                              .format(count=len(side["errors"])))


def test_sidecar_codes_are_documented():
    text = (ROOT / "docs" / "spool.md").read_text(encoding="utf-8")
    for code in ("symlink", "not_a_file", "hard_link", "too_large", "unreadable", "not_utf8",
                 "bad_json", "bad_yaml", "invalid_event", "register", "parse_failed",
                 "engine_failed"):
        assert f"`{code}`" in text, code


@pytest.mark.parametrize(("lang", "message"), [
    ("zh_CN.UTF-8", "不是日期：'30/11'（请写成 2026-11-30 或 2026年11月30日）"),
    ("en_US.UTF-8", "not a date: '30/11' (write e.g. 2026-11-30 or 2026年11月30日)")])
def test_a_refused_register_row_says_why_in_each_language(monkeypatch, lang, message):
    """The reasons per cell of a refused row (the rejected file's sidecar, the school doctor's
    notice) speak the administrator's language too."""
    from escalator.config import load_config
    from escalator.intake.registers import read_register

    monkeypatch.setenv("LANG", lang)
    config = load_config(ROOT / "config" / "demo.yaml")
    data = ("日期,班级,学号,缺勤原因,症状,发病时间,缺课天数,报告人\r\n"
            "30/11,3-2,S-2023-0141,病假,发热,,1,王丽\r\n").encode()
    reg = read_register(data, config, key=b"k" * 32, name="absence.csv")
    [row] = reg.refused
    assert message in [e["message"] for e in row.errors]


@pytest.mark.parametrize("lang, roster_words, silence_words", [
    ("zh", "结束时间不晚于开始时间", "请写明原因"),
    ("en", "the end is not after the start", "say why"),
])
def test_roster_and_silence_refusals_speak_the_administrators_language(lang, roster_words,
                                                                       silence_words):
    """What the console and the CLI show for a refused override or silence (the field named
    the same in both languages)."""
    from datetime import UTC, datetime

    from escalator.engine import silences
    from escalator.school import roster

    from .test_registers import demo_config

    config = demo_config()
    i18n.set_language(lang)
    try:
        with pytest.raises(roster.RosterError, match=roster_words) as got:
            roster.period(config, "duty_officer", start=datetime(2026, 12, 7, 9),
                          end=datetime(2026, 12, 7, 8))
        assert got.value.field == "end"
        with pytest.raises(silences.SilenceError, match=silence_words) as got:
            silences.create(None, config, matchers=["category=fire"], created_by="admin",
                            comment=" ", now=datetime(2026, 12, 7, tzinfo=UTC))
        assert got.value.field == "comment"
    finally:
        i18n.set_language(None)
