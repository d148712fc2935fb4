"""The PostgreSQL pool pings a connection before reuse only when it has been idle
(storage.db.PING_AFTER_IDLE_SECONDS): one used a moment ago is reused as it is, one whose
server process went away while it was idle is replaced without the caller seeing an error."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from storage import db
from storage.faults import is_transient
from tests.conftest import _pg_admin, run

pytestmark = pytest.mark.integration


def _engine(pg_url, **kwargs):
    engine = db.create_engine(pg_url.replace("postgresql://", "postgresql+asyncpg://"),
                              pool_size=1, max_overflow=0, **kwargs)
    pings = []
    ping = engine.dialect.do_ping
    engine.dialect.do_ping = lambda conn: (pings.append(conn), ping(conn))[1]
    return engine, pings


async def _backend_pid(engine) -> int:
    async with db.autocommit(engine) as conn:
        return (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()


def test_a_connection_back_a_moment_ago_is_reused_without_a_ping(pg_url, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    engine, pings = _engine(pg_url)

    async def go():
        try:
            return {await _backend_pid(engine) for _ in range(5)}
        finally:
            await engine.dispose()

    assert len(run(go())) == 1  # one connection, reused
    assert pings == []


def test_an_idle_connection_whose_server_went_away_is_replaced(pg_url, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # every reuse counts as idle
    engine, pings = _engine(pg_url)

    async def go():
        try:
            first = await _backend_pid(engine)
            assert pings == []  # a new connection is not pinged
            assert await _backend_pid(engine) == first and len(pings) == 1
            await _pg_admin(f"SELECT pg_terminate_backend({first})")
            second = await _backend_pid(engine)  # the ping fails: a new connection
            return first, second
        finally:
            await engine.dispose()

    first, second = run(go())
    assert second != first and len(pings) == 2


def test_without_the_ping_a_lost_connection_is_a_transient_fault(pg_url, monkeypatch):
    """What a connection dropped while in use (or between its uses, inside the idle time)
    gives: an error the tasks retry, after which the pool has a live connection again."""
    engine, pings = _engine(pg_url, pool_pre_ping=False)

    async def go():
        try:
            first = await _backend_pid(engine)
            await _pg_admin(f"SELECT pg_terminate_backend({first})")
            with pytest.raises(sa.exc.DBAPIError) as caught:
                await _backend_pid(engine)
            assert is_transient(caught.value), caught.value
            return first, await _backend_pid(engine)
        finally:
            await engine.dispose()

    first, second = run(go())
    assert second != first and pings == []
