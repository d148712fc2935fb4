"""The SQL operations of the pipeline, each one transaction, each safe to repeat.

A little over 300 lines on purpose: one job (the upload's rows through its lifecycle: create,
claim, heartbeat, results, finish, fail, recover), imported as ``repo`` by the service, the
front doors and the tests; splitting uploads from results would cut transactions that touch
both."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.clock import utcnow
from schemas.text import clean_file_name, clean_text, without_paths
from storage import deliveries, method_rows, webhooks
from storage.db import autocommit, dialect_insert
from storage.models import detection_methods, detection_results, method_results, uploads

_EVENT_COLUMNS = [uploads.c[name] for name in webhooks.EVENT_COLUMNS]


async def create_upload(engine: AsyncEngine, *, user_id: int | None, file_name: str,
                        original_file_name: str, file_path: str, file_size: int,
                        file_type: str, mime_type: str, sha256: str,
                        client_reference: str | None = None,
                        then: Callable[[object, int], Awaitable[object]] | None = None
                        ) -> tuple[int, bool]:
    """Insert an upload (status queued); returns (upload_id, created). Same content for the
    same owner returns the existing upload instead (uq_uploads_owner_sha256). ``then(conn,
    upload_id)``: the caller's statements for a new upload, committed with it."""
    try:
        async with engine.begin() as conn:
            upload_id = (await conn.execute(
                uploads.insert().values(
                    user_id=user_id, file_name=clean_file_name(file_name),
                    original_file_name=clean_file_name(original_file_name),
                    file_path=file_path, file_size=file_size, file_type=file_type,
                    mime_type=mime_type,
                    sha256=sha256, status="queued", stage="queued", stage_touched_at=utcnow(),
                    client_reference=client_reference,
                ).returning(uploads.c.upload_id)
            )).scalar_one()
            if then is not None:
                await then(conn, upload_id)
        return upload_id, True
    except IntegrityError:
        existing = await find_upload_by_sha(engine, sha256=sha256, user_id=user_id)
        if existing is None:
            raise
        return existing["upload_id"], False


async def find_upload_by_sha(engine: AsyncEngine, *, sha256: str, user_id: int | None):
    owner = uploads.c.user_id.is_(None) if user_id is None else uploads.c.user_id == user_id
    async with autocommit(engine) as conn:
        row = (await conn.execute(
            sa.select(uploads).where(uploads.c.sha256 == sha256, owner)
        )).mappings().first()
    return dict(row) if row else None


async def get_upload(engine: AsyncEngine, upload_id: int) -> dict | None:
    async with autocommit(engine) as conn:
        row = (await conn.execute(
            sa.select(uploads).where(uploads.c.upload_id == upload_id)
        )).mappings().first()
    return dict(row) if row else None


async def start_processing(engine: AsyncEngine, upload_id: int, *,
                           may_count: bool = True, only_unfinished: bool = False) -> int:
    """Mark the upload processing (stage preparing); returns its delivery count.

    A delivery is counted the first time, and again only when a worker really died on it:
    the previous prepare started (stage still ``preparing``) and never finished, and this
    run is a broker delivery (``may_count``), not a retry after a transient fault or a
    re-dispatch by the recovery sweep. ``only_unfinished`` (a recovery re-dispatch): an
    upload that is done or failed meanwhile is left alone, and 0 is returned.
    """
    row = await start_preparing(engine, upload_id, may_count=may_count,
                                only_unfinished=only_unfinished)
    return row.get("delivery_count", 0)


async def start_preparing(engine: AsyncEngine, upload_id: int, *, may_count: bool = True,
                          only_unfinished: bool = False) -> dict:
    """:func:`start_processing` returning the upload's row as it left it (``{}``: finished,
    left alone), so prepare reads it in the same statement."""
    died = sa.and_(sa.literal(may_count), uploads.c.stage == "preparing")
    bump = sa.case((sa.or_(uploads.c.delivery_count == 0, died), 1), else_=0)
    where = [uploads.c.upload_id == upload_id]
    if only_unfinished:
        where.append(uploads.c.status.in_(("queued", "processing")))
    async with autocommit(engine) as conn:  # one statement: atomic by itself
        row = (await conn.execute(
            uploads.update().where(*where)
            .values(delivery_count=uploads.c.delivery_count + bump, status="processing",
                    stage="preparing", stage_touched_at=utcnow(),
                    processing_started_at=sa.func.coalesce(uploads.c.processing_started_at,
                                                           utcnow()), error=None)
            .returning(*uploads.c)
        )).mappings().first()
    if row is None:
        if only_unfinished and await get_upload(engine, upload_id) is not None:
            return {}
        raise LookupError(f"upload {upload_id} does not exist")
    return dict(row)


async def touch(engine: AsyncEngine, upload_id: int, stage: str | None = None, *,
                read: bool = False) -> dict | None:
    """Record that a worker just worked on the upload (and, given, its new stage); ``read``:
    then its row as :func:`get_upload` reads it, for one in flight in the same statement."""
    values = {"stage_touched_at": utcnow()}
    if stage is not None:
        values["stage"] = stage
    stmt = uploads.update().where(uploads.c.upload_id == upload_id,
                                  uploads.c.status.in_(("queued", "processing"))).values(**values)
    async with autocommit(engine) as conn:
        done = await conn.execute(stmt.returning(*uploads.c) if read else stmt)
        if not read:
            return None
        row = done.mappings().first()
    return dict(row) if row else await get_upload(engine, upload_id)  # not in flight: as is


async def unfinished_untouched(engine: AsyncEngine, *, before: datetime,
                               limit: int = 1000) -> list[dict]:
    """Uploads still queued or processing whose stage nobody touched since ``before``."""
    touched = sa.func.coalesce(uploads.c.stage_touched_at, uploads.c.processing_started_at,
                               uploads.c.upload_date)
    query = (sa.select(uploads.c.upload_id, uploads.c.status, uploads.c.stage,
                       uploads.c.stage_touched_at, uploads.c.recoveries,
                       uploads.c.delivery_count, touched.label("touched"))
             .where(uploads.c.status.in_(("queued", "processing")), touched < before)
             .order_by(uploads.c.upload_id).limit(limit))
    async with autocommit(engine) as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def claim_recovery(engine: AsyncEngine, upload_id: int,
                         seen_touched: datetime | None, *, at: datetime | None = None) -> bool:
    """Claim a stuck upload for re-dispatch: true for exactly one caller, and only if nobody
    touched it since ``seen_touched`` (several sweepers never re-send it twice)."""
    same = (uploads.c.stage_touched_at.is_(None) if seen_touched is None
            else uploads.c.stage_touched_at == seen_touched)
    async with engine.begin() as conn:
        done = await conn.execute(
            uploads.update().where(uploads.c.upload_id == upload_id,
                                   uploads.c.status.in_(("queued", "processing")), same)
            .values(stage_touched_at=at or utcnow(), recoveries=uploads.c.recoveries + 1))
    return done.rowcount == 1


async def set_thumbnail(engine: AsyncEngine, upload_id: int, thumbnail_path: str, *,
                        stage: str | None = None) -> None:
    """Record the thumbnail; with ``stage``, also :func:`touch` it to that stage (in flight
    only) in the same statement."""
    async with autocommit(engine) as conn:
        await set_thumbnail_in(conn, upload_id, thumbnail_path, stage=stage)


async def set_thumbnail_in(conn, upload_id: int, thumbnail_path: str, *,
                           stage: str | None = None) -> None:
    """:func:`set_thumbnail` inside the caller's transaction ``conn``."""
    values: dict = {"thumbnail_path": thumbnail_path}
    if stage is not None:
        in_flight = uploads.c.status.in_(("queued", "processing"))
        values.update(stage=sa.case((in_flight, stage), else_=uploads.c.stage),
                      stage_touched_at=sa.case((in_flight, utcnow()),
                                               else_=uploads.c.stage_touched_at))
    await conn.execute(uploads.update().where(uploads.c.upload_id == upload_id)
                       .values(**values))


async def mark_failed(engine: AsyncEngine, upload_id: int, error: str, *,
                      only_unfinished: bool = False) -> bool:
    """Record the failure; with ``only_unfinished``, only if the upload is still queued or
    processing (a later, vaguer report never replaces the reason already recorded). The
    reason is stored without server paths (it is shown to API users)."""
    where = [uploads.c.upload_id == upload_id]
    if only_unfinished:
        where.append(uploads.c.status.in_(("queued", "processing")))
    reason = clean_text(without_paths(error), limit=2000)
    async with engine.begin() as conn:
        row = (await conn.execute(
            uploads.update().where(*where)
            .values(status="failed", error=reason, is_processed=False,
                    processing_completed_at=utcnow(), stage="failed", stage_touched_at=utcnow())
            .returning(*_EVENT_COLUMNS)
        )).mappings().first()
        if row is not None:  # the failure and its webhook event commit together
            await webhooks.record_event(conn, "upload.failed", dict(row),
                                        {"status": "failed", "error": reason})
    return row is not None


async def mark_undispatched(engine: AsyncEngine, upload_id: int, reason: str) -> None:
    """Its message could not be queued (the broker was down): it stays queued, for the next
    POST of the same bytes or the recovery sweep, with the reason shown meanwhile."""
    async with autocommit(engine) as conn:
        await conn.execute(uploads.update().where(uploads.c.upload_id == upload_id,
                                                  uploads.c.status == "queued")
                           .values(error=clean_text(without_paths(reason), limit=2000)))


async def mark_dispatched(engine: AsyncEngine, upload_id: int) -> None:
    """An upload :func:`mark_undispatched` marked was queued after all."""
    async with autocommit(engine) as conn:
        await conn.execute(uploads.update().where(uploads.c.upload_id == upload_id,
                                                  uploads.c.status == "queued")
                           .values(error=None))


async def reset_for_retry(engine: AsyncEngine, upload_id: int) -> None:
    """Back to queued for a new run (retry or rescore); a new run starts a new clock."""
    async with engine.begin() as conn:
        await deliveries.forget(conn, upload_id)
        await conn.execute(uploads.update().where(uploads.c.upload_id == upload_id)
                           .values(status="queued", error=None, delivery_count=0,
                                   stage="queued", stage_touched_at=utcnow(),
                                   processing_started_at=None, processing_completed_at=None))


async def failed_upload_ids(engine: AsyncEngine, *, since: datetime | None = None) -> list[int]:
    query = sa.select(uploads.c.upload_id).where(uploads.c.status == "failed")
    if since is not None:
        query = query.where(uploads.c.upload_date >= since)
    async with autocommit(engine) as conn:
        return list((await conn.execute(query.order_by(uploads.c.upload_id))).scalars())


async def judged_upload_ids(engine: AsyncEngine, *, algorithm_version: str | None) -> list[int]:
    """Uploads with a stored verdict (made by ``algorithm_version`` when given)."""
    query = (sa.select(uploads.c.upload_id)
             .join(detection_results, detection_results.c.upload_id == uploads.c.upload_id)
             .where(uploads.c.status == "done"))
    if algorithm_version is not None:
        query = query.where(detection_results.c.algorithm_version == algorithm_version)
    async with autocommit(engine) as conn:
        return list((await conn.execute(query.order_by(uploads.c.upload_id))).scalars())


async def active_methods(engine: AsyncEngine) -> dict[str, dict]:
    """Active methods by name: ``{"prnu": {"method_id": 2, "weight": 0.6}, ...}``."""
    async with autocommit(engine) as conn:
        rows = await conn.execute(
            sa.select(detection_methods.c.method_id, detection_methods.c.method_name,
                      detection_methods.c.weight)
            .where(detection_methods.c.is_active.is_(True))
            .order_by(detection_methods.c.method_id)
        )
        return {r.method_name: {"method_id": r.method_id, "weight": float(r.weight or 0)}
                for r in rows}


def _dec(value: float, places: str) -> Decimal:
    return Decimal(str(value)).quantize(Decimal(places))


_RESULT_COLUMNS = ("is_ai_generated", "confidence_score", "processing_time", "algorithm_version",
                   "result_summary", "detection_date")
_upserts: dict[str, sa.Insert] = {}


def _result_upsert(engine: AsyncEngine) -> sa.Insert:
    """The result row's upsert returning its id, built once per dialect and executed with
    its values as parameters: building it for every verdict (values coerced, the
    statement's cache key computed) cost more than running it (as method_rows')."""
    name = engine.dialect.name
    if name not in _upserts:
        stmt = dialect_insert(engine, detection_results)
        _upserts[name] = stmt.on_conflict_do_update(
            index_elements=[detection_results.c.upload_id],
            set_={k: stmt.excluded[k] for k in _RESULT_COLUMNS},
        ).returning(detection_results.c.result_id)
    return _upserts[name]


async def save_results(engine: AsyncEngine, *, upload_id: int, is_ai_generated: bool | None,
                       confidence: float, processing_time: float, algorithm_version: str,
                       summary: str, methods: list[dict]) -> int:
    """Write detection_results and every method_results row in one transaction.

    Idempotent: a repeated aggregate updates the same result row (unique upload_id) and the
    same method rows (unique result_id, method_id). ``methods`` items carry method_id,
    is_ai_generated, confidence, processing_time and result_details.
    """
    values = {
        "upload_id": upload_id, "is_ai_generated": is_ai_generated,
        "confidence_score": _dec(confidence, "0.0001"),
        "processing_time": _dec(processing_time, "0.001"),
        "algorithm_version": algorithm_version,
        "result_summary": clean_text(summary) if summary is not None else None,
        "detection_date": utcnow(),
    }
    async with engine.begin() as conn:
        result_id = (await conn.execute(_result_upsert(engine), values)).scalar_one()
        await method_rows.upsert(conn, engine, result_id, methods)
    return result_id


async def finish(engine: AsyncEngine, *, upload_id: int, result_id: int,
                 metadata_id: str, event: dict | None = None, anonymous: bool = False) -> bool:
    """Mark the upload done (False: it is gone); ``event`` (the verdict summary) becomes its
    ``upload.done`` webhook event in the same transaction (storage/webhooks.py). ``anonymous``:
    the caller read the upload with no owner (no event to write): on PostgreSQL one statement
    is tried first (checking that in the statement), a round trip instead of four."""
    if engine.dialect.name == "postgresql" and (anonymous or event is None):
        async with autocommit(engine) as conn:
            done = await conn.execute(_finish_in_one(upload_id, result_id, metadata_id,
                                                     anonymous_only=event is not None))
            if (found := done.first() is not None) or event is None:  # else: gone, or owned
                return found
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # both UPDATEs in one round trip
            row = (await conn.execute(_finish_in_one(upload_id, result_id, metadata_id,
                                                     anonymous_only=False))).mappings().first()
        else:  # SQLite has no data-modifying CTEs
            await conn.execute(detection_results.update()
                               .where(detection_results.c.result_id == result_id)
                               .values(metadata_id=metadata_id))
            row = (await conn.execute(
                uploads.update().where(uploads.c.upload_id == upload_id).values(**_done())
                .returning(*_EVENT_COLUMNS))).mappings().first()
        if row is not None and event is not None:
            await webhooks.record_event(conn, "upload.done", dict(row),
                                        {"status": "done", **event})
    return row is not None


def _done() -> dict:
    return {"status": "done", "is_processed": True, "error": None, "stage": "done",
            "stage_touched_at": utcnow(), "processing_completed_at": utcnow()}


def _finish_in_one(upload_id: int, result_id: int, metadata_id: str, *, anonymous_only: bool):
    """PostgreSQL: :func:`finish`'s two UPDATEs in one statement (atomic), the result's only
    with the upload's (a deleted upload's is gone); ``anonymous_only``: no owner only."""
    where = [uploads.c.upload_id == upload_id]
    if anonymous_only:
        where.append(uploads.c.user_id.is_(None))
    up = uploads.update().where(*where).values(**_done()).returning(*_EVENT_COLUMNS).cte("up")
    result = (detection_results.update()
              .where(detection_results.c.result_id == result_id,
                     sa.exists(sa.select(up.c.upload_id)))
              .values(metadata_id=metadata_id).cte("result"))
    return sa.select(*up.c).add_cte(result)


async def result_for_upload(engine: AsyncEngine, upload_id: int) -> dict | None:
    """The stored verdict with its per-method rows, keyed by method name."""
    # Two statements, but a transaction bought them no common snapshot (READ COMMITTED: each
    # statement its own): autocommit saves its BEGIN and ROLLBACK (aggregate reads it once
    # an image, and mostly finds nothing: one statement).
    async with autocommit(engine) as conn:
        result = (await conn.execute(
            sa.select(detection_results).where(detection_results.c.upload_id == upload_id)
        )).mappings().first()
        if result is None:
            return None
        rows = await conn.execute(
            sa.select(method_results, detection_methods.c.method_name)
            .join(detection_methods, detection_methods.c.method_id == method_results.c.method_id)
            .where(method_results.c.result_id == result["result_id"])
        )
        methods = {}
        for r in rows.mappings():
            details = r["result_details"] or {}
            methods[r["method_name"]] = {
                "is_ai_generated": r["is_ai_generated"],
                "confidence": float(r["confidence_score"]),
                "status": details.get("status", "ok"),
                "error": details.get("error"),
            }
    return {**dict(result), "methods": methods}


async def upload_statuses(engine: AsyncEngine, upload_ids: list[int]) -> dict[int, str]:
    """The status of each of these uploads (one statement; a deleted one is missing)."""
    async with autocommit(engine) as conn:
        rows = await conn.execute(sa.select(uploads.c.upload_id, uploads.c.status)
                                  .where(uploads.c.upload_id.in_(upload_ids)))
        return dict(rows.all())


async def verdict_counts(engine: AsyncEngine) -> dict[str, int]:
    """Stored verdicts by word: ``{"ai": n, "real": n, "uncertain": n}``."""
    flag = detection_results.c.is_ai_generated
    async with autocommit(engine) as conn:
        rows = await conn.execute(sa.select(flag, sa.func.count()).group_by(flag))
        counts = {"ai": 0, "real": 0, "uncertain": 0}
        for value, n in rows:
            counts[{True: "ai", False: "real"}.get(value, "uncertain")] += n
        return counts
