"""``Idempotency-Key`` for ``POST /v1/uploads`` (table ``idempotency_keys``, migration 0016):
per API key, the first request's fingerprint and, once it is answered, its status and body.

:func:`begin` claims the key for a request (a row with no answer yet) or returns what is
stored; :func:`complete` keeps the answer; :func:`release` drops an unanswered claim (the
request failed: a retry should run again). Rows older than the time to live no longer count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.clock import utcnow
from storage.db import dialect_insert
from storage.models import idempotency_keys as table


@dataclass(frozen=True)
class Stored:
    request_hash: str
    status_code: int | None  # None: the first request is still being answered
    body: dict | None


def _row(key_id: int, key: str):
    return sa.and_(table.c.key_id == key_id, table.c.idempotency_key == key)


async def begin(engine: AsyncEngine, *, key_id: int, key: str, request_hash: str,
                ttl: timedelta) -> Stored | None:
    """None: this request holds the key now (answer it, then :func:`complete`); else what
    the first request with this key stored."""
    async with engine.begin() as conn:
        # This API key's expired keys go first (each active key keeps its own rows bounded).
        await conn.execute(table.delete().where(table.c.key_id == key_id,
                                                table.c.created_at < utcnow() - ttl))
        inserted = await conn.execute(
            dialect_insert(conn, table).values(key_id=key_id, idempotency_key=key,
                                               request_hash=request_hash, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["key_id", "idempotency_key"]))
        if inserted.rowcount:
            return None
        row = (await conn.execute(sa.select(table).where(_row(key_id, key)))).mappings().one()
    return Stored(row["request_hash"], row["status_code"], row["response_body"])


async def complete(engine: AsyncEngine, *, key_id: int, key: str, status_code: int,
                   body: dict) -> None:
    async with engine.begin() as conn:
        await conn.execute(table.update().where(_row(key_id, key))
                           .values(status_code=status_code, response_body=body))


async def release(engine: AsyncEngine, *, key_id: int, key: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(table.delete().where(_row(key_id, key),
                                                table.c.status_code.is_(None)))


async def purge(engine: AsyncEngine, *, ttl: timedelta) -> int:
    """Remove every row past its time to live (the recovery sweep); returns how many."""
    async with engine.begin() as conn:
        done = await conn.execute(table.delete().where(table.c.created_at < utcnow() - ttl))
    return done.rowcount
