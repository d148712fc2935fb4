"""Deleting an upload everywhere: SQL rows (the seed's ON DELETE CASCADE takes the result and
method rows), the metadata document, and the blobs no other upload still uses."""

from __future__ import annotations

import sqlalchemy as sa

from storage import repository as repo
from storage.context import Storage
from storage.models import detection_results, uploads


async def delete_upload(storage: Storage, upload_id: int) -> bool:
    upload = await repo.get_upload(storage.engine, upload_id)
    if upload is None:
        return False
    async with storage.engine.connect() as conn:
        result_id = (await conn.execute(
            sa.select(detection_results.c.result_id)
            .where(detection_results.c.upload_id == upload_id))).scalar()
    keys: dict[str, str] = {"original": upload["file_path"]}
    if upload["thumbnail_path"]:
        keys["thumbnail"] = upload["thumbnail_path"]
    if result_id is not None:
        doc = await storage.documents.get_detection_metadata(result_id)
        if doc is not None:
            keys.update(doc.blob_keys)
        await storage.documents.delete_detection_metadata(result_id)
    async with storage.engine.begin() as conn:
        await conn.execute(uploads.delete().where(uploads.c.upload_id == upload_id))
        # Blobs are content-addressed: the same image uploaded by someone else shares them.
        shared = (await conn.execute(
            sa.select(sa.func.count()).select_from(uploads)
            .where(uploads.c.sha256 == upload["sha256"]))).scalar_one()
    for name, key in keys.items():
        # The manifest names this upload, so it is never shared.
        if shared == 0 or name == "manifest":
            storage.blobs.delete(key)
    return True
