"""Hypothesis strategies for tests/test_fuzz.py: JSON-like values, and mutations of real sample
documents (drop a key, replace a value with an arbitrary one, add an unknown key, duplicate a
list entry)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

# Values a careless or hostile sender might put anywhere: edges of times, sizes and types.
NASTY_SCALARS = st.sampled_from([
    "", " ", "\x00", "\ud800", "null", "true", "0", "-1", "1e309", "NaN", "critical", "P0", "p1",
    "fever", "fire", "infectious_disease", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00", "2026-11-30T21:47:10+08:00", "2026-02-30T00:00:00Z",
    "2026-11-30", "21:47", "x" * 2000, "北门" * 300, "3-2", "S-2023-0142", "../../etc/passwd",
    0, -1, 1, 2**63, -(2**63) - 1, 10**30, 1.5, 1e308, -0.0, True, False, None,
])

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30), NASTY_SCALARS,
)


def json_values(scalars: st.SearchStrategy[Any] = SCALARS) -> st.SearchStrategy[Any]:
    """Arbitrary JSON-like trees of ``scalars``, lists and string-keyed dicts."""
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(st.text(max_size=12), children, max_size=5),
        ),
        max_leaves=20,
    )


JSON = json_values()
# what json.dumps can write as strict JSON (no NaN/Infinity), for bodies meant to be parsed
STRICT_JSON = json_values(st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30), NASTY_SCALARS,
))


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into ``doc`` (the root is ``()``)."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, (*prefix, i))


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def mutated(draw: st.DrawFn, doc: Any, *, values: st.SearchStrategy[Any] = JSON,
            keep: frozenset[tuple[Any, ...]] = frozenset(), max_steps: int = 3) -> Any:
    """``doc`` with 1..``max_steps`` mutations. Paths in ``keep`` (and the root) are left in
    place unless the draw decides to spare nothing."""
    doc = copy.deepcopy(doc)
    spare = draw(st.booleans()) or draw(st.integers(0, 9)) > 0  # mostly keep the protected paths
    for _ in range(draw(st.integers(1, max_steps))):
        candidates = [p for p in paths(doc) if p and not (spare and p in keep)]
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent, last = _get(doc, path[:-1]), path[-1]
        op = draw(st.sampled_from(["drop", "replace", "replace", "add", "duplicate", "stringify"]))
        if op == "drop":
            del parent[last]
        elif op == "replace":
            parent[last] = draw(values)
        elif op == "add":
            target = parent[last]
            if isinstance(target, dict):
                target[draw(st.text(max_size=12))] = draw(values)
            elif isinstance(target, list):
                target.insert(draw(st.integers(0, len(target))), draw(values))
            else:
                parent[last] = draw(values)
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
        elif op == "stringify":
            value = parent[last]
            if isinstance(value, str):
                parent[last] = value + draw(st.text(max_size=20))
            elif not isinstance(value, dict | list):
                parent[last] = str(value)
    return doc
