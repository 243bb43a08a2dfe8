"""The package list in pyproject.toml names every package, so ``pip install .`` (not only an
editable install) gives a working ``escalator``."""

from __future__ import annotations

import tomllib

from .conftest import ROOT


def test_every_package_with_an_init_is_listed():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(conf["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "escalator").rglob("__init__.py")}
    assert on_disk <= listed, f"missing from pyproject.toml packages: {sorted(on_disk - listed)}"
    assert conf["package-dir"]["escalator_plugins"] == "plugins"
    assert "templates/*/*.j2" in conf["package-data"]["escalator.delivery"]


def test_the_web_pages_templates_ship_as_package_data():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    templates = list((ROOT / "escalator" / "web" / "templates").glob("*.html"))
    assert templates, "escalator/web/templates/ has no pages"
    assert "templates/*.html" in conf["package-data"]["escalator.web"]
