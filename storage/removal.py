"""Deleting an upload everywhere: SQL rows (the seed's ON DELETE CASCADE takes the result and
method rows, and the upload's blob references), the metadata document, and every blob whose
last reference this was (storage/blobrefs.py explains the counting and its locks), and its
cached result. The audit row of a deletion commits with it, or not at all. The one way to
delete an upload: the API's DELETE, the tests."""

from __future__ import annotations

import sqlalchemy as sa

from storage import audit, blobrefs
from storage import repository as repo
from storage.cache import forget_result
from storage.context import Storage
from storage.models import detection_results, uploads


def deletion_detail(upload: dict) -> dict:
    """What an ``upload.delete`` audit row says of the upload it removed."""
    return {"owner_user_id": upload["user_id"], "sha256": upload["sha256"],
            "file_name": upload["original_file_name"]}


async def _result_id(storage: Storage, upload_id: int) -> int | None:
    async with storage.engine.connect() as conn:
        return (await conn.execute(
            sa.select(detection_results.c.result_id)
            .where(detection_results.c.upload_id == upload_id))).scalar()


async def delete_upload(storage: Storage, upload_id: int, *,
                        actor: audit.Actor | None = None) -> bool:
    """Delete the upload; with ``actor``, its ``upload.delete`` audit row is written in the
    same transaction as the row deletion (never a deletion without its row, nor the reverse).
    Then its cached result is forgotten. False when there was no such upload."""
    removed = await _delete(storage, upload_id, actor)
    await forget_result(storage.cache, upload_id)
    return removed


async def _delete(storage: Storage, upload_id: int, actor: audit.Actor | None) -> bool:
    upload = await repo.get_upload(storage.engine, upload_id)
    if upload is None:
        return False
    result_id = await _result_id(storage, upload_id)
    keys: set[str] = {upload["file_path"]}
    if upload["thumbnail_path"]:
        keys.add(upload["thumbnail_path"])
    if result_id is not None:
        doc = await storage.documents.get_detection_metadata(result_id)
        if doc is not None:
            # Documents written before reference counting name their blobs here.
            keys.update(v for v in doc.blob_keys.values() if v)
    async with storage.engine.begin() as conn:
        # Lock the upload row first: a writer's reference insert (its foreign-key check)
        # waits for this transaction, then fails, so no blob of this upload appears later.
        if conn.dialect.name == "sqlite":
            await conn.execute(uploads.update().where(uploads.c.upload_id == upload_id)
                               .values(status="deleting"))
        gone = (await conn.execute(
            sa.select(uploads.c.upload_id).where(uploads.c.upload_id == upload_id)
            .with_for_update())).first() is None
        if gone:
            return False
        keys |= await blobrefs.keys_of(conn, upload_id)
        result_id = (await conn.execute(
            sa.select(detection_results.c.result_id)
            .where(detection_results.c.upload_id == upload_id))).scalar() or result_id
        await conn.execute(uploads.delete().where(uploads.c.upload_id == upload_id))
        if actor is not None:
            await audit.record(conn, actor, "upload.delete", target=f"upload:{upload_id}",
                               detail=deletion_detail(upload))
        await blobrefs.release_in(conn, storage, keys)
    if result_id is not None:
        # After the rows: an aggregate that was in flight writes its document only while the
        # upload exists and removes it again if the upload vanished meanwhile.
        await storage.documents.delete_detection_metadata(result_id)
    return True
