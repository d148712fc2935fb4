"""``/v1`` routes: keys (login), uploads, results and their pictures. A caller only ever
sees their own uploads; anyone else's are 404, exactly like ids that do not exist."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.security import APIKeyHeader, HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field

from api.errors import ApiError, ErrorBody
from pipeline.decode import InvalidImage, sniff_format, validate_image_file
from schemas.text import clean_file_name, clean_text
from storage import accounts
from storage import repository as repo

log = logging.getLogger("skygate.api")
router = APIRouter()
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                           description="an API key from `skygate keys create`")
_basic = HTTPBasic(auto_error=False)

_ERRORS = {401: {"model": ErrorBody, "description": "missing, unknown, expired or revoked key"},
           429: {"model": ErrorBody, "description": "request limit reached (see Retry-After)"}}
_NOT_FOUND = {404: {"model": ErrorBody, "description": "no such upload (or not yours)"}}


class Caller(BaseModel):
    user_id: int
    key_id: int


async def caller(request: Request,
                 api_key: Annotated[str | None, Depends(_key_header)] = None) -> Caller:
    """Authenticate the X-API-Key header and count the request against the key's quota."""
    if not api_key:
        raise ApiError(401, "missing_api_key", "send your API key in the X-API-Key header",
                       headers={"WWW-Authenticate": "ApiKey"})
    settings = request.app.state.settings
    check = await accounts.check_key(request.app.state.storage.engine, api_key,
                                     period_seconds=settings.quota_period_seconds)
    request.state.user_id, request.state.key_id = check.user_id, check.key_id
    if check.code == "rate_limited":
        raise ApiError(429, check.code, check.message,
                       headers={"Retry-After": str(check.retry_after),
                                "X-RateLimit-Limit": str(check.limit),
                                "X-RateLimit-Remaining": "0"})
    if check.code:
        raise ApiError(401, check.code, check.message, headers={"WWW-Authenticate": "ApiKey"})
    return Caller(user_id=check.user_id, key_id=check.key_id)


CallerDep = Annotated[Caller, Depends(caller)]


# --- keys ---------------------------------------------------------------------------------


class NewKeyRequest(BaseModel):
    name: str = Field(default="api", min_length=1, max_length=100)
    request_limit: int = Field(default=1000, ge=1, le=10_000_000)
    expires_at: datetime | None = None


class NewKey(BaseModel):
    key_id: int
    api_key: str = Field(description="shown once; only a hash is stored")
    name: str
    request_limit: int
    expires_at: datetime | None


@router.post("/keys", status_code=201, response_model=NewKey, tags=["keys"],
             summary="Log in with username and password (HTTP Basic) and get a new API key",
             responses={401: {"model": ErrorBody, "description": "wrong username or password"},
                        429: {"model": ErrorBody,
                              "description": "too many failed logins (see Retry-After)"}})
async def create_key(request: Request, body: NewKeyRequest,
                     credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)] = None):
    from api.usage import client_ip

    engine = request.app.state.storage.engine
    settings = request.app.state.settings
    unauthorized = ApiError(401, "invalid_credentials", "wrong username or password",
                            headers={"WWW-Authenticate": 'Basic realm="skygate"'})
    if credentials is None:
        raise unauthorized
    # Count the attempt per username and per client IP before the password is checked; the
    # counts live in the database, so every API process sees them.
    subjects = {f"user:{clean_text(credentials.username, limit=150).lower()}":
                settings.login_max_failures,
                f"ip:{client_ip(request.scope, settings.trust_forwarded_for) or '-'}":
                settings.login_max_failures_per_ip}
    wait = await accounts.reserve_login_attempt(engine, subjects,
                                                window_seconds=settings.login_window_seconds)
    if wait is not None:
        raise ApiError(429, "too_many_failed_logins",
                       f"too many failed logins; retry after {wait}s",
                       headers={"Retry-After": str(wait)})
    user = await accounts.login(engine, credentials.username, credentials.password)
    if user is None:
        # Same answer for an unknown user and a wrong password.
        raise unauthorized
    await accounts.forgive_login_attempt(engine, list(subjects))
    request.state.user_id = user["user_id"]
    expires = body.expires_at
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    key, key_id = await accounts.create_key(engine, username=user["username"], name=body.name,
                                            limit=body.request_limit, expires_at=expires)
    request.state.key_id = key_id
    return NewKey(key_id=key_id, api_key=key, name=body.name, request_limit=body.request_limit,
                  expires_at=expires)


# --- uploads ------------------------------------------------------------------------------


class UploadOut(BaseModel):
    upload_id: int
    file_name: str
    file_size: int
    mime_type: str
    sha256: str | None
    status: str = Field(description="queued, processing, done or failed")
    is_processed: bool | None
    upload_date: datetime | None
    error: str | None = None
    verdict: Literal["ai", "real", "uncertain"] | None = None
    confidence: float | None = None
    status_url: str
    result_url: str


class Accepted(BaseModel):
    upload_id: int
    file_name: str
    status: str = Field(description="queued, or duplicate when you sent this content before")
    status_url: str
    result_url: str


class AcceptedList(BaseModel):
    uploads: list[Accepted]


class UploadPage(BaseModel):
    items: list[UploadOut]
    total: int
    limit: int
    offset: int
    next: str | None


def _verdict(value) -> str:
    return {True: "ai", False: "real", None: "uncertain"}[value]


def _upload_out(row: dict, request: Request) -> UploadOut:
    has_result = row.get("result_id") is not None
    return UploadOut(
        upload_id=row["upload_id"], file_name=row["original_file_name"],
        file_size=row["file_size"], mime_type=row["mime_type"], sha256=row["sha256"],
        status=row["status"], is_processed=row["is_processed"],
        upload_date=row["upload_date"], error=row["error"],
        verdict=_verdict(row.get("is_ai_generated")) if has_result else None,
        confidence=float(row["confidence_score"]) if has_result else None,
        status_url=str(request.url_for("get_upload", upload_id=row["upload_id"])),
        result_url=str(request.url_for("get_result", upload_id=row["upload_id"])))


_MULTIPART = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "array", "minItems": 1,
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or several images, each in a part named file"}},
}}}}}


@router.post("/uploads", status_code=202, response_model=AcceptedList, tags=["uploads"],
             summary="Upload one or several images for detection",
             openapi_extra=_MULTIPART,
             responses={**_ERRORS,
                        400: {"model": ErrorBody, "description": "malformed multipart"},
                        413: {"model": ErrorBody, "description": "a file or the body is too big"},
                        415: {"model": ErrorBody, "description": "not multipart, or a file "
                                                                 "is not a supported image"},
                        422: {"model": ErrorBody, "description": "an image that cannot be "
                                                                 "decoded"},
                        503: {"model": ErrorBody, "description": "the queue is unreachable"}})
async def create_uploads(request: Request, who: CallerDep):
    from api.multipart import discard, receive_files
    from service import ingest

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
    try:
        if not parts:
            raise ApiError(400, "no_file", "no file part named 'file' in the request")
        checked = [await _check_part(part, settings) for part in parts]
        accepted, dispatched = [], set()
        for part, (file_type, mime) in zip(parts, checked, strict=True):
            name = clean_file_name(part.filename)
            outcome = await ingest.ingest_staged(
                storage, settings, staged=part.staged, original_file_name=name,
                user_id=who.user_id, resume_unfinished=False, checked=(file_type, mime))
            part.staged = None
            status = outcome.status
            if outcome.upload_id in dispatched:
                status = "duplicate"  # the same bytes twice in one request: one upload
            elif outcome.needs_processing:
                await _dispatch(request, outcome.upload_id, name)
            dispatched.add(outcome.upload_id)
            accepted.append(Accepted(
                upload_id=outcome.upload_id, file_name=name, status=status,
                status_url=str(request.url_for("get_upload", upload_id=outcome.upload_id)),
                result_url=str(request.url_for("get_result", upload_id=outcome.upload_id))))
    finally:
        discard(parts)
    return AcceptedList(uploads=accepted)


# Full header checks run in threads, a few at a time: bounded memory and a free event loop.
_VALIDATION_SLOTS = asyncio.Semaphore(2)


async def _check_part(part, settings) -> tuple[str, str]:
    name = clean_file_name(part.filename)
    if part.too_large or part.staged is None:
        raise ApiError(413, "file_too_large",
                       f"{name}: file is over the limit of {settings.max_upload_bytes:,} bytes")
    try:
        sniff_format(part.staged.head)
    except InvalidImage as exc:
        raise ApiError(415, "unsupported_image_type", f"{name}: {exc}") from None
    try:
        async with _VALIDATION_SLOTS:
            file_type, mime, _, _ = await asyncio.to_thread(
                validate_image_file, part.staged.path, max_bytes=settings.max_upload_bytes,
                max_pixels=settings.max_image_pixels)
    except InvalidImage as exc:
        raise ApiError(422, "invalid_image", f"{name}: {exc}") from None
    return file_type, mime


async def _dispatch(request: Request, upload_id: int, name: str) -> None:
    storage = request.app.state.storage
    try:
        await request.app.state.dispatcher.dispatch(upload_id)
    except Exception as exc:  # noqa: BLE001 - the broker is down: say so, keep a trace
        reason = f"could not enqueue: {type(exc).__name__}: {exc}"
        await repo.mark_failed(storage.engine, upload_id, reason)
        log.error("upload %s not enqueued: %s", upload_id, reason,
                  extra={"upload_id": upload_id})
        raise ApiError(503, "queue_unavailable",
                       f"{name} was stored as upload {upload_id} but could not "
                       "be queued; it is marked failed and `skygate retry --failed` "
                       "re-queues it", headers={"Retry-After": "30"}) from None


@router.get("/uploads", response_model=UploadPage, tags=["uploads"],
            summary="Your uploads, newest first", responses=_ERRORS)
async def list_uploads(
        request: Request, who: CallerDep,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        processed: bool | None = None,
        verdict: Literal["ai", "real", "uncertain"] | None = None,
        since: Annotated[datetime | None, Query(description="uploaded on or after")] = None):
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    rows, total = await repo.list_uploads(
        request.app.state.storage.engine, owner=who.user_id, since=since, processed=processed,
        verdict=verdict, limit=limit, offset=offset)
    nxt = None
    if offset + limit < total:
        nxt = str(request.url.include_query_params(offset=offset + limit, limit=limit))
    return UploadPage(items=[_upload_out(r, request) for r in rows], total=total, limit=limit,
                      offset=offset, next=nxt)


async def _own_upload(request: Request, who: Caller, upload_id: int) -> dict:
    rows, _ = await repo.list_uploads(request.app.state.storage.engine, owner=who.user_id,
                                      upload_id=upload_id, limit=1)
    if not rows:
        raise ApiError(404, "upload_not_found", f"no upload {upload_id}")
    return rows[0]


# Ids are PostgreSQL integers: anything outside is simply not found, never a server error.
UploadId = Annotated[int, Path(ge=1, le=2_147_483_647)]


@router.get("/uploads/{upload_id}", response_model=UploadOut, tags=["uploads"],
            name="get_upload", summary="One upload and its processing state",
            responses={**_ERRORS, **_NOT_FOUND})
async def get_upload(request: Request, who: CallerDep, upload_id: UploadId):
    return _upload_out(await _own_upload(request, who, upload_id), request)


class MethodOut(BaseModel):
    verdict: Literal["ai", "real", "uncertain"]
    is_ai_generated: bool | None
    confidence: float
    status: str
    error: str | None = None


class ResultOut(BaseModel):
    upload_id: int
    result_id: int
    verdict: Literal["ai", "real", "uncertain"]
    is_ai_generated: bool | None
    confidence: float
    summary: str | None
    algorithm_version: str
    detection_date: datetime | None
    processing_time: float
    methods: dict[str, MethodOut]
    metadata: dict | None = Field(description="the detection_metadata document")
    ela_url: str | None
    heatmap_url: str | None


async def _result(request: Request, who: Caller, upload_id: int):
    upload = await _own_upload(request, who, upload_id)
    storage = request.app.state.storage
    if upload["status"] == "failed":
        raise ApiError(409, "upload_failed", f"upload {upload_id} failed: {upload['error']}")
    result = await repo.result_for_upload(storage.engine, upload_id)
    if result is None or upload["status"] != "done":
        raise ApiError(409, "not_ready", f"upload {upload_id} is {upload['status']}; "
                                         "poll its status_url",
                       headers={"Retry-After": "2"})
    doc = await storage.documents.get_detection_metadata(result["result_id"])
    return upload, result, doc


@router.get("/uploads/{upload_id}/result", response_model=ResultOut, tags=["uploads"],
            name="get_result", summary="The verdict, per-method results and metadata document",
            responses={**_ERRORS, **_NOT_FOUND,
                       409: {"model": ErrorBody, "description": "not ready yet, or failed"}})
async def get_result(request: Request, who: CallerDep, upload_id: UploadId):
    _, result, doc = await _result(request, who, upload_id)
    methods = {name: MethodOut(verdict=_verdict(m["is_ai_generated"]), **m)
               for name, m in result["methods"].items()}
    ela_key = doc.pixel_analysis.ela_results.ela_image_path if doc else None
    heatmap_key = doc.visual_anomalies.heatmap_path if doc else None
    return ResultOut(
        upload_id=upload_id, result_id=result["result_id"],
        verdict=_verdict(result["is_ai_generated"]), is_ai_generated=result["is_ai_generated"],
        confidence=float(result["confidence_score"]), summary=result["result_summary"],
        algorithm_version=result["algorithm_version"],
        detection_date=result["detection_date"],
        processing_time=float(result["processing_time"]), methods=methods,
        metadata=doc.model_dump(mode="json", exclude={"blob_keys"}) if doc else None,
        ela_url=str(request.url_for("get_ela", upload_id=upload_id)) if ela_key else None,
        heatmap_url=(str(request.url_for("get_heatmap", upload_id=upload_id)) if heatmap_key
                     else None))


_PNG = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}


async def _picture(request: Request, who: Caller, upload_id: int, which: str) -> Response:
    from storage.blobs import BlobNotFound

    _, _, doc = await _result(request, who, upload_id)
    key = None
    if doc is not None:
        key = (doc.pixel_analysis.ela_results.ela_image_path if which == "ela"
               else doc.visual_anomalies.heatmap_path)
    if not key:
        raise ApiError(404, f"{which}_not_available", f"upload {upload_id} has no {which} image")
    try:
        data = request.app.state.storage.blobs.get(key)
    except BlobNotFound:
        raise ApiError(404, f"{which}_not_available",
                       f"the {which} image of upload {upload_id} is gone") from None
    return Response(data, media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/uploads/{upload_id}/ela.png", tags=["uploads"], name="get_ela",
            response_class=Response, summary="The error-level-analysis image",
            responses={**_PNG, **_ERRORS, **_NOT_FOUND})
async def get_ela(request: Request, who: CallerDep, upload_id: UploadId):
    return await _picture(request, who, upload_id, "ela")


@router.get("/uploads/{upload_id}/heatmap.png", tags=["uploads"], name="get_heatmap",
            response_class=Response, summary="Where the pixel methods found anomalies",
            responses={**_PNG, **_ERRORS, **_NOT_FOUND})
async def get_heatmap(request: Request, who: CallerDep, upload_id: UploadId):
    return await _picture(request, who, upload_id, "heatmap")


@router.delete("/uploads/{upload_id}", status_code=204, tags=["uploads"],
               summary="Delete an upload, its results, its document and its blobs",
               response_class=Response, responses={**_ERRORS, **_NOT_FOUND})
async def delete_upload(request: Request, who: CallerDep, upload_id: UploadId):
    await _own_upload(request, who, upload_id)
    from storage.removal import delete_upload as remove

    await remove(request.app.state.storage, upload_id)
    return Response(status_code=204)


