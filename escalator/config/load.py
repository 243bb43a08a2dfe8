"""Load the YAML config with line numbers, validate it, and report every problem at once.

A :class:`Problem` carries the YAML path (``policies.fire.steps[0].targets[1]``), the 1-based
line, and the message. :func:`check_config` never raises for a bad file; :func:`load_config`
raises :class:`ConfigError` listing every error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError

from escalator.config.models import Config


@dataclass(frozen=True)
class Problem:
    """One finding: ``path`` in the YAML, 1-based ``line`` (or None), ``message``, ``level``."""

    path: str
    line: int | None
    message: str
    level: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = self.path or "(file)"
        if self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The config file is invalid. ``problems`` lists every error (and warning) found."""

    def __init__(self, path: Path | str, problems: list[Problem]) -> None:
        self.path = str(path)
        self.problems = problems
        errors = [p for p in problems if p.level == "error"]
        lines = "\n".join(f"  {p}" for p in errors)
        super().__init__(f"{self.path}: {len(errors)} error(s)\n{lines}")


def format_path(loc: tuple[Any, ...]) -> str:
    """``("policies", "fire", "steps", 2)`` → ``policies.fire.steps[2]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class Locator:
    """Finds the 1-based line of a YAML path in a ruamel round-trip tree."""

    def __init__(self, root: Any) -> None:
        self.root = root

    def line(self, loc: tuple[Any, ...]) -> int | None:
        node, best = self.root, None
        for part in loc:
            try:
                if isinstance(node, CommentedMap) and part in node:
                    best = node.lc.key(part)[0] + 1
                    node = node[part]
                elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                    best = node.lc.item(part)[0] + 1
                    node = node[part]
                else:
                    break
            except (KeyError, TypeError, AttributeError):
                break
        if best is None and hasattr(self.root, "lc"):
            return (self.root.lc.line or 0) + 1
        return best


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def check_config(path: Path | str) -> tuple[Config | None, list[Problem]]:
    """Parse and validate ``path``. Returns ``(config or None, problems)``; never raises for bad input.

    The config is None when any error was found. Problems come sorted by line.
    """
    from escalator.config.checks import run_checks

    path = Path(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
    except OSError as e:
        return None, [Problem("", None, f"cannot read config file: {e.strerror or e}")]
    except UnicodeDecodeError as e:
        bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # utf-8-sig counts after the BOM
        return None, [Problem("", data.count(b"\n", 0, bom + e.start) + 1, f"config file is not UTF-8: {e}")]
    try:
        root = _yaml().load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        msg = " ".join(str(x) for x in (e.context, e.problem) if x)
        if "duplicate key" in msg:
            msg = f"duplicate id or key: {msg}"
        return None, [Problem("", line, f"YAML syntax error: {msg}")]
    except ReaderError as e:  # a control character: not a MarkedYAMLError
        line = text.count("\n", 0, e.position) + 1 if isinstance(e.position, int) else None
        return None, [Problem("", line, f"YAML syntax error: character #x{e.character:04x} "
                                        "is not allowed (a control character?)")]
    except RecursionError:
        return None, [Problem("", 1, "YAML syntax error: nested too deeply")]
    except Exception as e:  # the YAML library failing on odd input is still a bad file, not a crash
        return None, [Problem("", 1, f"YAML could not be read ({type(e).__name__}: {e}); "
                                     "check the file's structure")]
    if not isinstance(root, CommentedMap):
        return None, [Problem("", 1, "the config file must be a YAML mapping (school:, people:, …)")]
    locator = Locator(root)
    try:
        config = Config.model_validate(_plain(root))
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            problems.append(Problem(format_path(loc), locator.line(loc), _message(err)))
        return None, sorted(problems, key=lambda p: (p.line or 0, p.path))
    config._base_dir = path.resolve().parent
    config._source = path.resolve()
    problems = [
        Problem(format_path(loc), locator.line(loc), msg, level)
        for loc, msg, level in run_checks(config)
    ]
    problems.sort(key=lambda p: (p.line or 0, p.path))
    if any(p.level == "error" for p in problems):
        return None, problems
    return config, problems


def _message(err: dict[str, Any]) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return "unknown field (misspelled?)"
    if err["type"] == "missing":
        return "required field missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg


def load_config(path: Path | str) -> Config:
    """Load and validate ``path``; raise :class:`ConfigError` with every error if it is invalid."""
    config, problems = check_config(path)
    if config is None:
        raise ConfigError(path, problems)
    config._warnings = [p for p in problems if p.level == "warning"]
    return config


def resolve_secrets(options: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Channel options with ``KEY_env`` / ``KEY_file`` replaced by ``KEY`` read from there.

    Raises ``ValueError`` naming the variable or file when it is missing. Values are never logged.
    """
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key.endswith("_env") and isinstance(value, str):
            if value not in os.environ:
                raise ValueError(f"option {key}: environment variable {value} is not set")
            out[key[: -len("_env")]] = os.environ[value]
        elif key.endswith("_file") and isinstance(value, str):
            p = Path(value) if Path(value).is_absolute() else base_dir / value
            try:
                out[key[: -len("_file")]] = p.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise ValueError(f"option {key}: cannot read {p}: {e.strerror}") from e
        else:
            out[key] = value
    return out
