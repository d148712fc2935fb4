"""One event loop and one set of storage clients per worker process.

Async engines and AsyncMongoClient are bound to the loop that made them and must not cross
a fork: build them lazily in the process that uses them (after prefork's fork).
"""

from __future__ import annotations

import asyncio
import os

from pipeline.decode import set_pixel_limit
from schemas.settings import Settings
from service.runtime.allocator import keep_freed_buffers
from storage.context import Storage, build_storage

_state: dict = {}


def _ensure() -> tuple[asyncio.AbstractEventLoop, Storage]:
    if _state.get("pid") != os.getpid():
        _state.clear()
        keep_freed_buffers()  # each image's arrays reuse the last one's pages
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        settings = Settings()
        set_pixel_limit(settings.max_image_pixels)  # for methods that open images themselves

        async def build():
            return build_storage(settings, one_job_at_a_time=True)

        _state.update(pid=os.getpid(), loop=loop, settings=settings,
                      storage=loop.run_until_complete(build()))
    return _state["loop"], _state["storage"]


def run(coro_fn, *args, **kwargs):
    """Run ``await coro_fn(storage, settings, *args, **kwargs)`` on this process's loop."""
    loop, storage = _ensure()
    return loop.run_until_complete(coro_fn(storage, _state["settings"], *args, **kwargs))


def shutdown() -> None:
    if _state.get("pid") == os.getpid():
        _state["loop"].run_until_complete(_state["storage"].close())
        _state["loop"].close()
    _state.clear()
