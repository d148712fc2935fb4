"""``?wait=N``: hold a request until its uploads are done or failed, at most N seconds.

The wait is async: the request polls the uploads' status (one short SQL statement, a pool
connection only for that statement) with a growing interval, and holds no worker slot and
no connection in between. At most ``api_max_waiters`` requests wait at once per process;
past that a request answers at once, as without ``wait``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Query, Request

from storage import repository as repo

MAX_WAIT = 30
FINISHED = {"done", "failed"}

Wait = Annotated[int, Query(ge=0, le=MAX_WAIT, description=(
    f"seconds (at most {MAX_WAIT}) to hold the answer until the verdict is ready; 0: answer "
    "at once"), examples=[10])]


class WaitGate:
    """Counts the requests waiting in this process."""

    def __init__(self, limit: int):
        self.limit, self.waiting = limit, 0

    def enter(self) -> bool:
        if self.waiting >= self.limit:
            return False
        self.waiting += 1
        return True

    def leave(self) -> None:
        self.waiting -= 1


async def until_finished(request: Request, upload_ids: list[int], seconds: int) -> bool:
    """True once every upload is done or failed (or gone), False when ``seconds`` passed,
    the client went away, or too many requests wait already."""
    engine = request.app.state.storage.engine
    if not upload_ids:
        return True
    if seconds <= 0:
        return False
    gate: WaitGate = request.app.state.waiters
    if not gate.enter():
        return False
    loop = asyncio.get_running_loop()
    deadline, pause = loop.time() + seconds, 0.1
    try:
        while True:
            statuses = await repo.upload_statuses(engine, upload_ids)
            if all(statuses.get(i, "done") in FINISHED for i in upload_ids):
                return True
            left = deadline - loop.time()
            if left <= 0 or await request.is_disconnected():
                return False
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 1.5, 1.0)
    finally:
        gate.leave()
