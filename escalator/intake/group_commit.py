"""Group commit for intake: callers that hand in events at about the same time share one
store transaction, so one fsync covers them all (DESIGN.md, durability rule 1: "commits may be
grouped"). Each caller's answer comes only after that commit.

A caller's events are validated before they get here (the API answers 4xx for a bad event
without touching the batch). If the shared transaction still fails, it has rolled back entirely
and each caller's events are tried again alone, in their own transaction, so one caller's
failure never fails the others; a store that cannot write fails them all (the API answers 503).
A caller's own transaction that loses a race with another daemon (a
:class:`~escalator.store.base.Conflict`: the same dedup key opened by both) is run again a few
times (:func:`~escalator.store.retry.retrying_async`): the second run finds the other's incident.

Batches form by themselves: the first caller starts a flush a couple of turns of the event loop
later; whoever arrives before it runs — typically the requests that queued up during the
previous commit — joins. With one caller at a time, a batch is one caller (no waiting). The
transaction runs through ``db`` (the daemon's store thread), so the event loop keeps serving
while it commits and the next batch gathers meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from escalator.engine.engine import Engine, IngestResult
from escalator.engine.runloop import Lane
from escalator.store.retry import retrying_async
from escalator.store.thread import Runner, inline

MAX_BATCH = 256
"""Most callers in one transaction (a long transaction delays every other use of the store)."""
_Item = tuple[Sequence[Any], str | None, "asyncio.Future[list[IngestResult]]"]


class GroupCommit:
    """``await ingest(events, source)``: :meth:`Engine.ingest_many`, with concurrent callers
    committed together (:meth:`Engine.ingest_batches`). ``on_commit``: called after each
    commit (the daemon wakes its lanes to send what became due). ``db``: how the transaction
    runs (the daemon's store thread; default inline). ``lane``: the intake :class:`Lane`
    record kept up to date (busy while callers wait)."""

    def __init__(self, engine: Engine, on_commit: Callable[[], None] | None = None, *,
                 db: Runner = inline, lane: Lane | None = None) -> None:
        self.engine = engine
        self.on_commit = on_commit
        self.db = db
        self.lane = lane or Lane("intake", engine.clock.now())
        self._pending: list[_Item] = []
        self._flushing = False
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        """Transactions committed so far (with :attr:`callers`, the mean batch size)."""
        self.callers = 0

    async def ingest(self, events: Sequence[Any], source: str | None) -> list[IngestResult]:
        future: asyncio.Future[list[IngestResult]] = asyncio.get_running_loop().create_future()
        self._pending.append((events, source, future))
        if not self._flushing:
            self._flushing = True
            self.lane.start(self.engine.clock.now())
            self._task = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # one more turn of the loop: callers already scheduled join
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._commit([item for item in batch if not item[2].done()])
                self.lane.progressed(self.engine.clock.now())
        finally:
            self._flushing = False
            self.lane.progressed(self.engine.clock.now(), idle=True)

    async def _commit(self, batch: list[_Item]) -> None:
        if not batch:
            return
        try:
            batches = [(events, source) for events, source, _ in batch]
            results = (await retrying_async(self.db, self.engine.ingest_batches, batches)
                       if len(batch) == 1 else await self.db(self.engine.ingest_batches, batches))
        except Exception as e:
            if len(batch) == 1:
                if not batch[0][2].done():
                    batch[0][2].set_exception(e)
                return
            for item in batch:  # rolled back: each caller alone, so one failure stays its own
                await self._commit([item])
            return
        self.batches += 1
        self.callers += len(batch)
        for (_, _, future), result in zip(batch, results, strict=True):
            if not future.done():  # (a caller cancelled meanwhile: its events are stored)
                future.set_result(result)
        if self.on_commit is not None:
            self.on_commit()
