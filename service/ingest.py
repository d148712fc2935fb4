"""Ingest: validate once, store the original, insert the upload row (committed before any
detection is dispatched). Shared by every front door: the Celery ingest task, the HTTP API,
the batch scan and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.decode import InvalidImage, sniff_format, validate_image_file
from schemas.messages import IngestRequest
from schemas.settings import Settings
from schemas.text import clean_file_name
from storage import blobrefs
from storage import repository as repo
from storage.blobs import StagedBlob
from storage.context import Storage

log = logging.getLogger("skygate.pipeline")


@dataclass
class IngestOutcome:
    upload_id: int
    sha256: str
    status: str  # queued | duplicate | failed
    error: str | None = None
    needs_processing: bool = False


async def ingest_bytes(storage: Storage, settings: Settings, *, data: bytes,
                       original_file_name: str, user_id: int | None,
                       resume_unfinished: bool = True) -> IngestOutcome:
    """Validate, store the blob, insert the upload (committed before anything is enqueued).

    Invalid bytes are still recorded, as a failed upload with the reason.
    """
    staged = storage.blobs.stage()
    try:
        staged.write(data)
        staged.finish()
    except BaseException:
        staged.discard()
        raise
    return await ingest_staged(storage, settings, staged=staged,
                               original_file_name=original_file_name, user_id=user_id,
                               resume_unfinished=resume_unfinished)


async def ingest_staged(storage: Storage, settings: Settings, *, staged: StagedBlob,
                        original_file_name: str, user_id: int | None,
                        resume_unfinished: bool = True, checked: tuple[str, str] | None = None,
                        ) -> IngestOutcome:
    """``ingest_bytes`` for a blob already streamed into the store's staging area (the HTTP
    API): the row is inserted first, then the file moved under its key as the upload's
    referenced original; whatever fails, no unreferenced file is left behind.

    ``checked``: ``(file_type, mime)`` when the caller validated the file already.
    ``resume_unfinished``: an earlier upload of the same content that is still queued or
    processing is run again (an interrupted scan); the API passes False (it is in flight).
    """
    name = clean_file_name(original_file_name)
    try:
        sha = staged.finish()
        existing = await repo.find_upload_by_sha(storage.engine, sha256=sha, user_id=user_id)
        if existing is not None:
            status = existing["status"]
            if status == "done":
                return IngestOutcome(existing["upload_id"], sha, "duplicate")
            if status == "failed":
                return IngestOutcome(existing["upload_id"], sha, "failed", existing["error"])
            # queued/processing from an interrupted run: process it again (idempotent writes).
            return IngestOutcome(existing["upload_id"], sha, "duplicate" if not
                                 resume_unfinished else "queued",
                                 needs_processing=resume_unfinished)
        error = None
        if checked is not None:
            file_type, mime = checked
        else:
            try:
                file_type, mime, _, _ = validate_image_file(
                    staged.path, max_bytes=settings.max_upload_bytes,
                    max_pixels=settings.max_image_pixels)
            except InvalidImage as exc:
                error = str(exc)
                try:
                    file_type, mime = sniff_format(staged.head)
                except InvalidImage:
                    file_type, mime = "unknown", "application/octet-stream"
        suffix = "" if file_type == "unknown" else f".{file_type}"
        key = storage.blobs.key_for(sha, suffix)
        upload_id, created = await repo.create_upload(
            storage.engine, user_id=user_id, file_name=Path(key).name,
            original_file_name=name, file_path=key, file_size=staged.size,
            file_type=file_type, mime_type=mime, sha256=sha,
        )
        if created and staged.size <= settings.max_upload_bytes:
            # Oversized files are not kept: the row records them, the blob store does not.
            try:
                await blobrefs.attach(storage, upload_id, key, "original",
                                      lambda: storage.blobs.commit(staged, key))
            except blobrefs.UploadGone:
                return IngestOutcome(upload_id, sha, "failed", "deleted while it was stored")
    finally:
        staged.discard()  # a no-op once committed
    if error:
        await repo.mark_failed(storage.engine, upload_id, error)
        log.warning("upload rejected", extra={"upload_id": upload_id,
                                              "file": name, "reason": error})
        return IngestOutcome(upload_id, sha, "failed", error)
    if not created:
        return IngestOutcome(upload_id, sha, "duplicate")
    return IngestOutcome(upload_id, sha, "queued", needs_processing=True)


async def ingest_request(storage: Storage, settings: Settings,
                         request: IngestRequest) -> IngestOutcome:
    if request.blob_key:
        data = storage.blobs.get(request.blob_key)
    else:
        # Read one byte past the limit at most: enough for validation to refuse it.
        with open(request.path, "rb") as fh:
            data = fh.read(settings.max_upload_bytes + 1)
    return await ingest_bytes(storage, settings, data=data,
                              original_file_name=request.original_file_name,
                              user_id=request.user_id)
