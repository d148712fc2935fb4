"""Webhooks in SQL (tables of migration 0016): a user's endpoints, the events written in the
same transaction as the verdict or failure they report (:func:`record_event`, called by
``repository.finish`` and ``repository.mark_failed``: a transactional outbox), and one
delivery row per (event, endpoint) that is both the work queue and the delivery log.

A delivery is *claimed* before each attempt (a lease, so two workers never send it at once
and a killed worker's claim runs out), then its attempt is recorded: delivered, or pending
again at ``next_attempt_at``, or failed once its retry window is over.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.clock import aware, utcnow
from schemas.text import clean_text
from storage.db import autocommit, dialect_insert
from storage.models import webhook_deliveries, webhook_events, webhooks

EVENT_COLUMNS = ("upload_id", "user_id", "client_reference", "original_file_name",
                 "processing_started_at", "upload_date")
"""The upload columns an event is made from (``RETURNING`` them from the finishing UPDATE)."""


def event_id_for(event_type: str, upload_id: int, run_started: datetime | None,
                 uploaded: datetime | None) -> str:
    """The stable id of one event: the same for every repetition of the step that reports
    it (a redelivered aggregate, a repeated failure report), new for a new run (retry,
    rescore: a new ``processing_started_at``)."""
    marker = f"{event_type}:{upload_id}:{_iso(run_started)}:{_iso(uploaded)}"
    return "evt_" + hashlib.sha256(marker.encode()).hexdigest()[:32]


def _iso(when: datetime | None) -> str:
    return aware(when).isoformat() if when is not None else "-"


async def record_event(conn, event_type: str, upload: dict, data: dict) -> str | None:
    """Write the event and a pending delivery to each active endpoint of the upload's owner
    that wants it, in the caller's transaction; returns the event id (None: no owner)."""
    if upload.get("user_id") is None:
        return None  # anonymous uploads (the CLI's) have nobody to tell
    event_id = event_id_for(event_type, upload["upload_id"], upload.get("processing_started_at"),
                            upload.get("upload_date"))
    now = utcnow()
    payload = {"upload_id": upload["upload_id"],
               "client_reference": upload.get("client_reference"),
               "file_name": upload.get("original_file_name"), **data}
    insert = dialect_insert(conn, webhook_events).values(
        event_id=event_id, event_type=event_type, user_id=upload["user_id"],
        upload_id=upload["upload_id"], payload=payload, created_at=now)
    await conn.execute(insert.on_conflict_do_nothing(index_elements=["event_id"]))
    hooks = await conn.execute(
        sa.select(webhooks.c.webhook_id, webhooks.c.events)
        .where(webhooks.c.user_id == upload["user_id"], webhooks.c.is_active.is_(True)))
    for hook in hooks.mappings():
        if event_type not in (hook["events"] or []):
            continue
        delivery = dialect_insert(conn, webhook_deliveries).values(
            event_id=event_id, webhook_id=hook["webhook_id"], status="pending",
            next_attempt_at=now, created_at=now)
        await conn.execute(delivery.on_conflict_do_nothing(
            index_elements=["event_id", "webhook_id"]))
    return event_id


# --- endpoints --------------------------------------------------------------------------------


async def create(engine: AsyncEngine, *, user_id: int, url: str, events: list[str],
                 secret: str, api_base: str | None, description: str | None) -> dict:
    async with engine.begin() as conn:
        webhook_id = (await conn.execute(webhooks.insert().values(
            user_id=user_id, url=url, events=sorted(set(events)), secret=secret,
            api_base=api_base, description=clean_text(description or "", limit=200) or None,
            created_at=utcnow()).returning(webhooks.c.webhook_id))).scalar_one()
    return await get(engine, webhook_id, user_id=user_id)


async def get(engine: AsyncEngine, webhook_id: int, *, user_id: int | None) -> dict | None:
    """One endpoint (of ``user_id``; None: whoever's)."""
    query = sa.select(webhooks).where(webhooks.c.webhook_id == webhook_id)
    if user_id is not None:
        query = query.where(webhooks.c.user_id == user_id)
    async with autocommit(engine) as conn:
        row = (await conn.execute(query)).mappings().first()
    return dict(row) if row else None


async def list_for(engine: AsyncEngine, user_id: int) -> list[dict]:
    async with autocommit(engine) as conn:
        rows = await conn.execute(sa.select(webhooks).where(webhooks.c.user_id == user_id)
                                  .order_by(webhooks.c.webhook_id))
        return [dict(r) for r in rows.mappings()]


async def delete(engine: AsyncEngine, webhook_id: int, *, user_id: int) -> bool:
    """Remove the endpoint and its delivery log (ON DELETE CASCADE)."""
    async with engine.begin() as conn:
        done = await conn.execute(webhooks.delete().where(
            webhooks.c.webhook_id == webhook_id, webhooks.c.user_id == user_id))
    return done.rowcount > 0


async def rotate_secret(engine: AsyncEngine, webhook_id: int, *, user_id: int, secret: str,
                        overlap: timedelta) -> dict | None:
    """The new secret signs from now on; the old one also signs until ``now + overlap``."""
    async with engine.begin() as conn:
        done = await conn.execute(
            webhooks.update().where(webhooks.c.webhook_id == webhook_id,
                                    webhooks.c.user_id == user_id)
            .values(previous_secret=webhooks.c.secret, secret=secret,
                    previous_secret_until=utcnow() + overlap))
    return await get(engine, webhook_id, user_id=user_id) if done.rowcount else None


# --- deliveries -------------------------------------------------------------------------------


async def due(engine: AsyncEngine, *, now: datetime | None = None, upload_id: int | None = None,
              limit: int = 500) -> list[int]:
    """Pending deliveries whose time has come and that nobody holds (oldest first)."""
    now = now or utcnow()
    d = webhook_deliveries
    query = (sa.select(d.c.delivery_id)
             .where(d.c.status == "pending", d.c.next_attempt_at <= now,
                    sa.or_(d.c.lease_until.is_(None), d.c.lease_until < now)))
    if upload_id is not None:
        query = query.join(webhook_events, webhook_events.c.event_id == d.c.event_id).where(
            webhook_events.c.upload_id == upload_id)
    async with autocommit(engine) as conn:
        rows = await conn.execute(query.order_by(d.c.next_attempt_at).limit(limit))
        return list(rows.scalars())


async def claim(engine: AsyncEngine, delivery_id: int, *, lease: timedelta) -> dict | None:
    """Hold a due delivery for one attempt; returns it with its event and endpoint, or None
    when it is not due, already delivered or failed, or held by someone else."""
    now = utcnow()
    d = webhook_deliveries
    async with engine.begin() as conn:
        claimed = (await conn.execute(
            d.update().where(d.c.delivery_id == delivery_id, d.c.status == "pending",
                             d.c.next_attempt_at <= now,
                             sa.or_(d.c.lease_until.is_(None), d.c.lease_until < now))
            .values(lease_until=now + lease).returning(d.c.delivery_id))).scalar_one_or_none()
        if claimed is None:
            return None
        row = (await conn.execute(
            sa.select(d, webhook_events.c.event_type, webhook_events.c.payload,
                      webhook_events.c.created_at.label("event_created_at"),
                      webhooks.c.url, webhooks.c.secret, webhooks.c.previous_secret,
                      webhooks.c.previous_secret_until, webhooks.c.api_base,
                      webhooks.c.is_active)
            .join(webhook_events, webhook_events.c.event_id == d.c.event_id)
            .join(webhooks, webhooks.c.webhook_id == d.c.webhook_id)
            .where(d.c.delivery_id == delivery_id))).mappings().first()
    return dict(row) if row else None


async def record_attempt(engine: AsyncEngine, delivery_id: int, *, delivered: bool,
                         status_code: int | None, error: str | None,
                         next_attempt_at: datetime | None) -> str:
    """Record one attempt and release the lease; returns the delivery's new status
    (``next_attempt_at`` None after a failed attempt: no retry left, it is failed)."""
    now = utcnow()
    status = "delivered" if delivered else ("pending" if next_attempt_at else "failed")
    d = webhook_deliveries
    async with engine.begin() as conn:
        await conn.execute(d.update().where(d.c.delivery_id == delivery_id).values(
            status=status, attempts=d.c.attempts + 1, last_attempt_at=now,
            last_status_code=status_code,
            last_error=clean_text(error, limit=1000) if error else None,
            delivered_at=now if delivered else None, lease_until=None,
            next_attempt_at=next_attempt_at if status == "pending" else None))
    return status


async def deliveries(engine: AsyncEngine, webhook_id: int, *, status: str | None = None,
                     limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
    """An endpoint's delivery log, newest first, with each event's id, type and upload."""
    d = webhook_deliveries
    conditions = [d.c.webhook_id == webhook_id]
    if status is not None:
        conditions.append(d.c.status == status)
    joined = d.join(webhook_events, webhook_events.c.event_id == d.c.event_id)
    async with autocommit(engine) as conn:
        total = (await conn.execute(sa.select(sa.func.count()).select_from(d)
                                    .where(*conditions))).scalar_one()
        rows = await conn.execute(
            sa.select(d, webhook_events.c.event_type, webhook_events.c.upload_id)
            .select_from(joined).where(*conditions)
            .order_by(d.c.delivery_id.desc()).limit(limit).offset(offset))
        return [dict(r) for r in rows.mappings()], total


async def redeliver(engine: AsyncEngine, webhook_id: int, delivery_id: int) -> bool:
    """Send a delivery again now, whatever its status (the event id stays the same)."""
    d = webhook_deliveries
    async with engine.begin() as conn:
        done = await conn.execute(
            d.update().where(d.c.delivery_id == delivery_id, d.c.webhook_id == webhook_id)
            .values(status="pending", next_attempt_at=utcnow(), lease_until=None,
                    delivered_at=None))
    return done.rowcount > 0


async def status_counts(engine: AsyncEngine) -> dict[str, int]:
    """Deliveries by status (every status, 0 when none)."""
    d = webhook_deliveries
    async with autocommit(engine) as conn:
        rows = await conn.execute(sa.select(d.c.status, sa.func.count()).group_by(d.c.status))
        return {"pending": 0, "delivered": 0, "failed": 0, **dict(rows.all())}


async def purge_log(engine: AsyncEngine, *, before: datetime) -> int:
    """Remove the events made before ``before`` and their deliveries (ON DELETE CASCADE),
    unless one of them is still pending; returns how many events went."""
    d = webhook_deliveries
    pending = sa.select(d.c.event_id).where(d.c.status == "pending")
    async with engine.begin() as conn:
        done = await conn.execute(webhook_events.delete().where(
            webhook_events.c.created_at < before, webhook_events.c.event_id.not_in(pending)))
    return done.rowcount
