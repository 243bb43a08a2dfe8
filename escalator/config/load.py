"""Load the YAML config with line numbers, validate it, and report every problem at once.

A :class:`Problem` carries the YAML path (``policies.fire.steps[0].targets[1]``), the 1-based
line, and the message. :func:`check_config` never raises for a bad file; :func:`load_config`
raises :class:`ConfigError` listing every error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError

from escalator.config.models import Config
from escalator.config.yaml_errors import explain
from escalator.i18n import _
from escalator.labels import level_of

_STEP = re.compile(r"\.steps\[(\d+)\]")


@dataclass(frozen=True)
class Problem:
    """One finding: ``path`` in the YAML, 1-based ``line`` (or None), ``message``, ``level``."""

    path: str
    line: int | None
    message: str
    level: str = "error"  # "error" | "warning"
    step_level: int | None = None
    """For a path in a chain's steps: the level number people read
    (:func:`escalator.labels.level_of`); None: the step's position counted from 1."""

    def __str__(self) -> str:
        where = self.path or _("(file)")
        step = _STEP.search(self.path)  # levels are numbered from 1 for people
        level = self.step_level or (int(step.group(1)) + 1 if step else None)
        if level is not None and self.line is not None:
            text = _("{where} (level {level}, line {line}): {message}")
        elif level is not None:
            text = _("{where} (level {level}): {message}")
        elif self.line is not None:
            text = _("{where} (line {line}): {message}")
        else:
            text = _("{where}: {message}")
        return text.format(where=where, level=level, line=self.line, message=self.message)


class ConfigError(Exception):
    """The config file is invalid. ``problems`` lists every error (and warning) found."""

    def __init__(self, path: Path | str, problems: list[Problem]) -> None:
        self.path = str(path)
        self.problems = problems
        errors = [p for p in problems if p.level == "error"]
        lines = "\n".join(f"  {p}" for p in errors)
        super().__init__(_("{path}: {count} error(s)").format(path=self.path, count=len(errors))
                         + f"\n{lines}")


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
        return None, [Problem("", None, _("cannot read config file: {reason}").format(
            reason=e.strerror or e))]
    except UnicodeDecodeError as e:
        bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # utf-8-sig counts after the BOM
        return None, [Problem("", data.count(b"\n", 0, bom + e.start) + 1, _(
            "config file is not UTF-8 (save it as UTF-8): {reason}").format(reason=e))]
    try:
        root = _yaml().load(text)
    except MarkedYAMLError as e:
        line, msg = explain(text, e)
        return None, [Problem("", line, msg)]
    except ReaderError as e:  # a control character: not a MarkedYAMLError
        line = text.count("\n", 0, e.position) + 1 if isinstance(e.position, int) else None
        return None, [Problem("", line, _("YAML syntax error: character #x{code:04x} is not "
                                          "allowed (a control character?)").format(
                                              code=e.character))]
    except RecursionError:
        return None, [Problem("", 1, _("YAML syntax error: nested too deeply"))]
    except Exception as e:  # the YAML library failing on odd input is still a bad file, not a crash
        return None, [Problem("", 1, _("YAML could not be read ({error}); check the file's "
                                       "structure").format(error=f"{type(e).__name__}: {e}"))]
    if not isinstance(root, CommentedMap):
        return None, [Problem("", 1, _("the config file must be a YAML mapping (school:, "
                                       "people:, …)"))]
    locator = Locator(root)
    plain = _plain(root)
    try:
        config = Config.model_validate(plain)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            problems.append(Problem(format_path(loc), locator.line(loc), _message(err, loc),
                                    step_level=_step_level(plain, loc)))
        return None, sorted(problems, key=lambda p: (p.line or 0, p.path))
    config._base_dir = path.resolve().parent
    config._source = path.resolve()
    problems = [
        Problem(format_path(loc), locator.line(loc), msg, level, _step_level(plain, loc))
        for loc, msg, level in run_checks(config)
    ]
    problems.sort(key=lambda p: (p.line or 0, p.path))
    if any(p.level == "error" for p in problems):
        return None, problems
    return config, problems


def _step_level(plain: Any, loc: tuple[Any, ...]) -> int | None:
    """The level number of the step that ``loc`` (``("policies", id, "steps", i, …)``) is in,
    from the modes written in the file; None for any other path or a malformed chain."""
    if len(loc) < 4 or loc[0] != "policies" or loc[2] != "steps" or not isinstance(loc[3], int):
        return None
    try:
        steps = plain["policies"][loc[1]]["steps"]
        modes = [str(s.get("mode", "escalate")) if isinstance(s, dict) else "escalate"
                 for s in steps]
    except (KeyError, TypeError, AttributeError):
        return None
    return level_of([{"mode": m} for m in modes], loc[3])


def _message(err: dict[str, Any], loc: tuple[Any, ...] = ()) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        from escalator.config.checks import nearest

        hint = nearest(loc[-1] if loc else "", known_fields(loc[:-1]))
        return _("unknown field") + hint if hint else _("unknown field (misspelled?)")
    if err["type"] == "missing":
        return _("required field missing")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg


def known_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names (and aliases) a config may have at YAML path ``loc`` (``("school",)`` →
    ``name``, ``timezone``, …): the pydantic models there, found by walking
    :class:`~escalator.config.models.Config`'s annotations; empty when ``loc`` is no model."""
    models: list[Any] = [Config]
    for part in loc:
        nxt: list[Any] = []
        for model in models:
            if isinstance(part, str) and hasattr(model, "model_fields"):
                field = model.model_fields.get(part) or next(
                    (f for f in model.model_fields.values() if f.alias == part), None)
                if field is not None:
                    nxt += _models_in(field.annotation, container=False)
            else:  # a list index or a mapping key: the item type
                nxt += _models_in(model, container=True)
        models = nxt
    names: list[str] = []
    for model in models:
        if hasattr(model, "model_fields"):
            for name, field in model.model_fields.items():
                names.append(field.alias or name)
    return names


def _models_in(annotation: Any, *, container: bool) -> list[Any]:
    """The pydantic models in ``annotation`` (through Optional, Union, Annotated); with
    ``container``, the item models of the lists and mappings in it."""
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _models_in(args[0], container=container)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return [m for a in args for m in _models_in(a, container=container)]
    if container:
        if origin in (list, tuple, set, frozenset) and args:
            return _models_in(args[0], container=False)
        if origin is dict and len(args) == 2:
            return _models_in(args[1], container=False)
        return []
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return [annotation]
    if origin in (list, tuple, set, frozenset, dict):
        return [annotation]  # walked on at the next (index or key) part
    return []


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
                raise ValueError(_("option {key}: environment variable {name} is not set").format(
                    key=key, name=value))
            out[key[: -len("_env")]] = os.environ[value]
        elif key.endswith("_file") and isinstance(value, str):
            p = Path(value) if Path(value).is_absolute() else base_dir / value
            try:
                out[key[: -len("_file")]] = p.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise ValueError(_("option {key}: cannot read {path}: {reason}").format(
                    key=key, path=p, reason=e.strerror)) from e
        else:
            out[key] = value
    return out
