"""Message text: what a person is told, what a group channel is never told."""

from __future__ import annotations

from escalator.delivery.render import RenderContext, render_templates

from .conftest import case


async def test_a_person_message_says_where_what_how_many_and_who_reported(harness):
    harness.clock.advance(6 * 3600)  # 13:48: the canteen report (13:05) is in the past
    await harness.send(case("events/food_safety.json"))
    by_name = {m.recipient_name: m for m in harness.channel.sent}
    # grade 4 has no grade leader in this school: the duty officer is told, in plain words
    notice = by_name["值班员"].body
    assert "“班主任”未能找到接收人" in notice and "class_teacher" not in notice
    for _ in range(30):  # the duty officer stands in for level 1: level 2 after its timeout
        if any(m.recipient_name == "张校长" for m in harness.channel.sent):
            break
        await harness.advance(60)
    body = next(m for m in harness.channel.sent if m.recipient_name == "张校长").body
    for line in ("测试小学 事件 #1：午餐后1小时内6名学生出现呕吐、腹痛", "年级：4", "地点：学生食堂",
                 "发生时间：2026-11-30 13:05", "症状：呕吐、腹痛", "涉及人数：6",
                 "情况：涉及四年级1班4人", "报告人：clinic-zhao", "环节：第2级",
                 "确认命令：escalator ack 1"):
        assert line in body, line


async def test_a_group_message_carries_no_summary_details_or_reporter(harness):
    await harness.send(case("events/fever_single.json"))
    with harness.store.transaction() as tx:
        inc = tx.get_incident(1)
        n = tx.notifications_of(1)[0]
        event = tx.get_event(inc.first_event_id)["body"]
    group = render_templates(RenderContext(inc, n, harness.config, audience="group", event=event))
    person = render_templates(RenderContext(inc, n, harness.config, audience="person", event=event))
    assert "38.6" in person.body and "晨检发现" in person.body and "t-wang-li" in person.body
    for private in ("38.6", "晨检发现", "t-wang-li", "S-2023-0142", "缺勤"):
        assert private not in group.body and private not in group.title
    assert "班级：3-2" in group.body and "症状：发热、咳嗽" in group.body


async def test_a_channel_template_override_replaces_the_packaged_one(engine_config, tmp_path):
    from escalator.testing import Harness

    config = engine_config.model_copy(deep=True)
    config.channels["main"].templates = {"title": "#{{ id }} {{ category }}",
                                         "body": "{{ class_id }} {{ symptoms }}"}
    h = Harness(config, tmp_path / "db.sqlite3")
    await h.send(case("events/fever_single.json"))
    assert [(m.title, m.body) for m in h.channel.sent] == [("#1 传染病", "3-2 发热、咳嗽")]
    h.close()


def test_a_register_rows_time_is_shown_as_written_never_a_made_up_midnight():
    from zoneinfo import ZoneInfo

    from escalator.delivery.pipeline import occurred_text

    tz = ZoneInfo("Asia/Shanghai")
    day = "2026-11-30T00:00:00+08:00"
    # onset the evening before the register's date: the onset, not the day's 00:00
    assert occurred_text({"occurred_at": day, "labels": {"onset_at": "2026-11-29T21:15:00+08:00"}},
                         tz) == "2026-11-29 21:15"
    # the day only: the date alone
    assert occurred_text({"occurred_at": day, "labels": {"time": "day"}}, tz) == "2026-11-30"
    assert occurred_text({"occurred_at": "2026-11-29T23:48:00+00:00"}, tz) == "2026-11-30 07:48"
    assert occurred_text({}, tz) is None
