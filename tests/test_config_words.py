"""check-config for a person editing the YAML by hand (issue 13 point 8): YAML mistakes in plain
words on the line where they are, the nearest known name for an unknown one, phone numbers and
e-mail addresses — in Chinese and English. Small bad files of our own in
``tests/fixtures/config_words/``, and small edits of ``tests/fixtures/engine.yaml``."""

from __future__ import annotations

import pytest

from escalator import i18n
from escalator.config import check_config
from escalator.config.contacts import is_email, is_phone

from .conftest import FIXTURES

WORDS = FIXTURES / "config_words"


@pytest.fixture(params=["zh", "en"])
def lang(request):
    i18n.set_language(request.param)
    yield request.param
    i18n.set_language(None)


def only(path) -> tuple[int | None, str]:
    config, problems = check_config(path)
    assert config is None and len(problems) == 1, problems
    return problems[0].line, problems[0].message


# (file, line of the mistake, words in zh, words in en)
YAML_MISTAKES = [
    ("tab.yaml", 4, "缩进中有制表符（Tab）", "a tab character in the indentation"),
    # the parser gives up on line 4; the full-width colon is on line 3
    ("full_width_colon.yaml", 3, "'name' 后面是全角冒号“：”", "a full-width colon '：' after 'name'"),
    ("bad_indent.yaml", 4, "此行的缩进（3 个空格）与上面的行（2 个空格）没有对齐",
     "the indentation of this line (3 spaces) does not line up with the lines above (2 spaces)"),
    ("unclosed_list.yaml", 3, "此行开始的 '[' 或 '{' 在第 4 行之前没有闭合",
     "a '[' or '{' opened on this line is not closed"),
]


@pytest.mark.parametrize(("name", "line", "zh", "en"), YAML_MISTAKES)
def test_yaml_mistakes_in_plain_words_on_their_line(lang, name, line, zh, en):
    got_line, message = only(WORDS / name)
    assert got_line == line
    assert (zh if lang == "zh" else en) in message
    assert "mapping values" not in message and "while scanning" not in message  # no parser text


def edited(tmp_path, *pairs: tuple[str, str]):
    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8")
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "school.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path) -> dict[str, str]:
    _config, problems = check_config(path)
    return {p.path: str(p) for p in problems if p.level == "error"}


def test_the_nearest_known_name_is_suggested(tmp_path, lang):
    path = edited(tmp_path,
                  ("{targets: [school_doctor], timeout: 120", "{targets: [school_docter], timeout: 120"),
                  ("  name: 测试小学\n", "  name: 测试小学\n  timezon: Asia/Shanghai\n"),
                  ('{channel: main, to: "13800000004"}', '{channel: mian, to: "13800000004"}'))
    got = problems_of(path)
    assert set(got) == {"school.timezon"}  # a model error stops before the cross-checks
    if lang == "zh":
        assert got["school.timezon"] == "school.timezon（第 4 行）：未知字段（是否应为 'timezone'？）"
    else:
        assert got["school.timezon"] == \
            "school.timezon (line 4): unknown field (did you mean 'timezone'?)"
    path.write_text(path.read_text(encoding="utf-8").replace("  timezon: Asia/Shanghai\n", ""),
                    encoding="utf-8")
    got = problems_of(path)
    target = got["policies.report_chain.steps[1].targets[0]"]
    channel = got["people[3].contacts[0].channel"]
    if lang == "zh":
        assert target == ("policies.report_chain.steps[1].targets[0]（第 2 级，第 27 行）："
                          "未知的角色 'school_docter'（是否应为 'school_doctor'？）")
        assert channel.endswith("未知的渠道 'mian'（是否应为 'main'？）")
    else:
        assert target == ("policies.report_chain.steps[1].targets[0] (level 2, line 27): "
                          "unknown role 'school_docter' (did you mean 'school_doctor'?)")
        assert channel.endswith("unknown channel 'mian' (did you mean 'main'?)")


def test_nothing_is_suggested_when_nothing_is_close(tmp_path):
    i18n.set_language("en")
    try:
        got = problems_of(edited(tmp_path, ("{targets: [school_doctor], timeout: 120",
                                            "{targets: [bursar], timeout: 120")))
    finally:
        i18n.set_language(None)
    assert got["policies.report_chain.steps[1].targets[0]"].endswith("unknown role 'bursar'")


SMS_AND_MAIL = ("  main: {type: console}\n",
                '  main: {type: sms_http, options: {url: "http://127.0.0.1:9/sms"}}\n'
                "  mail: {type: email, options: {host: 127.0.0.1, from_addr: a@b.example}}\n")


def test_phone_numbers_and_email_addresses_are_checked(tmp_path, lang):
    path = edited(tmp_path, SMS_AND_MAIL,
                  ('to: "13800000002"}', 'to: "1381234567x"}, {channel: mail, to: "li@@school"}'),
                  ('to: "13800000003"}', 'to: "+8613800000003"}'),
                  ('to: "13800000004"}', 'to: "138-0000-0004"}'),
                  ("responsible: 孙主任,", 'responsible: 孙主任, phone: "010-5555-0101",'),
                  ('{channel: main, to: "13900000110"}',
                   '{channel: mail, to: "police@district.example"}'))
    got = problems_of(path)
    assert set(got) == {"people[1].contacts[0].to", "people[1].contacts[1].to"}
    phone, mail = got["people[1].contacts[0].to"], got["people[1].contacts[1].to"]
    if lang == "zh":
        assert "'1381234567x' 不是电话号码：请填写大陆手机号" in phone and "（第 10 行）" in phone
        assert "'li@@school' 不是电子邮件地址" in mail
    else:
        assert "'1381234567x' is not a phone number: write a mainland mobile number" in phone
        assert "'li@@school' is not an e-mail address" in mail


def test_a_units_phone_may_be_a_landline_but_must_be_a_number(tmp_path):
    path = edited(tmp_path, ("responsible: 孙主任,", 'responsible: 孙主任, phone: "5555-01",'))
    i18n.set_language("en")
    try:
        got = problems_of(path)
    finally:
        i18n.set_language(None)
    assert list(got) == ["units[0].phone"] and "'5555-01' is not a phone number" in got["units[0].phone"]


@pytest.mark.parametrize(("text", "ok"), [
    ("13955550001", True), ("139-5555-0001", True), ("139 5555 0001", True),
    ("+8613955550001", True), ("+85291234567", True),
    ("1381234567x", False), ("1381234567", False), ("138123456789", False),
    ("12955550001", False), ("+123", False), ("+1234567890123456", False), ("", False),
])
def test_phone_rule(text, ok):
    assert is_phone(text) is ok


@pytest.mark.parametrize(("text", "ok"), [
    ("010-12345678", True), ("010-5555-0101", True), ("0571-8765432", True),
    ("0571-8765432-123", True), ("12345678", False), ("010-1", False),
])
def test_landline_rule(text, ok):
    assert is_phone(text, landline=True) is ok
    assert not is_phone(text) or text.startswith("1")


@pytest.mark.parametrize(("text", "ok"), [
    ("wangli@school.example", True), ("王丽@学校.cn", True), ("li@@school", False),
    ("li@school", False), ("li school@x.cn", False), ("school.example", False),
])
def test_email_rule(text, ok):
    assert is_email(text) is ok
