"""Transient vs permanent faults (storage.faults), the recovery sweep's claim, the start-up
wait. Fast: no cluster. The fault-injection tests with real services are test_fault_recovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from storage import faults
from tests.conftest import run


def _asyncpg(cls_name: str, message: str):
    import asyncpg

    return getattr(asyncpg.exceptions, cls_name)(message)


def _dbapi(orig, *, invalidated=False):
    from sqlalchemy.exc import DBAPIError

    return DBAPIError("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    TimeoutError("timed out"),
    # "the database system is starting up" arrives wrapped in a plain DBAPIError.
    lambda: _dbapi(_asyncpg("CannotConnectNowError", "the database system is starting up")),
    lambda: _dbapi(_asyncpg("AdminShutdownError", "terminating connection due to "
                            "administrator command")),
    lambda: _dbapi(_asyncpg("ConnectionDoesNotExistError", "connection was closed in the "
                            "middle of operation")),
    lambda: _dbapi(Exception("whatever"), invalidated=True),
    lambda: __import__("pymongo.errors").errors.AutoReconnect("connection refused"),
    lambda: __import__("pymongo.errors").errors.NotPrimaryError("not primary"),
    lambda: __import__("pymongo.errors").errors.ServerSelectionTimeoutError("no servers"),
    lambda: __import__("pymongo.errors").errors.OperationFailure("shutting down", code=91),
    lambda: __import__("kombu.exceptions").exceptions.OperationalError("Error 111 connecting"),
    lambda: __import__("redis.exceptions").exceptions.ConnectionError("Connection refused"),
    lambda: __import__("amqp.exceptions").exceptions.RecoverableConnectionError("lost"),
])
def test_transient_faults_are_retried(exc):
    exc = exc() if callable(exc) else exc
    assert faults.is_transient(exc), repr(exc)


@pytest.mark.parametrize("exc", [
    lambda: __import__("sqlalchemy.exc").exc.IntegrityError(
        "INSERT", {}, _asyncpg("UniqueViolationError", "duplicate key value")),
    lambda: __import__("sqlalchemy.exc").exc.DataError(
        "INSERT", {}, _asyncpg("InvalidTextRepresentationError", "invalid input syntax")),
    lambda: __import__("pymongo.errors").errors.DuplicateKeyError("E11000 duplicate key"),
    lambda: ValueError("bad data"),
    lambda: KeyError("no such key"),
    lambda: _dbapi(_asyncpg("UndefinedTableError", "relation does not exist")),
])
def test_permanent_faults_fail_with_the_reason(exc):
    exc = exc() if callable(exc) else exc
    assert not faults.is_transient(exc), repr(exc)


def test_a_constraint_violation_wrapped_in_a_connection_error_stays_permanent():
    from sqlalchemy.exc import IntegrityError

    inner = IntegrityError("INSERT", {}, _asyncpg("UniqueViolationError", "duplicate key"))

    def save():
        try:
            raise inner
        except IntegrityError as e:
            raise RuntimeError("save failed") from e

    with pytest.raises(RuntimeError, match="save failed") as outer:
        save()
    assert not faults.is_transient(outer.value)


def test_backoff_grows_with_jitter_and_a_cap():
    delays = [faults.backoff(n, base=1, cap=30) for n in range(10)]
    assert 0.5 <= delays[0] <= 1.0
    assert all(d <= 30 for d in delays)
    assert 15 <= delays[9] <= 30
    assert len({round(faults.backoff(3), 6) for _ in range(20)}) > 1


def test_retrying_retries_transient_faults_and_raises_permanent_ones_at_once():
    calls = {"n": 0}

    async def flaky():
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionRefusedError(111, "Connection refused")
        return "ok"

    async def broken():
        calls["n"] += 1
        raise ValueError("bad data")

    async def go():
        assert await faults.retrying(flaky, attempts=5) == "ok"
        assert calls["n"] == 3
        calls["n"] = 0
        with pytest.raises(ValueError, match="bad data"):
            await faults.retrying(broken, attempts=5)
        assert calls["n"] == 1

    run(go())


def test_sweep_resends_only_overdue_uploads_once_and_dry_run_sends_nothing(tmp_path):
    """The sweep on a real (SQLite) database: claims are exclusive, counting is honest."""
    from schemas.settings import Settings
    from service.recovery import sweep
    from storage import migrate
    from storage import repository as repo
    from storage.context import build_storage

    settings = Settings(data_dir=tmp_path, stuck_after=60)
    sent = []

    class FakeApp:
        class conf:
            task_queues = ()

        def send_task(self, name, args=(), kwargs=None, **options):
            sent.append((name, tuple(args), kwargs))

        def connection_for_write(self):
            raise ConnectionRefusedError("no broker here")

    async def go():
        storage = build_storage(settings)
        engine = storage.engine
        try:
            await migrate.upgrade(engine)
            ids = []
            for i in range(3):
                uid, _ = await repo.create_upload(
                    engine, user_id=None, file_name=f"{i}.png", original_file_name=f"{i}.png",
                    file_path=f"k{i}", file_size=1, file_type="png", mime_type="image/png",
                    sha256=f"{i:064d}")
                ids.append(uid)
            later = datetime.now(UTC) + timedelta(seconds=120)
            # 0: queued, old; 1: processing, touched "now"; 2: done.
            await repo.start_processing(engine, ids[1])
            await repo.finish(engine, upload_id=ids[2], result_id=0, metadata_id="x")
            # Not overdue yet at "now".
            assert await sweep(storage, settings, FakeApp()) == []
            # Two minutes later, upload 0 and 1 are overdue; the broker cannot be asked, so
            # the sweep waits for 6 x stuck_after unless it is that late.
            assert await sweep(storage, settings, FakeApp(), now=later) == []
            much_later = datetime.now(UTC) + timedelta(seconds=7 * 60)
            dry = await sweep(storage, settings, FakeApp(), dry_run=True, now=much_later)
            assert [d["upload_id"] for d in dry] == ids[:2] and sent == []
            done = await sweep(storage, settings, FakeApp(), now=much_later)
            assert [d["upload_id"] for d in done] == ids[:2]
            assert sent == [("skygate.prepare", (ids[0],), {"recovered": True}),
                            ("skygate.prepare", (ids[1],), {"recovered": True})]
            # Claimed: a second sweeper at the same moment re-sends nothing.
            assert await sweep(storage, settings, FakeApp(), now=much_later) == []
            row = await repo.get_upload(engine, ids[0])
            assert row["recoveries"] == 1
            # Delivery counting: a recovery re-dispatch never counts; a redelivery after a
            # prepare that started and never finished does.
            assert await repo.start_processing(engine, ids[1], may_count=False) == 1
            assert await repo.start_processing(engine, ids[1], may_count=True) == 2
        finally:
            await storage.close()

    run(go())


def test_startup_waits_for_a_database_that_comes_up(tmp_path, monkeypatch):
    """wait_for_services retries until the database answers (here: after two refusals)."""
    from schemas.settings import Settings
    from service import recovery

    settings = Settings(data_dir=tmp_path, startup_wait=30)
    real = faults.retrying
    attempts = {"n": 0}

    async def flaky_retrying(fn, *args, **kwargs):
        async def wrapped(*a, **k):
            attempts["n"] += 1
            if attempts["n"] <= 2:
                raise ConnectionRefusedError(111, "Connection refused")
            return await fn(*a, **k)
        return await real(wrapped, *args, **kwargs)

    monkeypatch.setattr(faults, "retrying", flaky_retrying)
    recovery.wait_for_services(settings)
    assert attempts["n"] == 3


@pytest.mark.parametrize(("errno_name", "transient"), [
    ("EROFS", True), ("ENOSPC", True), ("EDQUOT", True), ("EIO", True), ("EAGAIN", True),
    ("ESTALE", True), ("EMFILE", True),
    ("ENOENT", False), ("EACCES", False), ("EISDIR", False), ("ENAMETOOLONG", False),
])
def test_blob_folder_oserrors_that_pass_are_transient(errno_name, transient):
    import errno
    import os

    code = getattr(errno, errno_name)
    exc = OSError(code, os.strerror(code), "/srv/blobs/02/ab.png")
    assert faults.is_transient(exc) is transient
    # Wrapped as a task sees it (raised while handling another), the verdict holds.
    outer = RuntimeError("aggregate failed")
    outer.__cause__ = exc
    assert faults.is_transient(outer) is transient


def test_an_s3_store_that_does_not_answer_is_transient():
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    from storage.blobs.base import BlobStoreUnavailable

    assert faults.is_transient(EndpointConnectionError(endpoint_url="http://minio:9000"))
    assert faults.is_transient(ReadTimeoutError(endpoint_url="http://minio:9000"))
    assert faults.is_transient(BlobStoreUnavailable("s3 did not answer"))
    # A decoder's OSError without an errno ("cannot identify image file") is the data's fault.
    assert not faults.is_transient(OSError("cannot identify image file <_io.BytesIO>"))
