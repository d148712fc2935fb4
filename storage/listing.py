"""Uploads as listed to people: newest first, each with its verdict columns (the API's
``GET /v1/uploads``, ``skygate results``)."""

from __future__ import annotations

from datetime import datetime
from types import EllipsisType

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.models import detection_results, uploads


async def list_uploads(engine: AsyncEngine, *, owner: int | EllipsisType | None = ...,
                       upload_id: int | None = None, since: datetime | None = None,
                       client_reference: str | None = None,
                       processed: bool | None = None, verdict: str | None = None,
                       limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
    """Uploads newest first, each with its verdict columns (None when there is no result yet).

    ``owner``: ``...`` for everyone (operators), ``None`` for the embedded/anonymous uploads,
    or a user id. ``verdict``: ai | real | uncertain. Returns (rows, total matching).
    """
    r = detection_results
    conditions = []
    if owner is not ...:
        conditions.append(uploads.c.user_id.is_(None) if owner is None
                          else uploads.c.user_id == owner)
    if upload_id is not None:
        conditions.append(uploads.c.upload_id == upload_id)
    if client_reference is not None:
        conditions.append(uploads.c.client_reference == client_reference)
    if since is not None:
        conditions.append(uploads.c.upload_date >= since)
    if processed is not None:
        conditions.append(uploads.c.is_processed.is_(processed))
    if verdict == "ai":
        conditions.append(r.c.is_ai_generated.is_(True))
    elif verdict == "real":
        conditions.append(r.c.is_ai_generated.is_(False))
    elif verdict == "uncertain":
        conditions.append(sa.and_(r.c.result_id.is_not(None), r.c.is_ai_generated.is_(None)))
    joined = uploads.outerjoin(r, r.c.upload_id == uploads.c.upload_id)
    query = (sa.select(uploads, r.c.result_id, r.c.is_ai_generated, r.c.confidence_score,
                       r.c.algorithm_version, r.c.result_summary, r.c.detection_date,
                       r.c.metadata_id)
             .select_from(joined).where(*conditions))
    async with engine.connect() as conn:
        total = (await conn.execute(
            sa.select(sa.func.count()).select_from(joined).where(*conditions))).scalar_one()
        rows = await conn.execute(
            query.order_by(uploads.c.upload_id.desc()).limit(limit).offset(offset))
        return [dict(row) for row in rows.mappings()], total
