"""Async engine and session factory for PostgreSQL (asyncpg) or SQLite (aiosqlite)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)

from storage import inline_sqlite


def create_engine(url: str, *, inline: bool = False, **kwargs) -> AsyncEngine:
    """Build an async engine; on SQLite, make the file's folder and turn foreign keys on.

    ``inline``: a SQLite file's calls run on the event loop's thread instead of aiosqlite's
    (:mod:`storage.inline_sqlite`: only for a loop that runs one job at a time)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        on_disk = bool(parsed.database) and parsed.database != ":memory:"
        if on_disk:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Several worker processes share the file in the embedded default: wait, don't fail.
        kwargs.setdefault("connect_args", {"timeout": 60})
        if inline and on_disk and not parsed.query:
            kwargs.setdefault("async_creator", inline_sqlite.connector(
                parsed.database, **kwargs["connect_args"]))
        # Every use goes through a Connection, which ends its own transaction when it is
        # closed (commit, or rollback on close): the pool's rollback on return is a second
        # hand-off to aiosqlite's thread for nothing (≈ 0.05 ms a transaction).
        kwargs.setdefault("pool_reset_on_return", None)
        engine = create_async_engine(url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - driver hook
            cursor = dbapi_connection.cursor()
            # ON DELETE CASCADE / SET NULL only work in SQLite with this on.
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            # WAL's own recommendation: the WAL is synced at checkpoints, not at every commit
            # (never corrupt; a power loss may undo the last commits). The blob files those
            # rows name are never synced either, so a sync per commit bought no durability
            # the store as a whole had; it cost 0.2-0.6 ms of CPU a commit (17 an image).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    ping = kwargs.pop("pool_pre_ping", True)
    engine = create_async_engine(url, **kwargs)
    if ping:
        _ping_when_idle(engine)
    return engine


#: A pooled connection that has been back in the pool at least this long is pinged before it
#: is reused; one back for less is not. SQLAlchemy's own pre-ping pings every checkout, with
#: asyncpg three round trips (BEGIN, ";", ROLLBACK): a cluster's method task checks out twice
#: (its delivery begins and ends), 31 pings an image in all, more round trips than its
#: statements. What a ping finds — a server restarted, a connection closed by a timeout, a
#: firewall or an administrator — happens to idle connections; one used a moment ago that the
#: server drops fails its statement like any connection lost mid-use (a transient fault:
#: retried, and SQLAlchemy replaces the pool's connections), and a restart takes longer than
#: this anyway, so every connection it closed is pinged.
PING_AFTER_IDLE_SECONDS = 1.0
_CHECKED_IN_AT = "skygate_checked_in_at"


def _ping_when_idle(engine: AsyncEngine) -> None:
    """SQLAlchemy's pre-ping (a dead connection found: the pool's connections replaced, the
    checkout retried on a new one), for connections idle ``PING_AFTER_IDLE_SECONDS``."""
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(dbapi_connection, record):  # pragma: no cover - driver hook
        if dbapi_connection is not None:
            record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy):  # pragma: no cover - driver hook
        since = record.info.pop(_CHECKED_IN_AT, None)  # None: a new connection, not pinged
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise sa_exc.InvalidatePoolError() from error
            raise


@asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection whose statements each commit on their own, for one-statement reads and
    writes (a statement is atomic by itself): no BEGIN and COMMIT/ROLLBACK round trips
    around it. Measured with asyncpg here: 0.32 ms of client CPU a read instead of 0.45
    (0.54 instead of 0.72 with the pool's pre-ping), and one round trip to the server
    instead of three. Not for several statements that must see one snapshot or commit
    together: those keep ``engine.begin()``.

    SQLite has no round trips to save, and switching its isolation level costs a PRAGMA
    each way (8 hand-offs to aiosqlite's thread a read instead of 4, 0.9 ms of CPU instead
    of 0.4): there it is a plain transaction, which the driver opens only for a write."""
    if engine.dialect.name == "sqlite":
        async with engine.begin() as conn:
            yield conn
        return
    async with engine.connect() as conn:
        yield await conn.execution_options(isolation_level="AUTOCOMMIT")


def pool_options(settings) -> dict:
    """``create_engine`` keywords for the PostgreSQL pool from the settings (``db_pool_*``);
    SQLite (the embedded default: one local file) keeps SQLAlchemy's own pool."""
    if make_url(settings.sqlalchemy_url).get_backend_name() == "sqlite":
        return {}
    return {"pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout,
            "pool_pre_ping": settings.db_pool_pre_ping}


def pool_status(engine: AsyncEngine) -> dict:
    """The pool's configured size and its connections now: ``size``, ``max_overflow``,
    ``checked_out``, ``idle`` (what the pool class can tell; empty for pools without)."""
    pool = engine.sync_engine.pool
    status = {}
    for key, attr in (("size", "size"), ("checked_out", "checkedout"), ("idle", "checkedin")):
        if callable(getattr(pool, attr, None)):
            status[key] = getattr(pool, attr)()
    # QueuePool has no public accessor for these two.
    if hasattr(pool, "_max_overflow"):
        status["max_overflow"] = pool._max_overflow
    if hasattr(pool, "_timeout"):
        status["timeout"] = pool._timeout
    return status


def session_factory(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def dialect_insert(engine: AsyncEngine, table):
    """``INSERT`` of the engine's dialect (PostgreSQL's or SQLite's), for their shared
    ``on_conflict_do_*`` upserts."""
    return (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(table)
