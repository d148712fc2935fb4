"""Feedback: an upload's owner labels it ``ai`` or ``real`` (table ``feedback``, migration 0011).

One row per (upload, user): saving again replaces the label and note (``created_at`` stays,
``updated_at`` moves). Each save also freezes what the model said at that moment, the
verdict word and P(AI), so an export can count where people and the model disagree even
after a later rescore. The caller checks ownership (the API's ``own_upload``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.clock import utcnow
from schemas.records import verdict_word
from schemas.text import clean_text
from storage import repository as repo
from storage.db import dialect_insert
from storage.models import FEEDBACK_LABELS, feedback, uploads, users

NOTE_LIMIT = 1000
"""Characters of a note kept (the API refuses longer ones)."""

LABELS = FEEDBACK_LABELS


def clean_note(note: str | None) -> str | None:
    """A note as stored: no control characters or lone surrogates, at most NOTE_LIMIT."""
    text = clean_text(note or "", limit=NOTE_LIMIT)
    return text or None


async def model_said(storage, upload_id: int) -> tuple[str | None, float | None]:
    """(verdict word, P(AI)) of a done upload's stored result; (None, None) before that.

    P(AI) is the ensemble's, from the detection_metadata document; without one, a decided
    verdict's confidence is P(its side) (as ``skygate eval`` reads it).
    """
    upload = await repo.get_upload(storage.engine, upload_id)
    if upload is None or upload["status"] != "done":
        return None, None
    result = await repo.result_for_upload(storage.engine, upload_id)
    if result is None:
        return None, None
    verdict = result["is_ai_generated"]
    p = None
    doc = await storage.documents.get_detection_metadata(result["result_id"])
    if doc is not None and doc.aggregated_results is not None:
        p = getattr(doc.aggregated_results, "ai_probability", None)
    if p is None and verdict is not None:
        c = float(result["confidence_score"])
        p = c if verdict else 1.0 - c
    return verdict_word(verdict).value, None if p is None else min(1.0, max(0.0, float(p)))


def _row(row) -> dict:
    out = dict(row)
    if out.get("ai_probability") is not None:
        out["ai_probability"] = float(out["ai_probability"])
    return out


async def save(engine: AsyncEngine, *, upload_id: int, user_id: int, label: str,
               note: str | None, verdict: str | None = None,
               ai_probability: float | None = None) -> dict:
    """Insert or replace the (upload, user) feedback; returns the stored row."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, not {label!r}")
    values = {
        "label": label,
        "note": clean_note(note),
        "verdict": verdict,
        "ai_probability": (None if ai_probability is None
                           else Decimal(str(ai_probability)).quantize(Decimal("0.0001"))),
        "updated_at": utcnow(),
    }
    stmt = dialect_insert(engine, feedback).values(upload_id=upload_id, user_id=user_id, **values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[feedback.c.upload_id, feedback.c.user_id],
        set_={k: stmt.excluded[k] for k in values},
    ).returning(*feedback.c)
    async with engine.begin() as conn:
        return _row((await conn.execute(stmt)).mappings().one())


async def get(engine: AsyncEngine, *, upload_id: int, user_id: int) -> dict | None:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(feedback).where(
            feedback.c.upload_id == upload_id, feedback.c.user_id == user_id))).mappings().first()
    return _row(row) if row else None


async def for_export(engine: AsyncEngine, *, since: datetime | None = None,
                     username: str | None = None) -> list[dict]:
    """Every feedback row (oldest change first) with its upload's sha256, blob key, file
    type and name, and the user's name. ``since``: changed on or after; ``username``: one
    user's only."""
    conditions = []
    if since is not None:
        conditions.append(feedback.c.updated_at >= since)
    if username is not None:
        conditions.append(users.c.username == username)
    query = (sa.select(feedback, uploads.c.sha256, uploads.c.file_path, uploads.c.file_type,
                       uploads.c.mime_type, uploads.c.original_file_name, users.c.username)
             .select_from(feedback.join(uploads, uploads.c.upload_id == feedback.c.upload_id)
                          .join(users, users.c.user_id == feedback.c.user_id))
             .where(*conditions)
             .order_by(feedback.c.updated_at, feedback.c.feedback_id))
    async with engine.connect() as conn:
        return [_row(r) for r in (await conn.execute(query)).mappings()]
