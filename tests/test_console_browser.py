"""The console in a real browser (marker ``browser``; ``.ci/run`` runs ``-m browser``):
Playwright for Python driving Debian's chromium (``/usr/bin/chromium``) against a real
``escalator demo`` process (real clock, real spool folder, real SQLite file).

The scenario, as a school's safety officer would go through it: sign in by the link the demo
prints; see an event dropped into the spool appear on Today without a reload; confirm a level;
mark a case handled here; resolve several at once; download the ledger; sign out. Then the
refusals (a form without its token, a viewer acting), the phone width (375 px, no sideways
scroll), and no request to anything but the daemon (the console and /docs). Every page is
photographed at phone and desktop width; with ``ESCALATOR_SCREENSHOTS=1`` the pictures are
written to ``docs/console/`` (docs/console.md shows them).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from .conftest import CASES, ROOT

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
SHOTS = ROOT / "docs" / "console"
EXE = [sys.executable, "-m", "escalator.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATOR_")}
    env.update(ESCALATOR_HTTP_LISTEN=f"127.0.0.1:{port}", ESCALATOR_LOG_FORMAT="json")
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """``escalator demo`` in a fresh folder; its printed console link."""
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: apt-get install -y chromium (.ci/run does)")
    where = tmp_path_factory.mktemp("demo")
    port = _free_port()
    proc = subprocess.Popen([*EXE, "demo"], cwd=where, env=_env(port), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()  # a reader thread: the banner comes in one write
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
    seen, link, deadline = "", None, time.monotonic() + 30
    while time.monotonic() < deadline and not ("http_listening" in seen and link):
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen += line
        found = re.search(r"(?:console: |控制台：)(http://\S+/login/\S+)", line)
        link = link or (found.group(1) if found else None)
    if not (link and "http_listening" in seen):
        proc.kill()  # never leave a demo running behind a failed start
        proc.wait(30)
        pytest.fail(f"the demo printed no console link:\n{seen}")
    yield SimpleNamespace(base=f"http://127.0.0.1:{port}", link=link, dir=where,
                          spool=where / "escalator-demo" / "spool" / "incoming", env=_env(port))
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


def drop(demo: SimpleNamespace, name: str, **changes: object) -> None:
    """Put a sample event into the spool the way a writer should: write aside, then rename.
    The sample's ``occurred_at`` is left out: it happens now (today's page counts it)."""
    doc = json.loads((CASES / "events" / name).read_text(encoding="utf-8"))
    doc.pop("occurred_at", None)
    doc.update(changes)
    tmp = demo.spool.parent / f".{name}.tmp"
    tmp.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    tmp.rename(demo.spool / f"{time.monotonic_ns()}-{name}")


def cli_link(demo: SimpleNamespace, person_id: str) -> str:
    r = subprocess.run([*EXE, "login-link", person_id, "--demo"], cwd=demo.dir, env=demo.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


class Shots:
    """Screenshots of each page at phone and desktop width."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken: list[Path] = []

    def take(self, page, name: str) -> None:
        for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
            page.set_viewport_size(size)
            path = self.folder / f"{name}-{label}.png"
            page.screenshot(path=str(path), full_page=True)
            self.taken.append(path)
        page.set_viewport_size(PHONE)


def card(page, summary: str, timeout: float = 20000) -> str:
    """The incident id of the card on Today whose text holds ``summary`` (waits for it). Ids
    are not assumed: after 09:30 the demo's zero-report monitor opens an incident of its own
    first."""
    sel = f"article.card:has-text('{summary}')"
    page.wait_for_selector(sel, timeout=timeout)
    return page.get_attribute(sel, "data-incident")


def outside(requests: list[str], base: str) -> list[str]:
    return [u for u in requests if not (u.startswith(base + "/") or u.startswith("data:"))]


def sign_in(context, link: str):
    page = context.new_page()
    page.goto(link)
    page.click("#sign-in")
    page.wait_for_url(re.compile(r".*/$"))
    return page


def test_the_safety_officers_morning(demo, browser, tmp_path):
    shots = Shots(tmp_path)
    context = browser.new_context(viewport=PHONE, locale="zh-CN", accept_downloads=True)
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))

    # sign in by the link the demo printed (the page behind it only shows a button)
    page = context.new_page()
    page.goto(demo.link)
    shots.take(page, "login")
    page.click("#sign-in")
    page.wait_for_url(demo.base + "/")
    assert "张伟" in page.inner_text("header")
    page.evaluate("window.__notReloaded = true")

    # an event dropped into the spool appears on Today without a reload
    t0 = time.monotonic()
    drop(demo, "fever_single.json")
    fever = card(page, "晨检发热")
    seen_after = time.monotonic() - t0
    print(f"spool drop -> on Today: {seen_after:.1f} s (the spool's settle, then a 3 s poll)")
    assert seen_after < 2.0 + 5.0  # the spool takes it (settle 2 s); Today shows it within 5 s
    assert page.evaluate("window.__notReloaded") is True
    assert re.search(r"正在通知：第\d级", page.inner_text(f"[data-incident='{fever}']"))
    drop(demo, "fire_alarm.json")
    drop(demo, "food_safety.json")
    drop(demo, "bullying.json")
    fire, food, bullying = card(page, "烟感报警"), card(page, "呕吐"), card(page, "欺凌")
    assert len({fever, fire, food, bullying}) == 4
    assert page.evaluate("window.__notReloaded") is True
    assert "3-2：1 人" in page.inner_text("#absence")  # today's register: one pupil of 3-2
    assert "传染病疫情零报告" in page.inner_text("#zero")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shots.take(page, "today")

    # confirm a level (the fever case walks 逐级上报: the level being told now)
    page.click(f"[data-incident='{fever}'] a.title")
    page.click("#act-ack")
    assert "本级已确认" in page.inner_text("p.done")
    assert re.search(r"第\d级已确认\s+— 张伟", page.inner_text("#timeline"))
    # the messages really went out (a delivery pass that fails leaves them 待发送 forever)
    assert "已送达" in page.inner_text("#messages")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shots.take(page, "incident")

    # mark a case handled here, no report needed (with the reason)
    page.goto(f"{demo.base}/incidents/{food}")
    page.fill("#handled-reason", "食堂自查：留样正常，无人不适")
    page.click("#act-handled")
    assert page.inner_text("p.done")
    assert "食堂自查" in page.inner_text("#timeline")

    # resolve several at once with one reason
    page.goto(demo.base + "/")
    page.check(f"input[name=id][value='{fire}']")
    page.check(f"input[name=id][value='{bullying}']")
    # while boxes are ticked Today holds its updates back, and says so; they come when unticked
    drop(demo, "duplicate_a.json")
    page.wait_for_selector("#live-note:not([hidden])", timeout=10000)
    assert "有新情况" in page.inner_text("#live-note")
    assert page.is_checked(f"input[name=id][value='{fire}']")  # the choice is kept
    page.fill("#bulk input[name=reason]", "演示：误报，已现场核实")
    page.click("#bulk button")
    page.wait_for_url(re.compile(r".*done=resolved"))
    assert page.query_selector(f"[data-incident='{fire}']") is None
    assert page.query_selector(f"[data-incident='{bullying}']") is None

    # download the ledger (Excel)
    page.goto(demo.base + "/ledger")
    shots.take(page, "ledger")
    with page.expect_download() as got:
        page.click("#download-xlsx")
    path = tmp_path / "ledger.xlsx"
    got.value.save_as(path)
    assert path.read_bytes()[:2] == b"PK"

    page.goto(demo.base + "/roster")
    shots.take(page, "roster")
    page.goto(demo.base + "/settings")
    assert "console" in page.inner_text("#channels")
    shots.take(page, "settings")
    page.goto(demo.base + "/lang/en?next=/")
    assert "Open incidents" in page.inner_text("#open")
    page.goto(demo.base + "/lang/zh?next=/")

    # a form without its token is refused, and nothing happens
    r = page.request.post(f"{demo.base}/incidents/{fever}", form={"action": "resolve"})
    assert r.status == 403
    page.goto(f"{demo.base}/incidents/{fever}")
    assert "已解除" not in page.inner_text("article.card")

    # sign out: the session is gone
    page.click("#sign-out")
    page.wait_for_url(demo.base + "/login")
    page.goto(demo.base + "/")
    assert page.url == demo.base + "/login"

    # /docs renders Swagger UI from the package
    page.goto(demo.base + "/docs")
    page.wait_for_selector("#swagger-ui .info", timeout=20000)

    assert outside(requests, demo.base) == []
    context.close()
    if os.environ.get("ESCALATOR_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        for p in shots.taken:
            shutil.copy(p, SHOTS / p.name)


def test_a_viewer_sees_no_names_and_cannot_act(demo, browser):
    context = browser.new_context(viewport=PHONE, locale="zh-CN")
    drop(demo, "fever_cluster_day1_1.json", summary="三年级2班 李小红 发热")
    page = sign_in(context, cli_link(demo, "v-gao-ming"))
    assert "高明" in page.inner_text("header") and "设置" not in page.inner_text("header")
    page.wait_for_selector("article.card", timeout=20000)
    assert "李小红" not in page.content()
    first = page.get_attribute("article.card", "data-incident")
    page.goto(f"{demo.base}/incidents/{first}")
    assert page.query_selector("#act-ack") is None
    token = page.get_attribute("input[name=csrf]", "value")
    r = page.request.post(f"{demo.base}/incidents/{first}", form={"action": "ack", "csrf": token})
    assert r.status == 403
    assert page.request.get(demo.base + "/settings").status == 403
    context.close()
