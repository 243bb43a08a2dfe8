"""An event loop on a thread of its own, for the delivery lane (docs/ARCHITECTURE.md, "Lanes").

Under a burst the daemon's main loop runs dozens of intake requests per turn; a lane that sends
to one address one message at a time needs a turn of the loop for each send's answer, so on the
main loop it waits behind every request of every turn. On its own loop it is woken as soon as
its socket is readable (the threads still share the interpreter: the wait is then at most the
interpreter's switch interval, not a turn of the busy loop).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """A thread running an event loop made by ``factory`` (``None``: asyncio's default).

    ``await thread.run(coro)`` runs ``coro`` on that loop and returns its result on the
    caller's loop (cancelling the caller cancels ``coro``); :meth:`call_soon` schedules a plain
    callable there from any thread; :meth:`close` stops the loop and joins the thread."""

    def __init__(self, name: str, factory: Callable[[], asyncio.AbstractEventLoop] | None = None
                 ) -> None:
        self.loop = (factory or asyncio.new_event_loop)()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro`` on the thread's loop; its result or exception here."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """``fn()`` on the thread's loop, soon (from any thread; nothing once it has closed)."""
        try:
            self.loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop has closed
            pass

    def close(self) -> None:
        """Stop the loop (tasks still on it are dropped) and join the thread (idempotent)."""
        if self._thread.is_alive():
            self.call_soon(self.loop.stop)
            self._thread.join()
