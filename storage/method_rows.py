"""The ``method_results`` rows of a stored verdict: written with it (``repository.save_results``)
and, for evidence computed on request (service/evidence.py), read and replaced later."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.text import clean_json
from storage.db import autocommit, dialect_insert
from storage.models import detection_methods, detection_results, method_results

_COLUMNS = ("is_ai_generated", "confidence_score", "processing_time", "result_details")
_upserts: dict[str, sa.Insert] = {}


def _dec(value: float, places: str) -> Decimal:
    return Decimal(str(value)).quantize(Decimal(places))


def _upsert(engine: AsyncEngine) -> sa.Insert:
    """The rows' upsert, built once per dialect and executed with the rows as parameters
    (building it for every verdict cost more than running it). Its RETURNING makes
    SQLAlchemy send the rows as one multi-row statement ("insertmanyvalues"), not one
    execute a row (five an image on PostgreSQL)."""
    name = engine.dialect.name
    if name not in _upserts:
        stmt = dialect_insert(engine, method_results)
        _upserts[name] = stmt.on_conflict_do_update(
            index_elements=[method_results.c.result_id, method_results.c.method_id],
            set_={k: stmt.excluded[k] for k in _COLUMNS},
        ).returning(method_results.c.method_id)
    return _upserts[name]


async def upsert(conn, engine: AsyncEngine, result_id: int, methods: list[dict]) -> None:
    """Write these rows of ``result_id`` in the caller's transaction: ``methods`` items carry
    method_id, is_ai_generated, confidence, processing_time and result_details."""
    rows = [{
        "result_id": result_id, "method_id": m["method_id"],
        "is_ai_generated": m["is_ai_generated"],
        "confidence_score": _dec(m["confidence"], "0.0001"),
        "processing_time": _dec(m["processing_time"], "0.001"),
        "result_details": clean_json(m["result_details"]),
    } for m in methods]
    # One row a method (the last, as one execute a row left it): a statement may not upsert
    # the same row twice.
    rows = list({row["method_id"]: row for row in rows}.values())
    if rows:  # every method's row in one statement
        await conn.execute(_upsert(engine), rows)


async def details(engine: AsyncEngine, result_id: int) -> dict[str, dict]:
    """Each method row of a result by method name: its ``method_id`` and ``result_details``."""
    async with autocommit(engine) as conn:
        rows = await conn.execute(
            sa.select(detection_methods.c.method_name, method_results.c.method_id,
                      method_results.c.result_details)
            .join(detection_methods, detection_methods.c.method_id == method_results.c.method_id)
            .where(method_results.c.result_id == result_id))
        return {r.method_name: {"method_id": r.method_id, "result_details": r.result_details or {}}
                for r in rows}


async def replace(engine: AsyncEngine, *, upload_id: int, result_id: int,
                  methods: list[dict]) -> bool:
    """Replace these rows of a stored result (items as :func:`upsert`'s), only while
    ``result_id`` still is the upload's result: False (nothing written) otherwise."""
    async with engine.begin() as conn:
        still = (await conn.execute(
            sa.select(detection_results.c.result_id)
            .where(detection_results.c.result_id == result_id,
                   detection_results.c.upload_id == upload_id))).first()
        if still is None:
            return False
        await upsert(conn, engine, result_id, methods)
    return True
