"""Deliveries of a method or aggregate task, per (upload, stage): did a worker die on one?

A task records that it started (``running``) and that it ended. A delivery that finds the
previous one still running — it started and never ended: its worker process died (a
segfaulting native decoder, the OOM killer, a hard time limit) — counts a death. prepare
counts its own in ``uploads.delivery_count`` (repository.start_processing)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.clock import utcnow
from storage.db import autocommit, dialect_insert
from storage.models import stage_deliveries as table


async def begin(engine: AsyncEngine, upload_id: int, stage: str, *,
                may_count: bool = True) -> tuple[int, bool] | None:
    """Record that a delivery of ``stage`` started; returns (deaths so far, whether the
    previous delivery died), or None when the upload is gone. ``may_count``: False for a
    retry after a transient fault (its previous attempt ended by raising, nobody died)."""
    died = sa.and_(sa.literal(may_count), table.c.running)
    now = utcnow()
    insert = dialect_insert(engine, table).values(upload_id=upload_id, stage=stage, deaths=0,
                                                  running=True, started_at=now)
    # Every right-hand side reads the row as it was before this statement.
    upsert = insert.on_conflict_do_update(
        index_elements=[table.c.upload_id, table.c.stage],
        set_={"deaths": table.c.deaths + sa.case((died, 1), else_=0), "running": True,
              "started_at": now},
    ).returning(table.c.deaths)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # As a heartbeat (repository._heartbeat_commit): a crash may lose the last
                # fraction of a second of these, which at worst counts one death too few.
                await conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
            before = (await conn.execute(
                sa.select(table.c.deaths).where(table.c.upload_id == upload_id,
                                                table.c.stage == stage, table.c.running)
            )).scalar_one_or_none() if may_count else None
            deaths = (await conn.execute(upsert)).scalar_one()
    except IntegrityError:
        return None  # the foreign key: the upload was deleted
    return deaths, before is not None


async def end(engine: AsyncEngine, upload_id: int, stage: str) -> None:
    """Record that the running delivery of ``stage`` ended (with a result or an error)."""
    async with autocommit(engine) as conn:
        await conn.execute(table.update().where(table.c.upload_id == upload_id,
                                                table.c.stage == stage)
                           .values(running=False))


async def forget(conn, upload_id: int) -> None:
    """A new run of the upload (retry, rescore) starts with no deaths counted."""
    await conn.execute(table.delete().where(table.c.upload_id == upload_id))
