"""Answering from the phone (docs/replies.md): reply codes in messages, what a reply does, and
the answers — on the fake clock with a real SQLite file (``Harness``). The webhooks and the
e-mail spool against a real daemon and real local servers are in ``test_reply_webhooks.py``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import structlog

from escalator.config import load_config
from escalator.delivery.channels import DeliveryResult, DeliveryStatus
from escalator.delivery.replies import Inbound, ReplyDesk, email_key, phone_key, senders
from escalator.delivery.reply_codes import Reply, code_name, parse_reply
from escalator.testing import Harness, RecordingChannel

FIXTURES = Path(__file__).resolve().parent / "fixtures"

FALL = {"kind": "incident", "category": "accident", "severity": "high",
        "summary": "3-2班一名学生在操场摔伤，右臂疼痛", "class_id": "3-2", "dedup_key": "fall/1"}
FEVER = {"kind": "suspected_case", "category": "infectious_disease", "severity": "medium",
         "summary": "3-2班 1名学生发热 38.6℃", "class_id": "3-2", "dedup_key": "fever/1"}
WANG = "13800000001"  # 王老师, class teacher of 3-2 (tests/fixtures/engine.yaml)


class SmsRecorder(RecordingChannel):
    """A recording channel that takes replies, as the SMS and e-mail channels do."""

    takes_replies: ClassVar[bool] = True


def config_with(tmp_path: Path, extra: str = "replies: {}\n"):
    path = tmp_path / "escalator.yaml"
    path.write_text((FIXTURES / "engine.yaml").read_text(encoding="utf-8") + extra, encoding="utf-8")
    return load_config(path)


@pytest.fixture
def h(tmp_path):
    harness = Harness(config_with(tmp_path), tmp_path / "db.sqlite3", channel=SmsRecorder())
    yield harness
    harness.close()


def desk_of(h: Harness) -> ReplyDesk:
    return ReplyDesk(h.engine)


def sms(text: str, sender: str = WANG) -> Inbound:
    return Inbound(sender, text, "sms", "gateway")


# ------------------------------------------------------------------ codes and parsing


def test_code_names_are_short_and_never_repeat():
    assert [code_name(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "a", "b", "z", "aa", "ab", "az", "ba", "zz", "aaa"]
    assert len({code_name(i) for i in range(5000)}) == 5000


@pytest.mark.parametrize("text, reply", [
    ("1a", Reply("acknowledge", "a")), (" 1 A ", Reply("acknowledge", "a")),
    ("１ａ。", Reply("acknowledge", "a")), ("2b", Reply("handled", "b")),
    ("3", Reply("report", None)), ("确认", Reply("acknowledge", None)),
    ("确认ab", Reply("acknowledge", "ab")), ("上报 c", Reply("report", "c")),
    ("已处置", Reply("handled", None)), ("1#A", Reply("acknowledge", "a")),
    ("2a 已联系家长接回", Reply("handled", "a", "已联系家长接回")),
    ("2，已送医", Reply("handled", None, "已送医")), ("3A。", Reply("report", "a")),
])
def test_replies_people_write_are_read(text, reply):
    assert parse_reply(text) == reply


@pytest.mark.parametrize("text", ["好的", "4a", "1abcd", "", "  ", "1a 好的", "a1", "收到了谢谢",
                                  "3a 明天再说", "12"])
def test_anything_else_is_no_reply(text):
    assert parse_reply(text) is None


def test_senders_match_by_phone_in_any_form_or_by_address(h):
    assert phone_key("+86 138-0000-0001") == phone_key("8613800000001") == phone_key(WANG) == WANG
    assert phone_key("王老师") is None and email_key("李老师 <Li@Example.edu>") == "li@example.edu"
    assert senders(h.config, "+8613800000001", "sms") == [("person", "t-wang")]
    assert senders(h.config, "LI@example.edu", "email") == [("person", "t-li")]
    assert senders(h.config, "li@example.edu", "sms") == []  # an address is no phone
    assert senders(h.config, "+86 139 0000 0101", "sms") == [("unit", "district_cdc")]
    assert senders(h.config, "13900000000", "sms") == []


# ------------------------------------------------------------------ codes in messages


async def test_a_message_asking_for_an_answer_ends_with_its_code(h):
    await h.send(FALL)  # an escalate step: acknowledging is the one answer
    m = h.channel.sent[-1]
    assert m.recipient_name == "王老师"
    assert m.body.endswith("escalator ack 1\n回复 1a 确认（停止升级）")
    assert m.ack_hint == "escalator ack 1\n回复 1a 确认（停止升级）"
    assert m.values["reply_code"] == "a"  # for a cloud SMS template variable
    await h.send(FEVER)  # a report step: the level decides (report up / handled here)
    m = h.channel.sent[-1]
    assert m.body.endswith("回复 1b 确认，2b 已处置无需上报，3b 上报上一级"), m.body


async def test_one_phone_several_incidents_each_its_own_code_kept_across_messages(h):
    await h.send(FALL)
    await h.send({**FALL, "dedup_key": "fall/2", "summary": "3-2班另一名学生扭伤脚踝"})
    assert [m.values["reply_code"] for m in h.channel.sent] == ["a", "b"]
    await h.advance(60)  # both walk on to the leadership: their own codes, from "a"
    assert {m.recipient_name: m.values["reply_code"] for m in h.channel.sent[2:]} == {"张校长": "b"}
    await h.advance(60)  # the repeat round: 王老师 again, same codes per incident
    again = [m for m in h.channel.sent[4:] if m.recipient_name == "王老师"]
    assert sorted((m.incident_id, m.values["reply_code"]) for m in again) == [(1, "a"), (2, "b")]
    with h.store.transaction() as tx:  # the code now maps to the latest message's ack token
        row = tx.reply_code("person", "t-wang", "a")
        latest = max((n for n in tx.notifications_of(1) if n.recipient_id == "t-wang"),
                     key=lambda n: n.id)
        assert (row.notification_id, row.ack_token) == (latest.id, latest.ack_token)


async def test_no_code_without_replies_config_for_groups_or_for_inform_steps(tmp_path):
    h = Harness(config_with(tmp_path, ""), tmp_path / "a.sqlite3", channel=SmsRecorder())
    await h.send(FALL)
    assert h.channel.sent[-1].values["reply_code"] is None and "回复" not in h.channel.sent[-1].body
    h.close()

    class Robot(SmsRecorder):
        audience: ClassVar[str] = "group"
    h = Harness(config_with(tmp_path), tmp_path / "b.sqlite3", channel=Robot())
    await h.send(FALL)
    assert "回复" not in h.channel.sent[-1].body
    h.close()

    h = Harness(config_with(tmp_path), tmp_path / "c.sqlite3", channel=RecordingChannel())
    await h.send(FALL)  # a channel that takes no replies (chat, console)
    assert "回复" not in h.channel.sent[-1].body
    h.close()

    h = Harness(config_with(tmp_path), tmp_path / "d.sqlite3", channel=SmsRecorder())
    await h.send({**FALL, "category": "fire", "dedup_key": "fire/1"})  # police: inform only
    police = [m for m in h.channel.sent if m.recipient_name == "派出所"]
    assert police and all("回复" not in m.body for m in police)
    h.close()


async def test_a_resolved_incidents_code_is_not_reused_for_a_day(h):
    await h.send(FALL)
    h.engine.resolve(1, actor="admin", via="cli")
    await h.send({**FALL, "dedup_key": "fall/2"})
    assert h.channel.sent[-1].values["reply_code"] == "b"  # "a" may still be answered late
    assert desk_of(h).handle(sms("1a")).outcome == "stale_code"
    await h.advance(86400 + 60)
    await h.send({**FALL, "dedup_key": "fall/3"})
    assert h.channel.sent[-1].values["reply_code"] == "a"


async def test_the_english_line(tmp_path):
    cfg = config_with(tmp_path)
    cfg.school.language = "en"
    h = Harness(cfg, tmp_path / "db.sqlite3", channel=SmsRecorder())
    await h.send(FALL)
    assert h.channel.sent[-1].body.endswith("Reply 1a to acknowledge (stops the escalation)")
    await h.send(FEVER)
    assert h.channel.sent[-1].body.endswith(
        "Reply 1b to acknowledge, 2b handled (no report needed), 3b report upwards")
    h.close()


# ------------------------------------------------------------------ what a reply does


async def test_reply_1a_acknowledges_like_the_link_with_the_teacher_as_actor(h):
    await h.send(FALL)
    handled = desk_of(h).handle(sms("1a", "+86 138 0000 0001"))
    assert handled.outcome == "acknowledged" and handled.incident_id == 1
    assert handled.answer == "事件 #1 已确认，升级已停止。"
    inc = h.incident(1)
    assert inc.state == "acknowledged" and inc.acknowledged_by == "t-wang"
    with h.store.transaction() as tx:
        entry = tx.timeline(1)[-1]
    assert (entry.type, entry.actor, entry.detail["via"]) == ("acknowledged", "t-wang", "sms")
    again = desk_of(h).handle(sms("1a"))
    assert again.outcome == "already_acknowledged" and "无需再回复" in again.answer


async def test_a_report_level_confirmed_by_reply_tells_the_next_level(h):
    await h.send(FEVER)
    assert h.told() == ["王老师"]
    handled = desk_of(h).handle(sms("1"))  # one open incident: the digit alone will do
    assert handled.outcome == "step_confirmed" and "已通知上一级" in handled.answer
    await h.settle()
    assert h.told() == ["王老师", "赵校医"]
    doctor = desk_of(h).handle(sms("1a", "13800000004"))  # the doctor's own code for it
    assert doctor.outcome == "step_confirmed"


async def test_replies_2_and_3_go_through_decide(h):
    await h.send(FEVER)
    reported = desk_of(h).handle(sms("3a"))  # report up: this level confirmed, the next told
    assert reported.outcome == "step_confirmed" and reported.incident_id == 1
    await h.settle()
    assert h.told() == ["王老师", "赵校医"]
    await h.send({**FEVER, "dedup_key": "fever/2"})
    handled = desk_of(h).handle(sms("2b 已联系家长接回，明日复诊", WANG))
    assert handled.outcome == "handled" and handled.incident_id == 2
    assert "已解除" in handled.answer
    inc = h.incident(2)
    assert inc.state == "resolved" and inc.resolved_by == "t-wang"
    with h.store.transaction() as tx:
        entry = next(t for t in tx.timeline(2) if t.type == "handled_here")
    assert entry.detail["reason"] == "已联系家长接回，明日复诊" and entry.detail["via"] == "sms"
    await h.send({**FEVER, "dedup_key": "fever/3"})
    desk_of(h).handle(sms("2c"))  # no reason written: the default one, in the school's words
    with h.store.transaction() as tx:
        entry = next(t for t in tx.timeline(3) if t.type == "handled_here")
    assert entry.detail["reason"] == "短信回复 2：本级已处置，无需上报"


async def test_unknown_senders_stale_codes_and_unclear_replies_are_answered(h):
    desk = desk_of(h)
    unknown = desk.handle(sms("1a", "13912345678"))
    assert unknown.outcome == "unknown_sender" and "未登记" in unknown.answer
    assert desk.handle(sms("1a")).outcome == "stale_code"  # no such code
    assert desk.handle(sms("1")).outcome == "no_open"
    await h.send(FALL)
    stale = desk.handle(sms("1q"))
    assert stale.outcome == "stale_code" and "1q" not in stale.answer and "q" in stale.answer
    assert h.incident(1).state == "triggered"  # nothing done
    assert desk.handle(sms("好的")).outcome == "not_a_reply"
    await h.send({**FALL, "dedup_key": "fall/2"})
    choose = desk.handle(sms("1"))
    assert choose.outcome == "choose" and "a（#1）" in choose.answer and "b（#2）" in choose.answer
    assert h.incident(1).state == h.incident(2).state == "triggered"
    other = desk.handle(sms("1b", "13800000005"))  # 张校长 holds no code b
    assert other.outcome == "stale_code"


async def test_a_reply_is_logged_without_its_text_or_the_full_number(h):
    await h.send(FALL)
    with structlog.testing.capture_logs() as logs:
        desk_of(h).handle(sms("1a 王小明摔伤", WANG))
        desk_of(h).handle(sms("1a", WANG))
    lines = [line for line in logs if line["event"] == "reply_handled"]
    assert [line["outcome"] for line in lines] == ["not_a_reply", "acknowledged"]
    assert all(WANG not in str(line) and "王小明" not in str(line) for line in logs)
    assert lines[1]["sender"] == "…0001" and lines[1]["recipient"] == "person:t-wang"


# ------------------------------------------------------------------ answers


async def test_answers_go_through_the_channel_within_limits(h):
    desk, channel, now = desk_of(h), RecordingChannel(), [0.0]
    desk._now = lambda: now[0]
    await h.send(FALL)
    inbound = sms("1a")
    result = await desk.answer(inbound, desk.handle(inbound), channel, "sms")
    assert result.status is DeliveryStatus.delivered
    m = channel.sent[-1]
    assert (m.address, m.title, m.body) == (WANG, "事件 #1 已确认，升级已停止。", "")
    assert m.values["title"] == m.title  # a cloud SMS template maps its variable to it
    for _ in range(2):
        await desk.answer(inbound, desk.handle(inbound), channel, "sms")
    assert len(channel.sent) == 3
    assert await desk.answer(inbound, desk.handle(inbound), channel, "sms") is None  # 4th in 10 min
    now[0] += 601
    assert await desk.answer(inbound, desk.handle(inbound), channel, "sms") is not None
    stranger = sms("1a", "13912345678")
    assert await desk.answer(stranger, desk.handle(stranger), channel, "sms") is not None
    assert await desk.answer(stranger, desk.handle(stranger), channel, "sms") is None  # 1 an hour
    assert await desk.answer(inbound, desk.handle(inbound), None, "") is None  # no channel


async def test_a_channel_that_raises_leaves_the_reply_handled(h):
    class Broken(RecordingChannel):
        async def send(self, message) -> DeliveryResult:
            raise RuntimeError("boom")
    await h.send(FALL)
    desk = desk_of(h)
    inbound = sms("1a")
    handled = desk.handle(inbound)
    result = await desk.answer(inbound, handled, Broken(), "sms")
    assert result.status is DeliveryStatus.failed_retryable
    assert h.incident(1).state == "acknowledged"


async def test_a_retry_of_an_older_message_keeps_the_code_on_the_newest_token(h):
    from escalator.delivery.reply_codes import assign

    await h.send(FALL)
    await h.advance(120)  # the repeat round: 王老师 told again
    channel = SmsRecorder()
    with h.store.transaction() as tx:
        older, newer = sorted((n for n in tx.notifications_of(1) if n.recipient_id == "t-wang"),
                              key=lambda n: n.id)[:2]
        assert assign(tx, h.config, newer, channel, h.clock.now()) == "a"
        assert assign(tx, h.config, older, channel, h.clock.now()) == "a"  # e.g. a late retry
        assert tx.reply_code("person", "t-wang", "a").ack_token == newer.ack_token


def test_reply_durations_take_units_as_the_docs_write_them(tmp_path):
    """Review r16: docs/replies.md writes ``reuse_after: 1d``; it was refused as no number."""
    config = config_with(tmp_path, "replies:\n  reuse_after: 1d\n"
                                   "  email: {spool_dir: mail, poll_seconds: 30s}\n")
    assert config.replies.reuse_after == 86400.0
    assert config.replies.email.poll_seconds == 30.0
    assert config_with(tmp_path, "replies: {reuse_after: 3600}\n").replies.reuse_after == 3600.0
