"""Deleting an upload and its audit row commit together (embedded SQLite, no servers)."""

from __future__ import annotations

import pytest

from testkit.images import encode, noisy_photo
from tests.conftest import run


async def _one_upload(storage, settings):
    from service import ingest
    from storage import migrate

    await migrate.upgrade(storage.engine)
    outcome = await ingest.ingest_bytes(storage, settings, data=encode(noisy_photo(seed=4)),
                                        original_file_name="a.png", user_id=None)
    return outcome.upload_id


def test_a_deletion_commits_with_its_audit_row(embedded):
    from storage import audit, removal
    from storage import repository as repo
    from storage.context import open_storage

    async def go():
        async with open_storage(embedded) as storage:
            upload_id = await _one_upload(storage, embedded)
            actor = audit.Actor(name="user:alice", user_id=None, source="127.0.0.1")
            assert await removal.delete_upload(storage, upload_id, actor=actor)
            rows, _ = await audit.query(storage.engine, action="upload.delete")
            return upload_id, rows, await repo.get_upload(storage.engine, upload_id)

    upload_id, [row], gone = run(go())
    assert gone is None
    assert (row["actor"], row["target"], row["outcome"]) == ("user:alice",
                                                             f"upload:{upload_id}", "ok")
    assert row["detail"]["file_name"] == "a.png" and len(row["detail"]["sha256"]) == 64


def test_a_deletion_that_fails_after_its_audit_row_keeps_both_out(embedded, monkeypatch):
    """The blob release fails after the row was deleted and the audit row inserted: the
    transaction rolls back, so the upload is still there and no "ok" row claims otherwise."""
    from storage import audit, blobrefs, removal
    from storage import repository as repo
    from storage.context import open_storage

    async def broken_release(*args, **kwargs):
        raise OSError("blob store unreachable")

    async def go():
        async with open_storage(embedded) as storage:
            upload_id = await _one_upload(storage, embedded)
            monkeypatch.setattr(blobrefs, "release_in", broken_release)
            with pytest.raises(OSError, match="unreachable"):
                await removal.delete_upload(storage, upload_id, actor=audit.SYSTEM)
            rows, _ = await audit.query(storage.engine, action="upload.delete")
            return rows, await repo.get_upload(storage.engine, upload_id)

    rows, still = run(go())
    assert rows == [] and still is not None
