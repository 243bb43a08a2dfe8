"""YAML syntax errors of a config file in plain words, on the line where the mistake is
(``check-config``, issue 13 point 8).

The YAML parser reports where it gave up, which is often the line *after* the mistake (a
full-width colon ``：`` turns ``name： 示例小学`` into plain text, and the parser only fails on
the next key) and in its own terms (``mapping values are not allowed here``). :func:`explain`
looks at the text first for the mistakes people make when they edit a config by hand — a tab in
the indentation, a full-width colon after a key, an indentation that does not line up with the
lines around it, an unclosed bracket or quotation mark — and names the line where each is.
"""

from __future__ import annotations

import re
from typing import Any

from escalator.i18n import _

_FULL_WIDTH_KEY = re.compile(r"^\s*(?:-\s+)?([^\s:：#'\"{}\[\],][^:：#{}\[\],]*?)\s*：")
"""A line whose key ends with a full-width colon and has no ASCII colon before it."""


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _content(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#")


def explain(text: str, error: Any) -> tuple[int | None, str]:
    """``(1-based line, message)`` for the ruamel ``MarkedYAMLError`` ``error`` raised while
    parsing ``text``."""
    mark = error.problem_mark or error.context_mark
    at = mark.line + 1 if mark is not None else None  # where the parser gave up (1-based)
    lines = text.splitlines()
    last = min(at or len(lines), len(lines))
    problem = " ".join(str(x) for x in (error.context, error.problem) if x)

    for n, line in enumerate(lines[:last], start=1):  # a tab where the indentation is
        lead = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in lead and _content(line):
            return n, _("a tab character in the indentation: YAML indents with spaces only; "
                        "replace the tab with spaces")
    for n, line in enumerate(lines[:last], start=1):
        m = _FULL_WIDTH_KEY.match(line)
        if m and _content(line):
            return n, _("a full-width colon '：' after {key!r}: write the ASCII colon ':' "
                        "followed by a space (switch the input method to English punctuation)"
                        ).format(key=m.group(1).strip())
    if "duplicate key" in problem:
        key = re.search(r'found duplicate key "([^"]*)"', problem)
        return at, _("the key {key!r} appears twice in the same section (each id or key may "
                     "appear once)").format(key=key.group(1) if key else "?")
    if "while scanning a quoted scalar" in problem and error.context_mark is not None:
        return error.context_mark.line + 1, _(
            "a quotation mark opened on this line is never closed")
    if "while parsing a flow" in problem and error.context_mark is not None:
        return error.context_mark.line + 1, _(
            "a '[' or '{{' opened on this line is not closed (or a ':' or ',' inside it is "
            "misplaced) before line {line}").format(line=at)
    if at is not None and 1 <= at <= len(lines) and (
            "mapping values are not allowed" in problem or "expected <block end>" in problem
            or "could not find expected ':'" in problem):
        line = lines[at - 1]
        before = [ln for ln in lines[: at - 1] if _content(ln)]
        cur = _indent(line)
        if before:
            prev = before[-1]
            opens = prev.rstrip().endswith(":") or prev.lstrip().startswith("- ")
            if ((cur > _indent(prev) and not opens)
                    or (cur < _indent(prev) and cur not in {_indent(ln) for ln in before})):
                return at, _("the indentation of this line ({spaces} spaces) does not line up "
                             "with the lines above ({above} spaces): keys of one section start "
                             "in the same column").format(spaces=cur, above=_indent(prev))
        column = error.problem_mark.column if error.problem_mark is not None else -1
        if "mapping values are not allowed" in problem and line.find(":") < column:
            return at, _("a second ': ' on this line: put a value that contains ': ' in quotes, "
                         "or write the nested key on its own line, indented")
        return at, _("this line does not fit the structure above it: check its indentation and "
                     "that the line before ends a key with ': ' (colon and space)")
    return at, _("YAML syntax error: {problem}").format(problem=problem or error)
