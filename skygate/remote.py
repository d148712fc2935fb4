"""Submitting files to a running cluster and following them to their verdicts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from schemas.settings import Settings


def submit_files(settings: Settings, files: list[Path], *, wait: bool, timeout: float):
    """Put each file in the cluster's blob store (``SKYGATE_BLOB_URL``: an S3 bucket, or the
    folder the workers mount), send ``skygate.ingest``; yield records."""
    from pipeline.decode import InvalidImage, sniff_format
    from storage.blobs import blob_store_for
    from workers import app

    blobs = blob_store_for(settings)
    pending = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield {"path": str(path), "sha256": None, "upload_id": None, "status": "skipped",
                   "is_ai_generated": None, "confidence": None, "methods": {},
                   "error": f"cannot read file: {exc}"}
            continue
        if len(data) > settings.max_upload_bytes:
            yield {"path": str(path), "sha256": None, "upload_id": None, "status": "failed",
                   "is_ai_generated": None, "confidence": None, "methods": {},
                   "error": f"file is {len(data):,} bytes, over the limit of "
                            f"{settings.max_upload_bytes:,}"}
            continue
        try:
            # The suffix ingest will give the original (by content), so it finds the object
            # already in place instead of storing a second copy under another name.
            suffix = "." + sniff_format(data[:4096])[0]
        except InvalidImage:
            suffix = ""
        try:
            key = blobs.put(data, suffix=suffix)
        except Exception as exc:  # noqa: BLE001 - the store is down or refuses: say which
            yield {"path": str(path), "sha256": None, "upload_id": None, "status": "failed",
                   "is_ai_generated": None, "confidence": None, "methods": {},
                   "error": f"cannot store in {blobs.describe()}: {exc}"}
            continue
        result = app.send_task("skygate.ingest",
                               kwargs={"blob_key": key, "original_file_name": path.name})
        pending.append((path, result))
    deadline = time.monotonic() + timeout
    for path, result in pending:
        try:
            ingest = result.get(timeout=max(1.0, deadline - time.monotonic()),
                                disable_sync_subtasks=False)
        except Exception as exc:  # noqa: BLE001
            yield {"path": str(path), "sha256": None, "upload_id": None, "status": "failed",
                   "is_ai_generated": None, "confidence": None, "methods": {},
                   "error": f"ingest did not answer: {exc}"}
            continue
        if not wait or ingest.get("status") in ("failed", "rejected"):
            yield {"path": str(path), "sha256": ingest.get("sha256"),
                   "upload_id": ingest.get("upload_id"),
                   "status": "failed" if ingest.get("status") in ("failed", "rejected")
                   else ingest.get("status"),
                   "is_ai_generated": None, "confidence": None, "methods": {},
                   "error": ingest.get("error")}
            continue
        yield asyncio.run(_wait_for(settings, path, ingest, deadline))


async def _wait_for(settings: Settings, path: Path, ingest: dict, deadline: float) -> dict:
    from skygate.batch import record_for
    from storage import repository as repo
    from storage.context import open_storage

    async with open_storage(settings) as storage:
        upload_id = ingest["upload_id"]
        while time.monotonic() < deadline:
            upload = await repo.get_upload(storage.engine, upload_id)
            if upload and upload["status"] in ("done", "failed"):
                break
            await asyncio.sleep(0.5)
        else:
            return {"path": str(path), "sha256": ingest["sha256"], "upload_id": upload_id,
                    "status": "failed", "is_ai_generated": None, "confidence": None,
                    "methods": {}, "error": "timed out waiting for the verdict"}
        status = "duplicate" if ingest["status"] == "duplicate" else "queued"
        return await record_for(storage, path=str(path), sha256=ingest["sha256"],
                                upload_id=upload_id, status=status)
