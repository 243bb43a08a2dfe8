"""Property tests ("proof under load and faults", item 4): arbitrary and mutated input never
raises an unhandled exception, and every rejection names its reason.

- event intake (``parse_events``), and raw bytes through the spool's JSON/YAML decoders;
- PagerDuty Events v2 and Alertmanager bodies through the real HTTP app and a real Daemon
  (never a 5xx; every 4xx names the problem);
- CSV registers: the real sample registers with cells replaced by arbitrary text;
- config files: arbitrary YAML-ish text and mutations of config/demo.yaml."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML, YAMLError

from escalator.config import check_config, load_config
from escalator.events import Event
from escalator.intake.parsing import IntakeError, parse_events
from escalator.intake.registers import RegisterError, decode, parse_register
from escalator.intake.spool.decode import decode_json, decode_yaml
from escalator.intake.spool.files import Rejected

from .conftest import CASES, ROOT, case
from .fuzz_strategies import JSON, STRICT_JSON, mutated, paths
from .test_api import SOURCE, api, bearer, env  # noqa: F401 (fixtures used below)

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

EVENT_NAMES = sorted(p.name for p in (CASES / "events").glob("*.json"))
EVENTS = {name: case(f"events/{name}") for name in EVENT_NAMES}


def assert_intake_error(e: IntakeError) -> None:
    assert e.errors, "an IntakeError without errors"
    for err in e.errors:
        assert isinstance(err.get("field"), str) and err["field"].strip(), err
        assert isinstance(err.get("message"), str) and err["message"].strip(), err


def check_parse(doc) -> list[Event] | None:
    try:
        events = parse_events(doc)
    except IntakeError as e:
        assert_intake_error(e)
        return None
    assert events and all(isinstance(ev, Event) for ev in events)
    return events


# ----------------------------------------------------------------------------- event intake


@FAST
@given(JSON)
def test_arbitrary_json_values_give_events_or_intake_error(doc):
    check_parse(doc)


def _event_docs() -> st.SearchStrategy:
    one = st.sampled_from(EVENT_NAMES).flatmap(lambda n: mutated(EVENTS[n]))
    many = st.lists(st.sampled_from(EVENT_NAMES), min_size=1, max_size=4).flatmap(
        lambda ns: mutated([EVENTS[n] for n in ns]))
    return st.one_of(one, many)


@settings(FAST, max_examples=300)
@given(_event_docs())
def test_mutated_sample_events_give_events_or_intake_error(doc):
    check_parse(doc)


def _dump(doc) -> str:
    """``doc`` as YAML text (``{`` when it cannot be written, e.g. a lone surrogate)."""
    out = io.StringIO()
    try:
        YAML(typ="safe", pure=True).dump(doc, out)
    except (YAMLError, UnicodeError, ValueError, TypeError):
        return "{"
    return out.getvalue()


def _spool_bytes() -> st.SearchStrategy[bytes]:
    def dump_json(doc) -> bytes:
        return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")

    def dump_yaml(doc) -> bytes:
        return _dump(doc).encode("utf-8", "surrogatepass")
    docs = st.one_of(_event_docs(), JSON)
    return st.one_of(
        st.binary(max_size=300),
        docs.map(dump_json),
        docs.map(dump_yaml),
        docs.map(dump_json).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
        st.text(alphabet="{}[]:,\"'-!&*|>?#%@` \n\t0123abcé热", max_size=80).map(str.encode),
    )


@FAST
@given(data=_spool_bytes(), fmt=st.sampled_from(["json", "yaml"]))
def test_spool_decoders_reject_with_a_reason_or_give_events_or_intake_error(data, fmt):
    decoder = decode_json if fmt == "json" else decode_yaml
    try:
        doc = decoder(data)
    except Rejected as e:
        assert isinstance(e.reason, str) and e.reason.strip()
        return
    check_parse(doc)


# ----------------------------------------------------------------------------- HTTP compat

PD_TRIGGER = case("compat/pagerduty_v2_trigger.json")
PD_RESOLVE = case("compat/pagerduty_v2_resolve.json")
AM_WEBHOOK = case("compat/alertmanager_webhook.json")


def _body(doc) -> bytes:
    # ensure_ascii: lone surrogates travel as \ud800 escapes, which the server must refuse
    return json.dumps(doc).encode()


def _pd_bodies() -> st.SearchStrategy[bytes]:
    keep = frozenset({("routing_key",)})
    return st.one_of(
        st.sampled_from([PD_TRIGGER, PD_RESOLVE]).flatmap(
            lambda d: mutated(d, values=STRICT_JSON, keep=keep)).map(_body),
        STRICT_JSON.map(_body),
    )


@FAST
@given(body=_pd_bodies())
async def test_pagerduty_bodies_never_5xx_and_4xx_lists_errors(api, body):  # noqa: F811
    r = await api.client.post("/v2/enqueue", content=body,
                              headers={"Content-Type": "application/json"})
    assert r.status_code < 500, (r.status_code, r.text)
    out = r.json()
    if r.status_code == 202:
        assert out["status"] == "success", out
        return
    assert r.status_code == 400, (r.status_code, r.text)
    assert out["status"] == "invalid event"
    assert out["errors"] and all(isinstance(m, str) and m.strip() for m in out["errors"]), out


def _am_bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        mutated(AM_WEBHOOK, values=STRICT_JSON).map(_body),
        STRICT_JSON.map(lambda v: _body({"version": "4", "alerts": v})),
        STRICT_JSON.map(_body),
    )


@FAST
@given(body=_am_bodies())
async def test_alertmanager_bodies_never_5xx_and_4xx_names_fields(api, body):  # noqa: F811
    r = await api.client.post("/api/v1/alertmanager", content=body,
                              headers={**bearer(SOURCE), "Content-Type": "application/json"})
    assert r.status_code < 500, (r.status_code, r.text)
    out = r.json()
    if r.status_code == 200:
        assert len(out["results"]) == len(json.loads(body)["alerts"])
        return
    assert r.status_code in (400, 422), (r.status_code, r.text)
    assert isinstance(out["detail"], str) and out["detail"].strip(), out
    assert out["errors"], out
    for err in out["errors"]:
        assert err["field"].strip() and err["message"].strip(), out


# ----------------------------------------------------------------------------- CSV registers

REGISTER_FILES = sorted((CASES / "registers").glob("*.csv"))


def _register(path: Path) -> tuple[list[list[str]], str]:
    text, encoding = decode(path.read_bytes())
    return list(csv.reader(io.StringIO(text, newline=""))), encoding


REGISTERS = {p.name: _register(p) for p in REGISTER_FILES}
DEMO = load_config(ROOT / "config" / "demo.yaml")
KEY = bytes(range(32))

CELL_TEXT = st.one_of(
    st.text(max_size=20),
    st.text(alphabet="0123456789-/:. 年月日时分班级病假事假发热咳嗽√℃,\"\n", max_size=20),
    st.sampled_from(["", "/", "√", "38.5", "2026-11-30", "2026-11-30 06:30", "0226-11-30",
                     "9999-12-31 23:59", "3-2", "十二年级", "S-2023-0142", "病假", "1e309"]),
)


@st.composite
def _mutated_register(draw: st.DrawFn) -> bytes:
    rows, encoding = REGISTERS[draw(st.sampled_from(sorted(REGISTERS)))]
    rows = [list(r) for r in rows]
    for _ in range(draw(st.integers(1, 6))):
        if not rows:  # a short register can lose every row
            break
        i = draw(st.integers(0, len(rows) - 1))
        if not rows[i]:
            continue
        op = draw(st.sampled_from(["cell", "cell", "cell", "drop_row", "dup_row", "drop_cell"]))
        if op == "cell":
            rows[i][draw(st.integers(0, len(rows[i]) - 1))] = draw(CELL_TEXT)
        elif op == "drop_row":
            del rows[i]
        elif op == "dup_row":
            rows.insert(i, list(rows[i]))
        else:
            del rows[i][draw(st.integers(0, len(rows[i]) - 1))]
    out = io.StringIO()
    if draw(st.booleans()):
        csv.writer(out, lineterminator="\r\n").writerows(rows)
    else:  # naive join: quotes and commas in cells shift or break the columns
        out.write("\n".join(",".join(r) for r in rows))
    target = draw(st.sampled_from([encoding, "utf-8", "utf-8-sig", "gb18030"]))
    try:
        return out.getvalue().encode(target)
    except UnicodeEncodeError:
        return out.getvalue().encode("utf-8", "surrogatepass")


@settings(FAST, max_examples=200)
@given(_mutated_register())
def test_mutated_real_registers_give_submissions_or_register_error(data):
    try:
        subs = parse_register(data, DEMO, key=KEY)
    except RegisterError as e:
        assert isinstance(e.reason, str) and e.reason.strip()
        for err in e.errors:
            assert err.get("field") and err.get("message"), err
            if "row" in err:
                assert err["row"] >= 1 and err["line"] >= 1 and err["column"], err
        return
    for s in subs:
        assert s.row_key and s.event.summary


# ----------------------------------------------------------------------------- config files

DEMO_YAML = (ROOT / "config" / "demo.yaml").read_text(encoding="utf-8")
DEMO_DOC = YAML(typ="safe", pure=True).load(DEMO_YAML)
DEMO_LINES = DEMO_YAML.splitlines()

YAML_KEYS = sorted({p[-1] for p in paths(DEMO_DOC) if p and isinstance(p[-1], str)})


def assert_problems(config, problems) -> None:
    for p in problems:
        assert isinstance(p.message, str) and p.message.strip(), p
        assert p.path or p.line is not None, p
        assert p.level in ("error", "warning"), p
    assert (config is None) == any(p.level == "error" for p in problems), problems


def _check_text(tmp_path: Path, text: str | bytes) -> None:
    path = tmp_path / "escalator.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_problems(*check_config(path))


_YAML_LINE = st.tuples(
    st.sampled_from(["", "  ", "    ", "      ", "- ", "  - "]),
    st.one_of(st.sampled_from(YAML_KEYS), st.text(alphabet="abc_-:&*!|>{}[]#'\" ", max_size=8)),
    st.sampled_from([": ", ":", " ", ": |\n  ", ": &a ", ": *a", ": !!int ", ": !!python/none "]),
    st.one_of(st.text(max_size=15), st.sampled_from(["{}", "[]", "null", "~", "yes", "0x1F",
                                                     "08:00", "2026-11-30", "-1", "1e400"])),
).map("".join)


@FAST
@given(text=st.one_of(st.text(max_size=200), st.lists(_YAML_LINE, max_size=12).map("\n".join),
                      st.binary(max_size=100)))
@example(text="school:\n  name: a\x1fb\n")  # ReaderError, not a MarkedYAMLError (was raised)
@example(text="[" * 1000)  # RecursionError in the YAML composer (was raised)
def test_arbitrary_yaml_text_never_raises_and_problems_are_located(tmp_path, text):
    _check_text(tmp_path, text)


def _scalar_values() -> st.SearchStrategy:
    return st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                     st.text(max_size=20), st.sampled_from(["", "08:00", "25:61", "P1", "-5",
                                                            "Asia/Nowhere", "+8613800000000"]),
                     st.lists(st.text(max_size=5), max_size=2),
                     st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))




@st.composite
def _text_mutation(draw: st.DrawFn) -> str:
    lines = list(DEMO_LINES)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "replace_value", "indent"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "replace_value" and ":" in lines[i]:
            head = lines[i].split(":", 1)[0]
            lines[i] = f"{head}: {draw(st.text(max_size=15))}"
        else:
            lines[i] = " " * draw(st.integers(0, 3)) + lines[i]
    return "\n".join(lines) + "\n"


@FAST
@given(text=st.one_of(mutated(DEMO_DOC, values=_scalar_values()).map(_dump), _text_mutation()))
def test_mutated_demo_config_never_raises_and_problems_are_located(tmp_path, text):
    _check_text(tmp_path, text)
