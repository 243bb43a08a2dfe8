"""The contract suite exercises every method of the store protocols: a method added to one of
them without a contract test fails here."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from escalator.store.base import (
    ConsoleTx,
    CoreTx,
    NodeTx,
    QuietTx,
    ReplyTx,
    ReportReads,
    RetentionTx,
    SchoolTx,
    Store,
    Tx,
)


def _methods(protocol: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(protocol, inspect.isfunction)
            if not name.startswith("_")}


def test_tx_is_the_sum_of_its_parts():
    parts = (CoreTx, SchoolTx, ReportReads, RetentionTx, QuietTx, ConsoleTx, ReplyTx, NodeTx)
    assert _methods(Tx) == set().union(*map(_methods, parts))
    assert all(not (_methods(a) & _methods(b)) for a in parts for b in parts if a is not b)


def test_every_store_method_is_called_by_the_suite():
    here = Path(__file__).parent
    text = "\n".join(p.read_text(encoding="utf-8") for p in here.glob("*.py")
                     if p.name != Path(__file__).name)
    called = set(re.findall(r"\.(\w+)\(", text))
    missing = (_methods(Tx) | _methods(Store)) - called
    assert not missing, f"no contract test calls {sorted(missing)}"
