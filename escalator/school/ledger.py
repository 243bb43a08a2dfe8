"""The work ledger (工作台账): export for inspection, and the monthly report.

Read-only, through the store's report reads (:class:`escalator.store.base.ReportReads`;
``docs/school-rules.md``, "Work ledger" and "Monthly report"). Here are the columns, words,
masking and figures; the queries are the store's. Nothing here changes a row.

- :func:`ledger_tables` builds the ledger's tables for school-local dates ``day_from`` ..
  ``day_to`` (both included): incidents (by the time they opened), notifications (by the time the
  decision to notify was made), delivery attempts, acknowledgements (acknowledge, level
  confirmed, seen, resolve) and heartbeat days (零报告), each row by its own time. Times are
  school-local, the zone named in the headings. Contact addresses are masked
  (:func:`mask_address`); the export carries no pupil data (subject id, name, phone) at all —
  that stays in the database for the school doctor's follow-up until it is purged
  (:mod:`escalator.school.retention`).
- :func:`write_csv` (UTF-8 with a byte-order mark, so Excel on a Chinese Windows PC opens it)
  and :func:`write_xlsx` (one sheet per table, a header row).
- :func:`monthly_report` summarises one school-local month per category and severity.

Reporting deadlines: ``Incident.deadline_at`` and ``Incident.deadline_met_at``.
:func:`deadline_status` is the one place that says whether a deadline was met
(:func:`escalator.school.deadlines.status` calls it).
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from escalator.config.models import Config
from escalator.engine.decisions import redact_links
from escalator.events import OCCURRED_MAX_YEAR, OCCURRED_MIN_YEAR, Category, Severity
from escalator.labels import CATEGORY, KIND, SEVERITY, STATE
from escalator.school import heartbeats
from escalator.store.base import Incident, Store

PURGED = "(purged)"
"""What :mod:`escalator.school.retention` writes in place of a purged text field."""

NO_DEADLINE = "—"
DEADLINE_STATUSES = ("met", "missed", "pending", "resolved_unreported")
"""The words of :func:`deadline_status` (each a ``deadlines_…`` figure of the monthly report)."""
ACK_TYPES = ("acknowledged", "step_confirmed", "step_confirmed_late", "seen", "handled_here",
             "resolved", "note", "assigned")
"""Timeline entries listed as acknowledgements (and resolves, decisions, notes and assignments:
issue 16 point 8) in the ledger; a note's text and the assignee are in the last column."""
RESPONSE_TYPES = ("acknowledged", "step_confirmed", "step_confirmed_late", "handled_here")
"""Timeline entries that count as a person's response (time to acknowledge)."""
TABLES = ("incidents", "notifications", "deliveries", "acknowledgements", "heartbeats")
GUARDIAN = "guardian"

# ------------------------------------------------------------------ words

_TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "incidents": "事件", "notifications": "通知", "deliveries": "发送记录",
        "acknowledgements": "确认", "heartbeats": "零报告",
        "yes": "是", "no": "否", "met": "达成", "missed": "未达成", "pending": "未到期",
        "resolved_unreported": "解除，未报告",
        "purged": "（已按保存期限删除）",
        **STATE["zh"],
        "step_confirmed": "本级确认", "step_confirmed_late": "逾期后确认", "seen": "已阅",
        "handled_here": "已处置，无需上报", "reminder": "提醒", "receipt": "回执",
        "pending_n": "待发送", "sending": "发送中", "delivered": "已送达", "failed": "失败",
        "cancelled": "已取消", "deduplicated": "重复未发", "failed_retryable": "失败（将重试）",
        "deferred": "推迟（免打扰时段）",
        "failed_permanent": "失败（不再重试）",
        "step": "逐级通知", "target_unresolved": "目标无人（转值班）",
        "escalate": "升级", "report": "逐级上报", "inform": "抄送",
        "person": "人员", "unit": "单位", "guardian": "监护人",
        "note": "备注", "assigned": "指派",
    },
    "en": {
        "incidents": "Incidents", "notifications": "Notifications", "deliveries": "Deliveries",
        "acknowledgements": "Acknowledgements", "heartbeats": "Zero reports",
        "yes": "yes", "no": "no", "met": "met", "missed": "missed", "pending": "pending",
        "resolved_unreported": "resolved, not reported",
        "purged": "(purged after the retention period)",
        **STATE["en"],
        "step_confirmed": "level confirmed", "step_confirmed_late": "confirmed late",
        "handled_here": "handled here, no report needed", "reminder": "reminder",
        "receipt": "receipt",
        "seen": "seen", "pending_n": "pending", "sending": "sending", "delivered": "delivered",
        "failed": "failed", "cancelled": "cancelled", "deduplicated": "deduplicated",
        "failed_retryable": "failed (retrying)", "failed_permanent": "failed (final)",
        "deferred": "deferred (quiet hours)",
        "step": "step", "target_unresolved": "target unresolved (duty officer)",
        "escalate": "escalate", "report": "report", "inform": "inform",
        "person": "person", "unit": "unit", "guardian": "guardian",
        "note": "note", "assigned": "assigned",
    },
}

_HEADINGS: dict[str, dict[str, list[str]]] = {
    # a heading ending in "@" is a time: the school's zone is appended
    "zh": {
        "incidents": ["编号", "类型", "类别", "级别", "摘要", "班级", "年级", "地点", "演练",
                      "发生时间@", "创建时间@", "状态", "相关事件数", "首次响应时间@", "首次响应人",
                      "确认时间@", "确认人", "解除时间@", "解除人", "报告时限@", "时限达成时间@",
                      "时限是否达成", "处置流程"],
        "notifications": ["通知编号", "事件编号", "类别", "步骤", "方式", "用途", "接收人",
                          "接收人类型", "渠道", "地址（已遮盖）", "需确认", "状态", "尝试次数",
                          "通知时间@", "首次发送时间@", "最后错误"],
        "deliveries": ["记录编号", "通知编号", "事件编号", "接收人", "渠道", "地址（已遮盖）",
                       "发送时间@", "结果", "说明", "发送内容"],
        "acknowledgements": ["事件编号", "时间@", "操作", "操作人", "途径", "步骤", "说明"],
        "heartbeats": ["监测项", "日期", "收到时间@", "漏报事件编号"],
    },
    "en": {
        "incidents": ["No.", "kind", "category", "severity", "summary", "class", "grade", "place",
                      "drill", "occurred@", "opened@", "state", "events", "first response@",
                      "first response by", "acknowledged@", "acknowledged by", "resolved@",
                      "resolved by", "reporting deadline@", "deadline met at@", "deadline",
                      "policy"],
        "notifications": ["notification", "incident", "category", "step", "mode", "purpose",
                          "recipient", "recipient kind", "channel", "address (masked)",
                          "needs ack", "status", "attempts", "decided@", "first attempt@",
                          "last error"],
        "deliveries": ["record", "notification", "incident", "recipient", "channel",
                       "address (masked)", "at@", "outcome", "detail", "text sent"],
        "acknowledgements": ["incident", "at@", "action", "by", "via", "step", "detail"],
        "heartbeats": ["monitor", "date", "received@", "missed incident"],
    },
}


def _lang(config: Config) -> str:
    return "en" if config.school.language == "en" else "zh"


def headings(table: str, config: Config) -> list[str]:
    """The column headings of ``table`` in the school's language, times naming the zone."""
    zone = config.school.timezone
    sep = "（{}）" if _lang(config) == "zh" else " ({})"
    return [h[:-1] + sep.format(zone) if h.endswith("@") else h
            for h in _HEADINGS[_lang(config)][table]]


@dataclass
class Table:
    """One ledger table: ``key`` (:data:`TABLES`), ``title`` (the sheet name), ``headers`` and
    ``rows`` (cells: str, int, naive school-local datetime, or None)."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)


# ------------------------------------------------------------------ helpers


def local_bounds(day_from: date, day_to: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Aware bounds ``[start, end)`` of school-local dates ``day_from`` .. ``day_to``."""
    start = datetime.combine(day_from, time(0), tz)
    end = datetime.combine(day_to + timedelta(days=1), time(0), tz)
    return start, end


def deadline_status(deadline_at: datetime | None, met_at: datetime | None,
                    now: datetime, resolved_at: datetime | None = None) -> str | None:
    """``met`` (told by the deadline), ``missed`` (told later, or not told and the deadline
    passed before the incident was resolved), ``resolved_unreported`` (resolved no later than
    the deadline, the required level never told: a false alarm needs no report), ``pending``
    (not told, not resolved, deadline ahead), or None when the incident has no reporting
    deadline. ``resolved_at``: when the incident was resolved, None while it is open."""
    if deadline_at is None:
        return None
    if met_at is not None:
        return "met" if met_at <= deadline_at else "missed"
    if resolved_at is not None and resolved_at <= deadline_at:
        return "resolved_unreported"
    return "missed" if now > deadline_at or resolved_at is not None else "pending"


def _status(inc: Incident, now: datetime) -> str | None:
    """:func:`deadline_status` of an incident (its resolve time only once resolved)."""
    return deadline_status(inc.deadline_at, inc.deadline_met_at, now,
                           inc.resolved_at if inc.state == "resolved" else None)


_PHONE = re.compile(r"^\+?[0-9][0-9 ()\-]{5,}$")


def mask_address(address: str) -> str:
    """An address shown in the ledger: enough to tell which one, not enough to use it.

    Phone numbers keep their first 3 and last 4 digits (``138****0001``), e-mail addresses the
    first character and the domain, URLs their scheme and host, other ids their first and last
    two characters; ``all`` and ``-`` (robot mentions) stay."""
    a = address.strip()
    if a in ("", "-", "all", PURGED):
        return a
    if _PHONE.match(a):
        digits = re.sub(r"\D", "", a)
        return digits[:3] + "****" + digits[-4:] if len(digits) > 7 else "****" + digits[-2:]
    if "@" in a and "://" not in a:
        user, _, domain = a.rpartition("@")
        return (user[:1] or "") + "***@" + domain
    if "://" in a:
        scheme, _, rest = a.partition("://")
        return f"{scheme}://{rest.split('/')[0].rpartition('@')[2]}/…"
    return a[:2] + "***" + a[-2:] if len(a) > 6 else "***"


def _local(dt: datetime | None, tz: ZoneInfo) -> datetime | None:
    """An aware time as a naive school-local one (a spreadsheet cell); None stays None."""
    return dt.astimezone(tz).replace(tzinfo=None) if dt else None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


# ------------------------------------------------------------------ the ledger


def occurred_cell(body: dict[str, Any] | None, tz: ZoneInfo) -> datetime | date | None:
    """When the incident's first event occurred, school-local, as written: a register's onset
    time (``labels.onset_at``) when it gave one, a date alone when the register gave only the
    day (``labels.time: day``, never a made-up 00:00), else ``occurred_at``."""
    if not body:
        return None
    labels = body.get("labels") or {}
    text = labels.get("onset_at") or body.get("occurred_at")
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text).astimezone(tz)
    except ValueError:
        return None
    if labels.get("time") == "day" and not labels.get("onset_at"):
        return at.date()
    return at.replace(tzinfo=None)


def ledger_tables(store: Store, config: Config, day_from: date, day_to: date,
                  now: datetime) -> list[Table]:
    """Every ledger table for school-local dates ``day_from`` .. ``day_to`` (both included)."""
    tz = config.school.tz
    lang = _lang(config)
    w = _TEXT[lang]
    lo, hi = local_bounds(day_from, day_to, tz)

    def word(key: str | None) -> str:
        return w.get(key, key) if key else ""

    def purged(text: str | None) -> str:
        return w["purged"] if text == PURGED else (text or "")

    tables = {k: Table(k, w[k], headings(k, config)) for k in TABLES}
    with store.transaction() as tx:
        for inc in tx.incidents_occurred(lo, hi):
            first = tx.first_timeline_entry(inc.id, RESPONSE_TYPES)
            event = tx.get_event(inc.first_event_id) if inc.first_event_id else None
            occurred_at = occurred_cell(event["body"] if event else None, tz)
            status = _status(inc, now)
            handled = (tx.first_timeline_entry(inc.id, ("handled_here",))
                       if inc.state == "resolved" else None)
            tables["incidents"].rows.append([
                inc.id, KIND[lang].get(inc.kind, inc.kind),
                CATEGORY[lang].get(inc.category, inc.category),
                SEVERITY[lang].get(inc.severity, inc.severity), inc.summary, inc.class_id,
                inc.grade, inc.place, w["yes"] if inc.drill else w["no"], occurred_at,
                _local(inc.created_at, tz), word("handled_here" if handled else inc.state),
                inc.event_count,
                _local(first.at, tz) if first else None, first.actor if first else None,
                _local(inc.acknowledged_at, tz), inc.acknowledged_by,
                _local(inc.resolved_at, tz), inc.resolved_by,
                _local(inc.deadline_at, tz), _local(inc.deadline_met_at, tz),
                word(status) if status else NO_DEADLINE, inc.policy_id,
            ])
        for row in tx.notifications_created(lo, hi):
            n = row.notification
            tables["notifications"].rows.append([
                n.id, n.incident_id, CATEGORY[lang].get(row.category, row.category),
                row.step_index + 1 if row.step_index is not None else None, word(row.mode),
                word(n.purpose), purged(n.recipient_name), word(n.recipient_kind),
                n.channel, purged(mask_address(n.address)),
                w["yes"] if n.needs_ack else w["no"],
                word("pending_n" if n.status == "pending" else n.status), n.attempts,
                _local(n.created_at, tz), _local(n.first_attempt_at, tz),
                n.last_error or "",
            ])
        for drow in tx.deliveries_between(lo, hi):
            d, n = drow.delivery, drow.notification
            tables["deliveries"].rows.append([
                d.id, d.notification_id, n.incident_id, purged(n.recipient_name),
                n.channel, purged(mask_address(n.address)), _local(d.at, tz),
                word(d.outcome), purged(d.detail),
                purged(redact_links(d.body)),  # rows kept before links were redacted too
            ])
        for entry in tx.timeline_between(lo, hi, ACK_TYPES):
            step = entry.detail.get("step")
            action = word(entry.type)
            if entry.type == "handled_here" and entry.detail.get("reason"):
                action += ("：" if lang == "zh" else ": ") + purged(entry.detail["reason"])
            tables["acknowledgements"].rows.append([
                entry.incident_id, _local(entry.at, tz), action, entry.actor or "",
                entry.detail.get("via", ""), step + 1 if isinstance(step, int) else None,
                purged(_action_detail(entry.type, entry.detail, config)),
            ])
        for day in tx.heartbeat_days_between(day_from, day_to):
            name = config.heartbeats[day.monitor].name if day.monitor in config.heartbeats else None
            tables["heartbeats"].rows.append([
                name or day.monitor, day.local_date, _local(day.received_at, tz),
                day.missed_incident_id,
            ])
    return [tables[k] for k in TABLES]


def _action_detail(type_: str, detail: dict[str, Any], config: Config) -> str:
    """The ledger's words for what an action said: a note's text, the assignee (name and id)."""
    if type_ == "note":  # a purged note has lost its text (escalator/school/retention.py)
        return str(detail.get("text", PURGED))
    if type_ == "assigned":
        pid = str(detail.get("person_id", ""))
        person = config.person(pid)
        return f"{person.name if person else detail.get('name', '')} ({pid})"
    return ""


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula in a CSV cell (OWASP "CSV Injection")."""


def _csv_cell(value: Any) -> str:
    """:func:`_cell`, with text that a spreadsheet would run as a formula (an event summary
    written ``=HYPERLINK(...)``) kept as text by a leading apostrophe; numbers and times as they
    are."""
    text = _cell(value)
    if isinstance(value, str) and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def write_csv(table: Table, out: IO[str]) -> None:
    """``table`` as CSV (headings first) to a text stream. Open files with
    ``encoding="utf-8-sig"`` so the byte-order mark is written (Excel needs it). Text that
    would start a formula gets a leading apostrophe (:func:`_csv_cell`)."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.headers)
    for row in table.rows:
        writer.writerow([_csv_cell(v) for v in row])


def write_xlsx(tables: Iterable[Table], path: Path) -> None:
    """Every table as a sheet of an Excel workbook at ``path``: a bold, frozen header row;
    times as Excel date-times (school-local)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    wb.remove(wb.active)
    for t in tables:
        ws = wb.create_sheet(t.title[:31])
        ws.append(t.headers)
        for cell in ws[1]:
            cell.font = Font(bold=True)
        ws.freeze_panes = "A2"
        for row in t.rows:
            ws.append(row)
            for cell in ws[ws.max_row]:
                if cell.data_type == "f":  # text that starts with "=" (a summary, a note) stays
                    cell.data_type = "s"  # text: never a formula run by whoever opens the file
                elif isinstance(cell.value, datetime):
                    cell.number_format = "yyyy-mm-dd hh:mm:ss"
                elif isinstance(cell.value, date):  # a register that gave the day only
                    cell.number_format = "yyyy-mm-dd"
        for i, h in enumerate(t.headers, start=1):
            ws.column_dimensions[ws.cell(1, i).column_letter].width = max(10, min(40, len(h) * 2))
    wb.save(path)


# ------------------------------------------------------------------ the monthly report


def percentile(values: list[float], p: float) -> float | None:
    """The ``p``-th percentile by the nearest-rank method (the smallest value with at least
    ``p`` % of the values at or below it); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    return xs[max(1, math.ceil(p / 100 * len(xs))) - 1]


def median(values: list[float]) -> float | None:
    """The median (the mean of the middle two for an even count); None for no values."""
    return statistics.median(values) if values else None


@dataclass
class _Group:
    incidents: int = 0
    responses: list[float] = field(default_factory=list)
    deadlines_met: int = 0
    deadlines_missed: int = 0
    deadlines_pending: int = 0
    deadlines_resolved_unreported: int = 0
    zero_reports_missed: int = 0
    drills: int = 0

    def add(self, other: _Group) -> None:
        self.incidents += other.incidents
        self.responses += other.responses
        self.deadlines_met += other.deadlines_met
        self.deadlines_missed += other.deadlines_missed
        self.deadlines_pending += other.deadlines_pending
        self.deadlines_resolved_unreported += other.deadlines_resolved_unreported
        self.zero_reports_missed += other.zero_reports_missed
        self.drills += other.drills

    def as_dict(self) -> dict[str, Any]:
        return {"incidents": self.incidents, "responded": len(self.responses),
                "ack_median_seconds": median(self.responses),
                "ack_p90_seconds": percentile(self.responses, 90),
                "deadlines_met": self.deadlines_met, "deadlines_missed": self.deadlines_missed,
                "deadlines_pending": self.deadlines_pending,
                "deadlines_resolved_unreported": self.deadlines_resolved_unreported,
                "zero_reports_missed": self.zero_reports_missed, "drills": self.drills}


def month_bounds(month: str) -> tuple[date, date]:
    """First and last date of ``YYYY-MM``; ``ValueError`` when it is not one."""
    if not re.fullmatch(r"\d{4}-\d{2}", month):
        raise ValueError(f"not a month: {month!r} (use YYYY-MM)")
    if not OCCURRED_MIN_YEAR <= int(month[:4]) <= OCCURRED_MAX_YEAR:
        raise ValueError(f"{month}: the year must be {OCCURRED_MIN_YEAR}–{OCCURRED_MAX_YEAR}")
    first = date.fromisoformat(month + "-01")
    nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return first, nxt - timedelta(days=1)


def monthly_report(store: Store, config: Config, month: str, now: datetime) -> dict[str, Any]:
    """Figures for the school-local month ``YYYY-MM`` per category and severity.

    Incidents count by the school-local month their first event occurred in (a case of 30
    November entered on 7 December is November's). Drills (``drill: true``) are counted only as
    ``drills``; every other figure is of real incidents. ``ack_*_seconds``: from opening to the
    first person's response (acknowledged, or a ``report`` level confirmed), median and
    nearest-rank p90. Deadlines: :func:`deadline_status` at ``now``, one figure per status
    (``deadlines_resolved_unreported``: resolved in time unreported, not a missed deadline). ``zero_reports_missed``:
    incidents of kind ``heartbeat`` (a report that did not come). ``heartbeats``: per monitor,
    the ``heartbeat_days`` of the month: ``reported`` by the deadline (``expect_by`` +
    ``grace``), ``missed`` (not there by the deadline — whether or not the check ran in time to
    open an incident, e.g. with the daemon stopped over the deadline), ``late`` (of the missed,
    those reported afterwards).
    Only fields that retention never purges are read, so the figures stay the same after it.
    """
    first, last = month_bounds(month)
    tz = config.school.tz
    lo, hi = local_bounds(first, last, tz)
    groups: dict[tuple[str, str], _Group] = {}
    monitors: dict[str, dict[str, int]] = {}
    with store.transaction() as tx:
        for inc in tx.incidents_occurred(lo, hi):
            g = groups.setdefault((inc.category, inc.severity), _Group())
            if inc.drill:
                g.drills += 1
                continue
            g.incidents += 1
            if inc.kind == "heartbeat":
                g.zero_reports_missed += 1
            first_response = tx.first_timeline_entry(inc.id, RESPONSE_TYPES)
            if first_response is not None:
                g.responses.append((first_response.at - inc.created_at).total_seconds())
            status = _status(inc, now)
            if status is not None:
                setattr(g, f"deadlines_{status}", getattr(g, f"deadlines_{status}") + 1)
        for day in tx.heartbeat_days_between(first, last):
            m = monitors.setdefault(day.monitor, {"reported": 0, "missed": 0, "late": 0})
            late = (day.received_at is not None and day.monitor in config.heartbeats
                    and day.received_at > heartbeats.deadline(
                        config, day.monitor, date.fromisoformat(day.local_date)))
            if day.missed_incident_id is not None or late:
                m["missed"] += 1  # not there by the deadline (told, or the check came later)
                if day.received_at is not None:
                    m["late"] += 1
            elif day.received_at is not None:
                m["reported"] += 1
    order_c = {c.value: i for i, c in enumerate(Category)}
    order_s = {s.value: i for i, s in enumerate(Severity)}
    keys = sorted(groups, key=lambda k: (order_c.get(k[0], 99), order_s.get(k[1], 99), k))
    total = _Group()
    rows = []
    for k in keys:
        total.add(groups[k])
        rows.append({"category": k[0], "severity": k[1], **groups[k].as_dict()})
    return {"month": month, "timezone": config.school.timezone, "generated_at": now.isoformat(),
            "rows": rows, "total": total.as_dict(),
            "heartbeats": [{"monitor": mid, "name": (config.heartbeats[mid].name
                                                     if mid in config.heartbeats else None) or mid,
                            **m} for mid, m in sorted(monitors.items())]}


_REPORT_HEADINGS = {
    "zh": ["类别", "级别", "事件数", "已响应", "响应用时中位数（分钟）", "响应用时P90（分钟）",
           "时限未达成", "解除未报告", "零报告漏报", "演练"],
    "en": ["category", "severity", "incidents", "responded", "median to ack (min)",
           "p90 to ack (min)", "deadlines missed", "resolved, not reported",
           "zero reports missed", "drills"],
}
_MONITOR_HEADINGS = {"zh": ["监测项", "按时报送天数", "漏报天数", "其中补报"],
                     "en": ["monitor", "days reported", "days missed", "of which late"]}


def minutes(seconds: float | None) -> str:
    """Seconds shown as minutes with one decimal; ``—`` for none."""
    return NO_DEADLINE if seconds is None else f"{seconds / 60:.1f}"


def report_tables(report: dict[str, Any], config: Config
                  ) -> list[tuple[list[str], list[list[str]]]]:
    """The report as printable tables (headings, rows) in the school's language: the figures
    per category and severity with a total line, then the heartbeat monitors (if any)."""
    lang = _lang(config)

    def line(label: list[str], d: dict[str, Any]) -> list[str]:
        return [*label, str(d["incidents"]), str(d["responded"]), minutes(d["ack_median_seconds"]),
                minutes(d["ack_p90_seconds"]), str(d["deadlines_missed"]),
                str(d["deadlines_resolved_unreported"]), str(d["zero_reports_missed"]), str(d["drills"])]

    rows = [line([CATEGORY[lang].get(r["category"], r["category"]),
                  SEVERITY[lang].get(r["severity"], r["severity"])], r) for r in report["rows"]]
    rows.append(line(["合计" if lang == "zh" else "total", ""], report["total"]))
    out = [(_REPORT_HEADINGS[lang], rows)]
    if report["heartbeats"]:
        out.append((_MONITOR_HEADINGS[lang],
                    [[m["name"], str(m["reported"]), str(m["missed"]), str(m["late"])]
                     for m in report["heartbeats"]]))
    return out


def report_title(report: dict[str, Any], config: Config) -> str:
    """The report's first line: school, month, zone."""
    if _lang(config) == "zh":
        return f"{config.school.name} {report['month']} 月报（时间：{report['timezone']}）"
    return f"{config.school.name}: monthly report {report['month']} (times: {report['timezone']})"
