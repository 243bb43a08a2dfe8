"""Which way imports go (docs/ARCHITECTURE.md, "Which way imports go"): every module of
``escalator/`` is read and each ``escalator.*`` import it makes is checked against the wings it
may import. ``config.checks`` is the documented exception (it validates references into the
wings); ``TYPE_CHECKING``-only imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = {"events", "classes", "clock", "labels", "i18n", "config"}
MAY_IMPORT = {
    "classes": {"i18n"}, "events": {"classes"}, "clock": set(), "labels": set(), "i18n": set(),
    "config": {"events", "classes", "i18n", "labels"},
    "store": FOUNDATION,
    "engine": FOUNDATION | {"store", "plugins", "hookspecs"},
    "intake": FOUNDATION | {"store", "engine"},
    "school": FOUNDATION | {"store", "engine", "intake", "hookspecs"},
    "delivery": FOUNDATION | {"store", "engine"},
    "hookspecs": FOUNDATION | {"store", "engine", "delivery"},
    "plugins": FOUNDATION | {"hookspecs", "engine"},
    "web": FOUNDATION | {"store", "engine", "intake", "school", "delivery"},
    "testing": FOUNDATION | {"store", "engine", "delivery", "plugins"},
}
"""Wing → the wings it may import (``service`` and ``cli`` may import any)."""
EXCEPTIONS = {"config.checks"}


def wing_of(module: str) -> str | None:
    parts = module.split(".")
    return None if parts[0] != "escalator" or len(parts) == 1 else parts[1]


def imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def test_every_import_goes_the_documented_way():
    wrong = []
    for path in sorted((ROOT / "escalator").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        me = wing_of(module)
        if me in (None, "service", "cli", "__init__") or module.split(".", 1)[1] in EXCEPTIONS:
            continue
        for target in imports(path):
            other = wing_of(target)
            if other is not None and other != me and other not in MAY_IMPORT[me]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_the_table_names_every_wing():
    wings = {p.stem if p.is_file() else p.name for p in (ROOT / "escalator").iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.stem != "__init__"}
    assert wings - {"service", "cli"} <= set(MAY_IMPORT)
