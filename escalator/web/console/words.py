"""The console's words, Simplified Chinese (default) and English: page text (:data:`UI`) and
the timeline's entries (:func:`timeline_text`; silences' and grouping's entries from
:data:`escalator.labels.TIMELINE`). Categories, severities, kinds and states come
from :mod:`escalator.labels`, so they read the same as in messages and the ledger."""

from __future__ import annotations

from typing import Any

from escalator.labels import TIMELINE

LANGS = ("zh", "en")

UI: dict[str, dict[str, str]] = {
    "zh": {
        "app": "学校联防联控", "today": "今日", "ledger": "台账与报表", "roster": "值班",
        "settings": "设置", "sign_out": "退出", "switch": "English", "switch_to": "en",
        "open_incidents": "待处理事件", "none_open": "当前没有待处理事件。",
        "level_now": "正在通知", "level": "第{n}级", "deadline_left": "距报告时限",
        "deadline_over": "已超过报告时限", "deadline_met": "已按时报告", "confirmed_by": "已确认",
        "assigned_to": "负责人", "nobody": "无", "drill": "演练", "zero_report": "今日零报告",
        "received": "已收到", "not_yet": "尚未收到（截止 {by}）", "missed": "漏报",
        "no_monitors": "未配置零报告监测。", "absence": "今日因病缺勤（按班级）",
        "no_absence": "今日暂无因病缺勤登记。", "pupils": "人", "clusters": "聚集性疫情",
        "no_clusters": "无正在形成的聚集性疫情。", "drills": "进行中的演练",
        "no_drills": "无进行中的演练。", "resolve_selected": "解除所选事件",
        "reason": "原因", "incident": "事件", "state": "状态", "severity": "级别",
        "class": "班级", "place": "地点", "summary": "摘要", "hidden": "（仅限有权限的人员查看）",
        "timeline": "时间线", "members": "聚集病例", "messages": "消息与送达",
        "recipient": "接收人", "channel": "渠道", "status": "状态", "attempts": "尝试",
        "acknowledge": "确认（本级）", "handled": "已在本级处置，无需上报",
        "report_now": "立即上报上一级", "resolve": "解除", "note": "添加备注", "assign": "指派给",
        "save": "提交", "actions": "处置", "opened": "创建时间", "time": "时间",
        "who": "操作人", "what": "事项", "updated": "已更新", "ledger_range": "工作台账",
        "held_back": "有新情况：取消勾选、离开输入框后显示。", "offline": "与服务器的连接中断，页面未更新。",
        "from": "从", "to": "至", "download_csv": "下载 CSV", "download_xlsx": "下载 Excel",
        "table": "表", "monthly": "月报", "month": "月份", "show": "查看",
        "drill_reports": "演练报告", "on_duty_now": "当前值班", "next_duty": "下一班",
        "people": "人员", "title": "职务", "roles": "角色", "access": "控制台权限",
        "reload": "配置加载", "reload_ok": "正常", "last_error": "最近错误",
        "warnings": "配置检查", "no_warnings": "配置检查无问题。", "channels": "渠道状态",
        "last_delivered": "最近送达", "failures": "7 天内失败", "last_failure": "最近失败",
        "sign_in": "登录", "person_id": "人员编号", "send_link": "发送登录链接",
        "link_sent": "如该人员存在，登录链接已发送到其第一联系方式（10 分钟内有效）。",
        "link_invalid": "登录链接无效、已使用或已过期。", "continue": "登录控制台",
        "too_many": "尝试次数过多，请稍后再试。", "forbidden": "您的权限不能执行此操作。",
        "csrf": "表单已过期，请刷新页面后重试。", "not_found": "没有这个事件。",
        "signed_out": "已退出。", "done": "已完成", "back": "返回",
        "viewer": "查看", "responder": "处置", "administrator": "管理员", "none": "不可登录",
        "phone_hint": "请输入您的人员编号，登录链接将发送到您本人的第一联系方式。",
        "not_allowed_ledger": "台账导出仅限管理员和有学生信息权限的人员。",
        "deadline": "报告时限", "select": "选择", "no_step": "尚未通知", "level_col": "层级",
        "no_reload": "启动以来未重新加载（SIGHUP）", "no_drill_reports": "此期间没有演练。",
        "t_incidents": "事件", "t_notifications": "通知", "t_deliveries": "发送记录",
        "t_acknowledgements": "确认与处置", "t_heartbeats": "零报告",
    },
    "en": {
        "app": "School joint prevention and control", "today": "Today", "ledger": "Ledger & reports",
        "roster": "Roster", "settings": "Settings", "sign_out": "Sign out", "switch": "中文",
        "switch_to": "zh", "open_incidents": "Open incidents",
        "none_open": "No open incidents.", "level_now": "Telling now", "level": "level {n}",
        "deadline_left": "To the reporting deadline", "deadline_over": "Reporting deadline passed",
        "deadline_met": "Reported in time", "confirmed_by": "Confirmed by",
        "assigned_to": "Assigned to", "nobody": "nobody", "drill": "drill",
        "zero_report": "Today's zero report", "received": "received",
        "not_yet": "not yet (due {by})", "missed": "missed",
        "no_monitors": "No zero-report monitor configured.",
        "absence": "Sickness absence today (per class)", "no_absence": "No sickness absence today.",
        "pupils": "pupils", "clusters": "Clusters forming", "no_clusters": "No cluster forming.",
        "drills": "Drills under way", "no_drills": "No drill under way.",
        "resolve_selected": "Resolve selected", "reason": "Reason", "incident": "Incident",
        "state": "State", "severity": "Severity", "class": "Class", "place": "Place",
        "summary": "Summary", "hidden": "(only for those whose role needs it)",
        "timeline": "Timeline", "members": "Cluster cases", "messages": "Messages and delivery",
        "recipient": "Recipient", "channel": "Channel", "status": "Status", "attempts": "Attempts",
        "acknowledge": "Confirm (this level)", "handled": "Handled here — no report needed",
        "report_now": "Report up now", "resolve": "Resolve", "note": "Add a note",
        "assign": "Assign to", "save": "Submit", "actions": "Actions", "opened": "Opened",
        "time": "Time", "who": "By", "what": "What", "updated": "updated",
        "held_back": "New updates: shown once no box is ticked and you leave the text field.",
        "offline": "Connection to the server lost; the page is not being updated.",
        "ledger_range": "Work ledger", "from": "From", "to": "To", "download_csv": "Download CSV",
        "download_xlsx": "Download Excel", "table": "Table", "monthly": "Monthly report",
        "month": "Month", "show": "Show", "drill_reports": "Drill reports",
        "on_duty_now": "On duty now", "next_duty": "Next", "people": "People", "title": "Title",
        "roles": "Roles", "access": "Console access", "reload": "Config reload",
        "reload_ok": "ok", "last_error": "Last error", "warnings": "Config check",
        "no_warnings": "The config check found nothing.", "channels": "Channels",
        "last_delivered": "Last delivered", "failures": "Failures (7 days)",
        "last_failure": "Last failure", "sign_in": "Sign in", "person_id": "Person id",
        "send_link": "Send me a sign-in link",
        "link_sent": "If that person exists, a sign-in link went to their first contact "
                     "method (valid 10 minutes).",
        "link_invalid": "This sign-in link is unknown, used or expired.",
        "continue": "Sign in to the console", "too_many": "Too many attempts; try again later.",
        "forbidden": "Your role may not do this.", "csrf": "The form expired; reload the page.",
        "not_found": "No such incident.", "signed_out": "Signed out.", "done": "Done",
        "back": "Back", "viewer": "viewer", "responder": "responder",
        "administrator": "administrator", "none": "no sign-in",
        "phone_hint": "Enter your person id; the link goes to your own first contact method.",
        "not_allowed_ledger": "Ledger downloads are for administrators and roles that see "
                              "pupils' data.",
        "deadline": "Reporting deadline", "select": "Select", "no_step": "nobody told yet",
        "level_col": "Level", "no_reload": "not reloaded since it started (SIGHUP)",
        "no_drill_reports": "No drill in these dates.", "t_incidents": "incidents",
        "t_notifications": "notifications", "t_deliveries": "deliveries",
        "t_acknowledgements": "acknowledgements and actions", "t_heartbeats": "zero reports",
    },
}

OUTCOME = {
    "zh": {"acknowledged": "已确认，升级已停止。", "step_confirmed": "本级已确认，已通知上一级。",
           "step_confirmed_late": "已记录确认（本级已超时上报）。", "resolved": "事件已解除。",
           "already_acknowledged": "此事件已被确认。", "already_resolved": "此事件已解除。",
           "noted": "备注已记录。", "assigned": "已指派。", "already_assigned": "已是此负责人。",
           "seen": "已知悉。", "handled": "已记录：本级已处置，无需上报；事件已解除。",
           "level_closed": "本级通知已停止，未作更改。", "not_allowed": "此通知仅为抄送，不能作此决定。"},
    "en": {"acknowledged": "Acknowledged; escalation stopped.",
           "step_confirmed": "This level confirmed; the next level is being told.",
           "step_confirmed_late": "Confirmation recorded (this level was overdue).",
           "resolved": "Resolved.", "already_acknowledged": "Already acknowledged.",
           "already_resolved": "Already resolved.", "noted": "Note recorded.",
           "assigned": "Assigned.", "already_assigned": "Already assigned to that person.",
           "seen": "Noted as seen.",
           "handled": "Recorded: handled here, no report needed; the incident is resolved.",
           "level_closed": "This level has ended; nothing changed.",
           "not_allowed": "This message only informs; it cannot decide."},
}
"""What the page says after an action (an :class:`~escalator.engine.engine.ActionResult`
outcome); an outcome not listed is shown as it is."""

_TIMELINE = {
    "zh": {
        "triggered": "事件发生，开始逐级通知", "step_fired": "第{level}级通知：{name}",
        "step_delivered": "第{level}级首条消息已送达", "step_confirmed": "第{level}级已确认",
        "step_confirmed_late": "第{level}级逾期后确认", "step_overdue": "第{level}级超时，上报上一级",
        "step_timed_out": "第{level}级无人确认，升级", "acknowledged": "已确认，升级停止",
        "resolved": "已解除", "seen": "已阅", "note": "备注：{text}",
        "assigned": "指派给 {name}", "deduplicated": "重复报告（共 {count} 次）",
        "escalation_exhausted": "已通知到最后一级", "repeat": "重新逐级通知（第 {round} 轮）",
        "target_unresolved": "第{level}级目标无人：{target}（已通知值班人员）",
        "no_contact_method": "{recipient} 无联系方式",
        "deadline_escalation": "报告时限临近，已通知应报告的一级",
        "resolved_before_report": "解除时尚未完成法定报告",
        "drill_unit_skipped": "演练：未通知 {recipient}",
        "handled_here": "第{level}级已处置，无需上报",
        "notified": "已发送给 {recipient}（{channel}）",
    },
    "en": {
        "triggered": "opened; the walk starts", "step_fired": "level {level} told: {name}",
        "step_delivered": "level {level}: first message delivered",
        "step_confirmed": "level {level} confirmed", "step_confirmed_late": "level {level} confirmed late",
        "step_overdue": "level {level} overdue; reported up", "step_timed_out": "level {level} timed out",
        "acknowledged": "acknowledged; escalation stopped", "resolved": "resolved", "seen": "seen",
        "note": "note: {text}", "assigned": "assigned to {name}",
        "deduplicated": "reported again ({count} in all)",
        "escalation_exhausted": "the last level has been told",
        "repeat": "walking again (round {round})",
        "target_unresolved": "level {level}: nobody for {target} (duty officer told)",
        "no_contact_method": "{recipient} has no contact method",
        "deadline_escalation": "reporting deadline near: the required level told",
        "resolved_before_report": "resolved before the legal report was made",
        "drill_unit_skipped": "drill: {recipient} not told",
        "handled_here": "level {level}: handled here, no report needed",
        "notified": "sent to {recipient} ({channel})",
    },
}


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def timeline_text(type_: str, detail: dict[str, Any], lang: str, *, names: dict[str, str],
                  private: bool) -> str:
    """One timeline entry in the console's words: levels numbered from 1, people by name.
    ``private``: leave out a note's text (the reader may not see pupils' data). A type this
    table does not know (another part's entry) is shown by its code."""
    words = _TIMELINE[lang]
    values = _Blank(detail)
    step = detail.get("step")
    values["level"] = step + 1 if isinstance(step, int) else "?"
    values["name"] = names.get(str(detail.get("person_id")), detail.get("name")) \
        if type_ == "assigned" else (detail.get("name") or "")
    if type_ == "note" and private:
        values["text"] = UI[lang]["hidden"]
    if "recipient" in detail:  # staff by name; a guardian's name only for who sees pupils' data
        rid = str(detail["recipient"])
        values["recipient"] = names.get(rid) or (UI[lang]["hidden"] if private
                                                 else detail.get("name") or rid)
    text = words.get(type_) or TIMELINE.get(lang, {}).get(type_)
    if text is None:
        extra = detail.get("decision") or ("" if private else detail.get("reason") or "")
        return f"{type_} {extra}".strip()
    out = text.format_map(values)
    reason = detail.get("reason")
    if reason and type_ != "note" and not private:
        out += f"（{reason}）" if lang == "zh" else f" ({reason})"
    return out
