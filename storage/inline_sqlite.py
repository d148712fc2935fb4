"""SQLite on the event loop's own thread, for a process whose loop runs one job at a time.

aiosqlite runs every call of a connection (cursor, execute, fetchall, close, commit) on a
thread of its own, so that a busy database never stalls an event loop that serves other
work: each call is a hand-off there and back (a queue put, a thread wake-up, the loop woken
through its self-pipe). On the embedded store's small rows that costs far more CPU than the
statement itself: 114 hand-offs per image of ``skygate scan`` (scripts/bench_statements.py).
A process whose loop only ever runs the one job in front of it (a ``skygate scan`` process, a
worker process: :mod:`service.runtime.process_loop`) gains nothing from the thread: there
:class:`InlineConnection` runs each call at once, on the loop's thread. The statements, their
transactions, their errors and SQLite's own busy wait (``timeout``) are the same; what a
waiting call blocks is only that process's one job. Anything serving several requests on one
loop (the HTTP API) keeps aiosqlite's thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import aiosqlite


class _RunNow:
    """Stands in for the queue to aiosqlite's thread: each ``(future, call)`` put on it is
    run at once, and its outcome set on the future (connect, close and SQLAlchemy's own
    isolation-level switch use the queue directly)."""

    def put_nowait(self, item) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter, as the thread does
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run on the caller's thread (no thread started)."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int = 64):
        super().__init__(connector, iter_chunk_size)
        self._tx = _RunNow()

    def __await__(self):
        return self._connect().__await__()

    async def _execute(self, fn, *args, **kwargs):
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)


def connector(database: str, **kwargs) -> Callable[[], InlineConnection]:
    """An ``async_creator`` for SQLAlchemy: a new :class:`InlineConnection` to ``database``
    (``sqlite3.connect`` keywords, e.g. ``timeout``)."""

    async def create() -> InlineConnection:
        return await InlineConnection(lambda: sqlite3.connect(database, **kwargs))

    return create
