"""A register's refused rows: their own file in ``failed/`` and a notice to the person the
config names (docs/spool.md "Bad rows").

A register with bad rows is never refused whole: its good rows are taken, and its bad rows go
to ``failed/<name>.rejected.csv`` (the header and the refused rows as written, plus a column
``未接收原因`` with the reasons; UTF-8 with a byte-order mark, so a spreadsheet opens it) with
the sidecar ``<name>.rejected.csv.error.json`` (a reason per row: row, line, column, message).
The corrected file — the original or the ``.rejected.csv`` — can be dropped into ``incoming/``
again: rows taken before are skipped by their row keys, so only the corrected rows are added.

``registers.notify`` (default: the school doctor, ``school_doctor``) is told how many rows of
which file were refused and why: one incident per file content (dedup key
``register-refused/<sha256 prefix>``) walking a one-step ``inform`` policy. The notice names
rows, columns and reasons, never a pupil's name or phone (the row errors never echo them),
and a group channel sees neither its summary nor its details (:mod:`escalator.delivery.render`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from escalator.config.models import Config, Policy, Step, StepMode
from escalator.engine.engine import Submission
from escalator.events import Event
from escalator.intake.registers import Register, refusal_reason

POLICY_ID = "register_refusals"
"""The policy id recorded on a refusal notice's incident."""
REASON_COLUMN = "未接收原因"
"""The column added to the ``.rejected.csv`` file (ignored when the file is dropped again)."""
SUMMARY_ROWS = 10
"""Rows named in a notice's summary (all are in its details and the sidecar)."""


@dataclass(frozen=True)
class Refusal:
    """What a register's refused rows become: ``csv`` (the ``.rejected.csv`` bytes),
    ``sidecar`` (its ``.error.json`` body) and ``notice`` (the submission telling
    ``registers.notify``)."""

    csv: bytes
    sidecar: dict[str, Any]
    notice: Submission


def rejected_name(name: str) -> str:
    """``absence.csv`` → ``absence.rejected.csv``; a workbook's refused rows are CSV too
    (``absence.xlsx`` → ``absence.rejected.csv``)."""
    stem, dot, _ext = name.rpartition(".")
    return f"{stem}.rejected.csv" if dot and stem else f"{name}.rejected.csv"


def refusal(reg: Register, name: str, sha256: str, config: Config) -> Refusal:
    """The :class:`Refusal` of register ``reg`` read from file ``name`` (content hash
    ``sha256``). ``reg.refused`` must not be empty."""
    assert reg.refused
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*reg.header, REASON_COLUMN])
    width = len(reg.header)
    for r in reg.refused:
        cells = (r.cells + [""] * width)[:max(width, len(r.cells))]
        writer.writerow([*cells, "；".join(f"{e['column']}：{e['message']}" for e in r.errors)])
    errors = [e for r in reg.refused for e in r.errors]
    sidecar = {"file": name, "code": "rows_refused", "reason": refusal_reason(reg),
               "rows_read": reg.rows,
               "rows_taken": reg.rows - len(reg.refused), "rows_refused": len(reg.refused),
               "sha256": sha256, "errors": errors,
               **({"unrecognised_columns": reg.unrecognised} if reg.unrecognised else {})}
    return Refusal(out.getvalue().encode("utf-8-sig"), sidecar,
                   _notice(reg, name, sha256, config))


def _notice(reg: Register, name: str, sha256: str, config: Config) -> Submission:
    zh = config.school.language == "zh"
    n, total = len(reg.refused), reg.rows
    shown = reg.refused[:SUMMARY_ROWS]
    more = "…" if n > SUMMARY_ROWS else ""
    cols = {r.row: "、".join(dict.fromkeys(e["column"] for e in r.errors)) for r in shown}
    rejected = rejected_name(name)
    if zh:
        rows = "；".join(f"第{r.row}行（{cols[r.row]}）" for r in shown) + more
        summary = (f"登记表 {name}：{n} 行未接收（共 {total} 行，其余 {total - n} 行已接收）："
                   f"{rows}。请更正 failed/{rejected} 后重新放入 incoming/")
        lines = [f"第{r.row}行（文件第{r.line}行）" + "；".join(
            f"{e['column']}：{e['message']}" for e in r.errors) for r in reg.refused]
    else:
        rows = "; ".join(f"row {r.row} ({cols[r.row]})" for r in shown) + more
        summary = (f"Register {name}: {n} row(s) refused of {total} (the other {total - n} "
                   f"taken): {rows}. Correct failed/{rejected} and drop it into incoming/ again")
        lines = [f"row {r.row} (line {r.line}) " + "; ".join(
            f"{e['column']}: {e['message']}" for e in r.errors) for r in reg.refused]
    name_policy = "登记表未接收行" if zh else "Register rows refused"
    policy = Policy(name=name_policy, steps=[Step(targets=list(config.registers.notify),
                                                  mode=StepMode.inform)])
    event = Event(kind="incident", category="other", severity="medium",
                  summary=summary[:500], details="\n".join(lines)[:4000],
                  source="escalator", dedup_key=f"register-refused/{sha256[:16]}",
                  labels={"register_refused": name[:500], "rows_refused": str(n),
                          "rows_read": str(total)})
    return Submission(event, policy=(POLICY_ID, policy))
