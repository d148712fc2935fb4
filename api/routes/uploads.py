"""``/v1/uploads``: send images (streamed into the blob store's staging area, checked by
``service.ingest.check_image``, ingested, dispatched), list them, read one, delete one."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from api.auth import AUTH_ERRORS, FORBIDDEN, CallerDep, forbid, needs
from api.errors import ApiError, ErrorBody
from api.models import Accepted, AcceptedList, UploadOut, UploadPage, Verdict
from api.multipart import FilePart, discard, receive_files
from api.routes.common import NOT_FOUND, UploadId, own_upload
from api.waiting import Wait, until_finished
from schemas.clock import aware
from schemas.records import verdict_word
from schemas.text import clean_file_name, clean_text
from service import ingest
from service.dispatch import QueueUnavailable
from storage import accounts, audit, feedback, idempotency, listing
from storage import repository as repo
from storage.removal import delete_upload as remove_upload
from storage.removal import deletion_detail

router = APIRouter(tags=["uploads"])

# ingest.ImageRejected codes as HTTP statuses.
_REJECTED_STATUS = {"file_too_large": 413, "unsupported_image_type": 415, "invalid_image": 422}

_MULTIPART = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "array", "minItems": 1,
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or several images, each in a part named file"},
                   "client_reference": {"type": "array", "items": {"type": "string",
                                                                   "maxLength": 255},
                                        "description": "your id of each file, in the files' "
                                                       "order (stored, returned, filterable)"}},
}}}}}


def upload_out(row: dict, request: Request) -> UploadOut:
    has_result = row.get("result_id") is not None
    return UploadOut(
        upload_id=row["upload_id"], file_name=row["original_file_name"],
        file_size=row["file_size"], mime_type=row["mime_type"], sha256=row["sha256"],
        client_reference=row.get("client_reference"),
        status=row["status"], is_processed=row["is_processed"],
        upload_date=row["upload_date"], error=row["error"],
        verdict=verdict_word(row.get("is_ai_generated")) if has_result else None,
        confidence=float(row["confidence_score"]) if has_result else None,
        status_url=str(request.url_for("get_upload", upload_id=row["upload_id"])),
        result_url=str(request.url_for("get_result", upload_id=row["upload_id"])))


@router.post("/uploads", status_code=202, response_model=AcceptedList,
             operation_id="uploads_create",
             summary="Upload one or several images for detection",
             **needs("member", (
                 "Each part is taken or refused on its own: **202** when every part was "
                 "taken, **207** with one entry per part when some were refused, the "
                 "refusal's 4xx when none was taken. `?wait=N` (N ≤ 30) holds the answer "
                 "until the verdicts are ready: **200** with them, else 202 as without it. "
                 "An `Idempotency-Key` header makes a retried POST safe: the same key and "
                 "body answer with the first answer (header `Idempotent-Replayed: true`) "
                 "for 24 h; the same key with another body is 422."), extra=_MULTIPART),
             responses={**AUTH_ERRORS,
                        200: {"model": AcceptedList, "description": "?wait=N: every part "
                              "taken and judged within N seconds"},
                        207: {"model": AcceptedList, "description": "some parts taken, "
                                                                    "some refused"},
                        400: {"model": ErrorBody, "description": "malformed multipart"},
                        409: {"model": ErrorBody, "description": "a request with this "
                                                                 "Idempotency-Key is running"},
                        413: {"model": ErrorBody, "description": "a file or the body is too big"},
                        415: {"model": ErrorBody, "description": "not multipart, or no file "
                                                                 "is a supported image"},
                        422: {"model": ErrorBody, "description": "no image could be decoded, "
                                                                 "or an Idempotency-Key reused "
                                                                 "for another body"},
                        503: {"model": ErrorBody, "description": "the queue is unreachable"}})
async def create_uploads(
        request: Request, who: CallerDep, wait: Wait = 0,
        idempotency_key: Annotated[str | None, Header(
            alias="Idempotency-Key", min_length=1, max_length=255,
            description="your unique id for this request (a UUID), to retry it safely")
        ] = None):
    settings = request.app.state.settings
    storage = request.app.state.storage
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type",
                       f"send multipart/form-data with the images in fields named file, "
                       f"not {clean_text(ctype, limit=100) or 'no content type'}")
    # Each file streams into the blob store's staging area while it is hashed: memory per
    # request stays at a chunk, whatever the files weigh.
    parts = await receive_files(request, storage.blobs, max_files=settings.api_max_files,
                                max_bytes=settings.max_upload_bytes)
    claim = None
    try:
        if not parts:
            raise ApiError(400, "no_file", "no file part named 'file' in the request")
        if idempotency_key is not None:
            claim = {"key_id": who.key_id, "key": idempotency_key}
            fingerprint = _fingerprint(parts)
            stored = await idempotency.begin(
                storage.engine, **claim, request_hash=fingerprint,
                ttl=timedelta(seconds=settings.idempotency_ttl))
            if stored is not None:
                claim = None  # not ours to complete or release
                return _replay(stored, fingerprint)
        status, body = await _take(request, who, parts, wait)
        if claim is not None:
            await idempotency.complete(storage.engine, **claim, status_code=status, body=body)
            claim = None
        return JSONResponse(body, status_code=status)
    finally:
        discard(parts)
        if claim is not None:  # it failed: a retry with this key runs again
            await idempotency.release(storage.engine, **claim)


def _fingerprint(parts: list[FilePart]) -> str:
    """What makes two POSTs the same request: each part's name, content and reference."""
    digest = hashlib.sha256()
    for part in parts:
        content = part.staged.sha256 if part.staged is not None else f"over:{part.size}"
        digest.update(json.dumps([part.filename, content, part.client_reference]).encode())
    return digest.hexdigest()


def _replay(stored, fingerprint: str) -> JSONResponse:
    if stored.request_hash != fingerprint:
        raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used for "
                       "another request body; use a new key for a new request")
    if stored.status_code is None:
        raise ApiError(409, "idempotency_key_in_use", "a request with this Idempotency-Key "
                       "is still being answered; retry in a moment",
                       headers={"Retry-After": "1"})
    return JSONResponse(stored.body, status_code=stored.status_code,
                        headers={"Idempotent-Replayed": "true"})


async def _take(request: Request, who, parts: list[FilePart], wait: int) -> tuple[int, dict]:
    """Check, ingest and dispatch each part on its own; (HTTP status, body)."""
    storage, settings = request.app.state.storage, request.app.state.settings
    entries: list[Accepted] = []
    refusals: list[ingest.ImageRejected] = []
    dispatched: set[int] = set()
    for part in parts:
        name = clean_file_name(part.filename)
        try:
            image = await _check_part(part, settings)
        except ingest.ImageRejected as exc:
            refusals.append(exc)
            entries.append(Accepted(file_name=name, status="refused", code=exc.code,
                                    message=f"{name}: {exc}",
                                    client_reference=part.client_reference))
            continue
        outcome = await ingest.ingest_staged(
            storage, settings, staged=part.staged, original_file_name=name,
            user_id=who.user_id, resume_unfinished=False, checked=image,
            client_reference=part.client_reference)
        part.staged = None
        status = outcome.status
        if outcome.upload_id in dispatched:
            status = "duplicate"  # the same bytes twice in one request: one upload
        elif outcome.needs_processing:
            await _dispatch(request, outcome.upload_id, name,
                            was_undispatched=outcome.redispatch)
        dispatched.add(outcome.upload_id)
        entries.append(Accepted(
            upload_id=outcome.upload_id, file_name=name, status=status,
            client_reference=part.client_reference, error=outcome.error,
            status_url=str(request.url_for("get_upload", upload_id=outcome.upload_id)),
            result_url=str(request.url_for("get_result", upload_id=outcome.upload_id))))
    if not dispatched:  # nothing taken: the first refusal is the answer, every part listed
        request.app.state.metrics.uploads.labels("refused").inc(len(entries))
        first = refusals[0]
        raise ApiError(_REJECTED_STATUS[first.code], first.code, entries[0].message,
                       details=[e.model_dump(exclude_none=True) for e in entries])
    judged = await until_finished(request, sorted(dispatched), wait)
    if wait:
        entries = [await _with_verdict(request, e) for e in entries]
    for entry in entries:
        request.app.state.metrics.uploads.labels(entry.status).inc()
    body = AcceptedList(uploads=entries, accepted=len(entries) - len(refusals),
                        refused=len(refusals))
    status = 207 if refusals else (200 if wait and judged else 202)
    return status, body.model_dump(mode="json")


async def _with_verdict(request: Request, entry: Accepted) -> Accepted:
    """The entry with its upload's state now: done (verdict, P(AI)) or failed (reason)."""
    if entry.upload_id is None:
        return entry
    storage = request.app.state.storage
    row = await repo.get_upload(storage.engine, entry.upload_id)
    if row is None or row["status"] not in ("done", "failed"):
        return entry
    if row["status"] == "failed":
        return entry.model_copy(update={"status": "failed", "error": row["error"]})
    result = await repo.result_for_upload(storage.engine, entry.upload_id)
    verdict, p = await feedback.model_said(storage, entry.upload_id)
    return entry.model_copy(update={
        "status": "done" if entry.status == "queued" else entry.status, "verdict": verdict,
        "ai_probability": None if p is None else round(p, 4),
        "confidence": float(result["confidence_score"]) if result else None})


# The checks run in threads, a few at a time: bounded memory and a free event loop.
_CHECK_SLOTS = asyncio.Semaphore(2)


async def _check_part(part: FilePart, settings) -> ingest.CheckedImage:
    """``ingest.check_image`` on one part (raises ingest.ImageRejected)."""
    if part.staged is None:  # over the size limit: its bytes were not kept
        return ingest.check_image(None, settings)
    async with _CHECK_SLOTS:
        return await asyncio.to_thread(ingest.check_image, part.staged, settings)


async def _dispatch(request: Request, upload_id: int, name: str, *,
                    was_undispatched: bool) -> None:
    try:
        await request.app.state.dispatcher.start_detection(
            request.app.state.storage, upload_id, was_undispatched=was_undispatched)
    except QueueUnavailable:
        # Not failed: it stays queued. Sending the same bytes again queues this upload, and
        # the workers' recovery sweep re-sends it once it is overdue.
        raise ApiError(503, "queue_unavailable",
                       f"{name} was stored as upload {upload_id} but could not be queued; "
                       "send it again later (the same upload is queued then)",
                       headers={"Retry-After": "30"}) from None


@router.get("/uploads", response_model=UploadPage,
            summary="Your uploads, newest first", responses={**AUTH_ERRORS, **FORBIDDEN},
            **needs("member", "`owner` (someone else's uploads, or `*` for everyone's) needs "
                              "the operator role."))
async def list_uploads(
        request: Request, who: CallerDep,
        owner: Annotated[str | None, Query(
            max_length=50, description="operator or admin: whose uploads (a user name), or "
                                       "`*` for everyone's; yours by default")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        processed: bool | None = None,
        verdict: Verdict | None = None,
        since: Annotated[datetime | None, Query(description="uploaded on or after")] = None,
        client_reference: Annotated[str | None, Query(
            max_length=255, description="only uploads sent with this client_reference")
        ] = None):
    since = aware(since)
    engine = request.app.state.storage.engine
    whose = who.user_id
    if owner is not None and owner != who.username:
        if not who.reads_all:
            raise await forbid(request, who, "operator", "listing other users' uploads")
        found = None if owner == "*" else await accounts.get_user(engine, owner)
        if owner != "*" and found is None:
            raise ApiError(404, "user_not_found", f"no user named {clean_text(owner)!r}")
        whose = ... if owner == "*" else found["user_id"]
    rows, total = await listing.list_uploads(
        engine, owner=whose, since=since, processed=processed, verdict=verdict,
        client_reference=client_reference, limit=limit, offset=offset)
    nxt = None
    if offset + limit < total:
        nxt = str(request.url.include_query_params(offset=offset + limit, limit=limit))
    return UploadPage(items=[upload_out(r, request) for r in rows], total=total, limit=limit,
                      offset=offset, next=nxt)


@router.get("/uploads/{upload_id}", response_model=UploadOut,
            name="get_upload", summary="One upload and its processing state",
            **needs("member", "Members read their own uploads; operators and admins any."),
            responses={**AUTH_ERRORS, **NOT_FOUND})
async def get_upload(request: Request, who: CallerDep, upload_id: UploadId):
    return upload_out(await own_upload(request, who, upload_id, any_owner=True), request)


@router.delete("/uploads/{upload_id}", status_code=204,
               summary="Delete an upload, its results, its document and its blobs",
               response_class=Response, responses={**AUTH_ERRORS, **FORBIDDEN, **NOT_FOUND},
               **needs("member", "Members and operators delete their own uploads; admins "
                                 "any. Audited."))
async def delete_upload(request: Request, who: CallerDep, upload_id: UploadId):
    row = await own_upload(request, who, upload_id, any_owner=True)
    if row["user_id"] != who.user_id and not who.deletes_all:
        raise await forbid(request, who, "admin", "deleting another user's upload")
    storage = request.app.state.storage
    try:
        # The "ok" audit row is written in the deletion's own transaction.
        await remove_upload(storage, upload_id, actor=who.actor())
    except Exception as exc:  # rolled back: the failure gets a row of its own
        await audit.record_now(storage.engine, who.actor(), "upload.delete",
                               target=f"upload:{upload_id}", outcome="failed",
                               detail={**deletion_detail(row),
                                       "error": f"{type(exc).__name__}: {exc}"})
        raise
    return Response(status_code=204)
