"""Deliveries of a method or aggregate task, per (upload, stage): did a worker die on one?

A task records that it started (``running``) and that it ended. A delivery that finds the
previous one still running — it started and never ended: its worker process died (a
segfaulting native decoder, the OOM killer, a hard time limit) — counts a death. prepare
counts its own in ``uploads.delivery_count`` (repository.start_processing)."""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.clock import utcnow
from storage.db import autocommit, dialect_insert
from storage.models import stage_deliveries as table
from storage.models import uploads


class Counted(NamedTuple):
    deaths: int  # so far
    redelivered: bool  # the previous delivery died
    touched: bool | None = None  # the upload's heartbeat (``touch``): None when not tried


def touch_if_same(upload_id: int, file_path: str, user_id: int | None):
    """The heartbeat of a task on the upload ``file_path`` and ``user_id`` name (an id can be
    reused: service.canvas.our_upload), only while it is in flight; returns its id if done."""
    return (uploads.update().where(
        uploads.c.upload_id == upload_id, uploads.c.file_path == file_path,
        uploads.c.user_id.is_not_distinct_from(user_id),
        uploads.c.status.in_(("queued", "processing")))
        .values(stage_touched_at=utcnow()).returning(uploads.c.upload_id))


async def begin(engine: AsyncEngine, upload_id: int, stage: str, *, may_count: bool = True,
                touch: tuple[str, int | None] | None = None, cap: int | None = None
                ) -> Counted | None:
    """Record that a delivery of ``stage`` started; returns the deaths so far and whether the
    previous delivery died, or None when the upload is gone. ``may_count``: False for a
    retry after a transient fault (its previous attempt ended by raising, nobody died).
    ``touch``: the canvas's ``(file_path, user_id)``: at once, the upload's heartbeat
    (:func:`touch_if_same`), unless the previous delivery died or the deaths reached ``cap``
    (a poison's redeliveries keep no upload alive)."""
    running = sa.and_(table.c.upload_id == upload_id, table.c.stage == stage, table.c.running)
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
        if engine.dialect.name == "postgresql":
            deaths, died_before, touched = await _begin_in_one(
                engine, upsert, running if may_count else None, upload_id, touch, cap)
        else:
            deaths, died_before, touched = await _begin_in_steps(
                engine, upsert, running if may_count else None, upload_id, touch, cap)
    except IntegrityError:
        return None  # the foreign key: the upload was deleted
    tried = touch is not None and not died_before and (cap is None or deaths < cap)
    return Counted(deaths, died_before, touched if tried else None)


async def _begin_in_one(engine, upsert, running, upload_id, touch, cap):
    """PostgreSQL: one statement on an autocommit connection (one round trip, where a
    transaction took six; three an image). Its CTEs all read the rows as they were before
    it: ``prev`` is the previous delivery, not this one's upsert."""
    up = upsert.cte("up")
    no = sa.false()
    prev = sa.select(table.c.deaths).where(running).cte("prev") if running is not None \
        else None
    died = sa.exists(sa.select(prev.c.deaths)) if prev is not None else no
    touched = no
    if touch is not None:
        beat = touch_if_same(upload_id, *touch).where(~died)
        if cap is not None:
            beat = beat.where(sa.exists(sa.select(up.c.deaths).where(up.c.deaths < cap)))
        touched = sa.exists(sa.select(beat.cte("touched").c.upload_id))
    # Not worth a disk flush (2-3 ms a task): the commit is seen by every session at once; a
    # server crash may lose the last fraction of a second of heartbeats, which at worst makes
    # an upload look idle that much longer (the sweep waits minutes) or counts one death too
    # few. set_config(..., true) holds for this statement's own transaction only (see end).
    query = sa.select(up.c.deaths, died, touched).where(
        sa.func.set_config("synchronous_commit", "off", True) == "off")
    async with autocommit(engine) as conn:
        return tuple((await conn.execute(query)).one())


async def _begin_in_steps(engine, upsert, running, upload_id, touch, cap):
    """SQLite (no data-modifying CTEs, no round trips to save): one transaction."""
    async with engine.begin() as conn:
        before = (await conn.execute(sa.select(table.c.deaths).where(running))
                  ).scalar_one_or_none() if running is not None else None
        deaths = (await conn.execute(upsert)).scalar_one()
        touched = None
        if touch is not None and before is None and (cap is None or deaths < cap):
            touched = (await conn.execute(touch_if_same(upload_id, *touch))
                       ).first() is not None
    return deaths, before is not None, touched


async def end(engine: AsyncEngine, upload_id: int, stage: str) -> None:
    """Record that the running delivery of ``stage`` ended (with a result or an error)."""
    ended = table.update().where(table.c.upload_id == upload_id, table.c.stage == stage)
    if engine.dialect.name == "postgresql":
        # Not worth a disk flush either (begin's reason; a lost end counts at worst one death
        # too many, which the cap absorbs): set_config(..., true) holds for this statement's
        # own transaction, so its commit skips the flush — one round trip, where SET LOCAL
        # would need a transaction around the statement (four).
        ended = ended.where(sa.func.set_config("synchronous_commit", "off", True) == "off")
    async with autocommit(engine) as conn:
        await conn.execute(ended.values(running=False))


async def forget(conn, upload_id: int) -> None:
    """A new run of the upload (retry, rescore) starts with no deaths counted."""
    await conn.execute(table.delete().where(table.c.upload_id == upload_id))
