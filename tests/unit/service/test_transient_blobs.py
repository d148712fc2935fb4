"""The embedded runner and a blob store that fails for a moment: a transient OSError (the
folder read-only or full) runs the canvas again instead of failing the upload or judging it
without a method; a permanent one fails it with a reason that names no server path."""

from __future__ import annotations

import errno
import os

from testkit.images import encode, noisy_photo
from tests.conftest import run


def _judge(settings, monkeypatch, fail_with: OSError, times: int):
    from service import detection, ingest
    from storage import faults, migrate, repository
    from storage.context import open_storage

    monkeypatch.setattr(faults, "backoff", lambda *a, **k: 0.01)

    async def go():
        async with open_storage(settings) as storage:
            await migrate.upgrade(storage.engine)
            outcome = await ingest.ingest_bytes(storage, settings,
                                                data=encode(noisy_photo(seed=8), fmt="JPEG"),
                                                original_file_name="p.jpg", user_id=None)
            real_put, calls = storage.blobs.put, []

            def put(data, *, suffix=""):
                calls.append(suffix)
                if len(calls) <= times:
                    raise fail_with
                return real_put(data, suffix=suffix)

            monkeypatch.setattr(storage.blobs, "put", put)
            await detection.run_all_or_fail(storage, settings, outcome.upload_id)
            upload = await repository.get_upload(storage.engine, outcome.upload_id)
            result = await repository.result_for_upload(storage.engine, outcome.upload_id)
            return upload, result, len(calls)

    return run(go())


def test_a_blob_folder_full_for_a_moment_is_retried_not_failed(embedded, monkeypatch):
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(embedded.data_dir / "x"))
    upload, result, calls = _judge(embedded, monkeypatch, full, times=3)
    assert upload["status"] == "done" and upload["error"] is None
    assert calls > 3
    statuses = {name: m["status"] for name, m in result["methods"].items()}
    assert "error" not in statuses.values(), statuses  # ELA kept its picture


def test_a_permanent_blob_fault_fails_with_a_reason_without_a_path(embedded, monkeypatch):
    denied = OSError(errno.EACCES, os.strerror(errno.EACCES), "/srv/skygate/blobs/02/ab.png")
    upload, _, _ = _judge(embedded, monkeypatch, denied, times=10_000)
    assert upload["status"] == "failed"
    assert upload["error"] == "PermissionError: Permission denied" or \
        upload["error"] == "OSError: Permission denied"
    assert "/" not in upload["error"] and "Errno" not in upload["error"]
