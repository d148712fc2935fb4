"""Ingest: validate once, store the original, insert the upload row (committed before any
detection is dispatched). Shared by every front door: the Celery ingest task, the HTTP API,
the batch scan and the CLI.

``check_image`` is the one image check (size limit, type by content, header, pixel limit,
Pillow verify). The API calls it on each streamed file before it accepts a request and
hands its answer to ``ingest_staged``; every other front door lets ``ingest_staged`` call
it. A refused file raises ``ImageRejected``, whose ``code`` the API returns as is."""

from __future__ import annotations

import asyncio
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


class ImageRejected(ValueError):
    """A file that is not an image SkyGate takes. ``code`` is stable: ``file_too_large``,
    ``unsupported_image_type`` (not an image format we read, by its first bytes) or
    ``invalid_image`` (a supported type that does not decode within the limits).
    ``file_type``/``mime`` are what the first bytes say, for the failed upload's row."""

    def __init__(self, code: str, message: str, file_type: str = "unknown",
                 mime: str = "application/octet-stream"):
        super().__init__(message)
        self.code, self.file_type, self.mime = code, file_type, mime


@dataclass(frozen=True)
class CheckedImage:
    """What ``check_image`` found in a file it accepted."""

    file_type: str
    mime: str


def size_refusal(size: int, settings: Settings) -> str | None:
    """Why a file of ``size`` bytes is refused, or None: the size rule of :func:`check_image`,
    also asked by a client before it sends a file anywhere (``skygate submit``)."""
    limit = settings.max_upload_bytes
    return f"file is {size:,} bytes, over the limit of {limit:,}" if size > limit else None


def check_image(staged: StagedBlob | None, settings: Settings) -> CheckedImage:
    """The image check every front door uses; raises ``ImageRejected``.

    ``staged`` is the finished staged file; ``None`` for a file whose bytes were not kept
    because it passed ``max_upload_bytes`` (the API stops keeping a streamed part there).
    Reads the file: from an event loop that must stay free, call it in a thread.
    """
    limit = settings.max_upload_bytes
    if staged is None:
        raise ImageRejected("file_too_large", f"file is over the limit of {limit:,} bytes")
    try:
        file_type, mime = sniff_format(staged.head)
        sniffed = None
    except InvalidImage as exc:
        file_type, mime, sniffed = "unknown", "application/octet-stream", exc
    if (too_large := size_refusal(staged.size, settings)) is not None:
        raise ImageRejected("file_too_large", too_large, file_type, mime)
    if sniffed is not None:
        raise ImageRejected("unsupported_image_type", str(sniffed))
    try:
        file_type, mime, _, _ = validate_image_file(staged.path, max_bytes=limit,
                                                    max_pixels=settings.max_image_pixels)
    except InvalidImage as exc:
        raise ImageRejected("invalid_image", str(exc), file_type, mime) from None
    return CheckedImage(file_type, mime)


@dataclass
class IngestOutcome:
    upload_id: int
    sha256: str
    status: str  # queued | duplicate | failed
    error: str | None = None
    needs_processing: bool = False
    # An earlier upload of the same content that could not be queued (the broker was down):
    # this one queues it (the same upload), and repo.mark_dispatched clears the mark.
    redispatch: bool = False


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
                        resume_unfinished: bool = True, checked: CheckedImage | None = None,
                        client_reference: str | None = None) -> IngestOutcome:
    """``ingest_bytes`` for a blob already streamed into the store's staging area (the HTTP
    API): the row is inserted first, then the file moved under its key as the upload's
    referenced original; whatever fails, no unreferenced file is left behind.

    ``checked``: ``check_image``'s answer when the caller ran it already (the API checks
    every file of a request before it ingests any); otherwise it runs here, and a refused
    file is recorded as a failed upload with the reason.
    ``resume_unfinished``: an earlier upload of the same content that is still queued or
    processing is run again (an interrupted scan); the API passes False (it is in flight).
    ``client_reference``: the caller's id for the file, stored on a new upload (a duplicate
    keeps the reference it was first sent with).
    """
    name = clean_file_name(original_file_name)
    try:
        sha = staged.finish()
        existing = await repo.find_upload_by_sha(storage.engine, sha256=sha, user_id=user_id)
        if existing is not None:
            return _earlier_upload(existing, sha, resume_unfinished)
        error = None
        try:
            checked = checked or check_image(staged, settings)
            file_type, mime = checked.file_type, checked.mime
        except ImageRejected as exc:
            error, file_type, mime = str(exc), exc.file_type, exc.mime
        suffix = "" if file_type == "unknown" else f".{file_type}"
        key = storage.blobs.key_for(sha, suffix)

        async def store_original(conn, new_id: int) -> None:
            await blobrefs.attach_in(conn, new_id, [(key, "original")],
                                     lambda: storage.blobs.commit(staged, key))

        # The row, its original's ref and the file in one transaction (the row first, the
        # file last): nobody sees, dedupes to or deletes an upload whose original is not
        # stored yet, and a fault leaves no row without its file (the file of a failed
        # commit is unreferenced: blobs gc). Oversized files are not kept: the row only.
        upload_id, created = await repo.create_upload(
            storage.engine, user_id=user_id, file_name=Path(key).name,
            original_file_name=name, file_path=key, file_size=staged.size,
            file_type=file_type, mime_type=mime, sha256=sha, client_reference=client_reference,
            then=store_original if staged.size <= settings.max_upload_bytes else None,
        )
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


def _earlier_upload(existing: dict, sha: str, resume_unfinished: bool) -> IngestOutcome:
    """The outcome when this user sent the same content before."""
    status = existing["status"]
    if status == "done":
        return IngestOutcome(existing["upload_id"], sha, "duplicate")
    if status == "failed":
        return IngestOutcome(existing["upload_id"], sha, "failed", existing["error"])
    if status == "queued" and existing["error"]:
        # Stored, but its message never reached the broker (repo.mark_undispatched).
        return IngestOutcome(existing["upload_id"], sha, "queued", needs_processing=True,
                             redispatch=True)
    # queued/processing from an interrupted run: process it again (idempotent writes).
    return IngestOutcome(existing["upload_id"], sha,
                         "queued" if resume_unfinished else "duplicate",
                         needs_processing=resume_unfinished)


def _read_at_most(path: str, size: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


async def ingest_request(storage: Storage, settings: Settings,
                         request: IngestRequest) -> IngestOutcome:
    if request.blob_key:
        data = await storage.blobs.aget(request.blob_key)
    else:
        # Read one byte past the limit at most: enough for validation to refuse it.
        data = await asyncio.to_thread(_read_at_most, request.path,
                                       settings.max_upload_bytes + 1)
    return await ingest_bytes(storage, settings, data=data,
                              original_file_name=request.original_file_name,
                              user_id=request.user_id)
