"""Everything storage, built once from the settings: SQL engine, document store, blob store,
and the results cache (Redis, when one is configured).

Each backend is chosen by the settings in its package's factory (``document_store_for``:
MongoDB or the embedded SQL store; ``blob_store_for``: a folder or S3; ``cache_for``: Redis
or none); :func:`build_storage` is the one place that calls them, and the one place that
sizes the connection pools (``db_pool_*``, ``mongo_*_pool_*``).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from schemas.settings import Settings
from storage.blobs import BlobStore, blob_store_for
from storage.cache import Cache, cache_for
from storage.db import create_engine, pool_options, session_factory
from storage.documents import DocumentStore, document_store_for


@dataclass
class Storage:
    engine: AsyncEngine
    sessions: async_sessionmaker
    documents: DocumentStore
    blobs: BlobStore
    cache: Cache | None = None

    async def close(self) -> None:
        if self.cache is not None:
            await self.cache.close()
        await self.documents.close()
        await self.engine.dispose()


def build_storage(settings: Settings, *, one_job_at_a_time: bool = False) -> Storage:
    """Build the storage objects; call inside the event loop that will use them.

    ``one_job_at_a_time``: that loop only ever runs the job in front of it (a scan or worker
    process: service.runtime.process_loop), so the embedded SQLite store's calls run on its
    own thread (storage/inline_sqlite.py) instead of being handed to aiosqlite's."""
    engine = create_engine(settings.sqlalchemy_url, inline=one_job_at_a_time,
                           **pool_options(settings))
    return Storage(
        engine=engine,
        sessions=session_factory(engine),
        documents=document_store_for(settings, engine),
        blobs=blob_store_for(settings),
        cache=cache_for(settings),
    )


@asynccontextmanager
async def open_storage(settings: Settings):
    storage = build_storage(settings)
    try:
        yield storage
    finally:
        await storage.close()
