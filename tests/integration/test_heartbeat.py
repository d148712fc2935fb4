"""A method task's heartbeat is its check that the upload is still its own: one conditional
UPDATE at the start, in the transaction that counts its delivery (storage.deliveries.begin), on
PostgreSQL without waiting for a disk flush. Checked on PostgreSQL and SQLite: who is touched,
who is not, and that a method of a finished or replaced upload still gets the right answer."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa

from testkit.images import encode, noisy_photo
from tests.conftest import module_settings, run

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module", params=["postgres", "embedded"])
def settings(request, tmp_path_factory):
    yield from module_settings(request, tmp_path_factory, "heartbeat", mongo=False)


async def _touched_at(storage, upload_id):
    from storage.models import uploads

    async with storage.engine.connect() as conn:
        return (await conn.execute(sa.select(uploads.c.stage_touched_at)
                                   .where(uploads.c.upload_id == upload_id))).scalar_one()


async def _age(storage, upload_id, seconds: int = 100):
    """Move the upload's heartbeat into the past, so a new one is told apart."""
    from schemas.clock import utcnow
    from storage.models import uploads

    async with storage.engine.begin() as conn:
        await conn.execute(uploads.update().where(uploads.c.upload_id == upload_id)
                           .values(stage_touched_at=utcnow() - timedelta(seconds=seconds)))


async def _ingested(storage, settings, seed: int, name: str) -> int:
    """A new upload of a generated JPEG photo; its id."""
    from service import ingest

    outcome = await ingest.ingest_bytes(
        storage, settings, data=encode(noisy_photo(seed=seed), fmt="JPEG"),
        original_file_name=name, user_id=None)
    return outcome.upload_id


def test_a_method_task_touches_its_upload_once_it_knows_it_is_its_own(settings):
    from schemas.clock import aware, utcnow
    from service import canvas, detection
    from storage import repository as repo
    from storage.context import open_storage

    async def go():
        async with open_storage(settings) as storage:
            uid = await _ingested(storage, settings, 31, "beat.jpg")
            manifest_key, _ = await detection.prepare(storage, settings, uid)
            manifest = await canvas.read_manifest(storage, manifest_key, uid)
            stale = utcnow() - timedelta(seconds=50)

            # In flight and ours: touched by the check itself.
            await _age(storage, uid)
            result = await detection.detect(storage, settings, uid, "exif", manifest_key,
                                            heartbeat=True)
            assert result.status == "ok"
            assert aware(await _touched_at(storage, uid)) > stale

            # Without heartbeat (the embedded runner): the method runs, nothing is written.
            await _age(storage, uid)
            assert (await detection.detect(storage, settings, uid, "exif", manifest_key)
                    ).status == "ok"
            assert aware(await _touched_at(storage, uid)) < stale

            # Another original or another owner under the same id: not ours, not touched.
            for other in (replace(manifest, original_key="someone/else.jpg"),
                          replace(manifest, user_id=999)):
                other_key = await storage.blobs.aput(other.to_json(), suffix=".json")
                result = await detection.detect(storage, settings, uid, "exif", other_key,
                                                heartbeat=True)
                assert result.status == "skipped"
            assert aware(await _touched_at(storage, uid)) < stale

            # Finished: still ours (a redelivered method answers), but no heartbeat needed.
            await repo.mark_failed(storage.engine, uid, "test: finished")
            await _age(storage, uid)
            result = await detection.detect(storage, settings, uid, "exif", manifest_key,
                                            heartbeat=True)
            assert result.status == "ok"
            assert aware(await _touched_at(storage, uid)) < stale

            # Gone: the method is skipped, as before.
            return await detection.detect(storage, settings, uid + 1000, "exif",
                                          manifest_key, heartbeat=True)

    skipped = run(go())
    assert skipped.status == "skipped"


def test_an_ended_delivery_counts_no_death_and_leaves_the_connection_as_it_was(settings):
    """storage.deliveries.end skips the disk flush for its own statement only (PostgreSQL):
    the delivery is marked ended, the next one counts no death, and the connection goes back
    to the pool with the server's synchronous_commit."""
    from service import deliveries
    from storage.context import open_storage
    from storage.db import autocommit
    from storage.models import stage_deliveries

    async def go():
        async with open_storage(settings) as storage:
            uid = await _ingested(storage, settings, 32, "ended.jpg")
            seen = []
            for _ in range(3):
                seen.append(await deliveries.begin(storage, settings, uid, "detect.exif"))
                await deliveries.end(storage, uid, "detect.exif")
            async with autocommit(storage.engine) as conn:
                running = (await conn.execute(
                    sa.select(stage_deliveries.c.running)
                    .where(stage_deliveries.c.upload_id == uid))).scalar_one()
                flush = (await conn.execute(sa.text("SHOW synchronous_commit"))).scalar_one() \
                    if conn.dialect.name == "postgresql" else "on"
            return seen, running, flush

    seen, running, flush = run(go())
    assert [(d.deaths, d.redelivered) for d in seen] == [(0, False)] * 3
    assert running is False and flush == "on"


def test_a_delivery_begins_in_one_statement_on_postgresql(settings):
    """storage.deliveries.begin counts a death, upserts the delivery and beats the heartbeat:
    on PostgreSQL in one statement (one round trip) that skips the disk flush for itself only.
    Who counts a death, who touches, and what a deleted upload answers."""
    from sqlalchemy import event

    from schemas.clock import aware, utcnow
    from storage import deliveries
    from storage.context import open_storage
    from storage.db import autocommit
    from storage.deliveries import Counted
    from storage.models import uploads

    async def go():
        async with open_storage(settings) as storage:
            uid = await _ingested(storage, settings, 33, "begin.jpg")
            async with storage.engine.begin() as conn:
                path = (await conn.execute(sa.select(uploads.c.file_path).where(
                    uploads.c.upload_id == uid))).scalar_one()
                await conn.execute(uploads.update().where(uploads.c.upload_id == uid)
                                   .values(status="processing"))
            ours = (path, None)
            statements = []
            event.listen(storage.engine.sync_engine, "before_cursor_execute",
                         lambda *args: statements.append(args[2]))

            async def begin(upload_id=uid, **kw):
                await _age(storage, uid)
                statements.clear()
                counted = await deliveries.begin(storage.engine, upload_id, "detect.x", **kw)
                sent = list(statements)
                stale = utcnow() - timedelta(seconds=50)
                beat = aware(await _touched_at(storage, uid)) > stale
                return counted, sent, beat

            seen = [
                await begin(touch=ours, cap=3),  # the first: touched
                await begin(touch=ours, cap=3),  # the first never ended: it died
                await begin(touch=ours, cap=3, may_count=False),  # a retry: nobody died
                await begin(touch=ours, cap=1, may_count=False),  # the cap reached
                await begin(touch=("someone/else.jpg", None), may_count=False),  # not ours
                await begin(may_count=False),  # no heartbeat asked
                await begin(upload_id=uid + 1000, touch=ours),  # gone
            ]
            async with autocommit(storage.engine) as conn:
                flush = (await conn.execute(sa.text("SHOW synchronous_commit"))).scalar_one() \
                    if conn.dialect.name == "postgresql" else "on"
            return seen, flush

    seen, flush = run(go())
    assert [(counted, beat) for counted, _, beat in seen] == [
        (Counted(0, False, True), True),
        (Counted(1, True, None), False),
        (Counted(1, False, True), True),
        (Counted(1, False, None), False),
        (Counted(1, False, False), False),
        (Counted(1, False, None), False),
        (None, False),
    ]
    if settings.sqlalchemy_url.startswith("postgresql"):
        assert [len(sent) for _, sent, _ in seen] == [1] * len(seen), seen
    assert flush == "on"


def _spy(engine) -> list:
    """The statements ``engine`` sends from now on: (SQL, parameter sets, autocommit)."""
    from sqlalchemy import event

    sent: list = []

    def seen(conn, _cursor, statement, parameters, _context, executemany):
        auto = getattr(conn.connection.dbapi_connection, "autocommit", None)
        # An executemany's parameter sets (a multi-row statement's are one flat set).
        many = executemany and parameters and isinstance(parameters[0], (list, tuple, dict))
        sent.append((statement, len(parameters) if many else 1, auto))

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    return sent


def test_prepare_claims_its_upload_in_one_autocommit_statement(settings):
    """repository.start_preparing: one UPDATE ... RETURNING, on PostgreSQL with no
    BEGIN/COMMIT round trips (autocommit); the row it returns and a missing upload."""
    from storage import repository as repo
    from storage.context import open_storage

    async def go():
        async with open_storage(settings) as storage:
            uid = await _ingested(storage, settings, 34, "prepare.jpg")
            sent = _spy(storage.engine)
            row = await repo.start_preparing(storage.engine, uid)
            claimed = list(sent)
            try:
                await repo.start_preparing(storage.engine, uid + 1000)
                gone = False
            except LookupError:
                gone = True
            return row, claimed, gone

    row, claimed, gone = run(go())
    assert row["status"] == "processing" and row["stage"] == "preparing"
    assert row["delivery_count"] == 1 and gone
    if settings.sqlalchemy_url.startswith("postgresql"):
        assert [(n, auto) for _, n, auto in claimed] == [(1, True)], claimed


def test_an_anonymous_verdict_finishes_in_one_autocommit_statement(settings):
    """repository.finish of an upload with no owner (no webhook event): the result's
    document id and the upload's done state in one statement on PostgreSQL."""
    from storage import repository as repo
    from storage.context import open_storage
    from storage.models import detection_results

    async def go():
        async with open_storage(settings) as storage:
            uid = await _ingested(storage, settings, 35, "finish.jpg")
            rid = await repo.save_results(
                storage.engine, upload_id=uid, is_ai_generated=False, confidence=0.5,
                processing_time=1.0, algorithm_version="t", summary="s", methods=[])
            sent = _spy(storage.engine)
            found = await repo.finish(storage.engine, upload_id=uid, result_id=rid,
                                      metadata_id="doc", event={"result_id": rid},
                                      anonymous=True)
            finished = list(sent)
            gone = await repo.finish(storage.engine, upload_id=uid + 1000,
                                     result_id=rid + 1000, metadata_id="x", event={},
                                     anonymous=True)
            assert (found, gone) == (True, False)  # aggregate needs no look after it
            async with storage.engine.connect() as conn:
                doc = (await conn.execute(sa.select(detection_results.c.metadata_id).where(
                    detection_results.c.result_id == rid))).scalar_one()
            return await repo.get_upload(storage.engine, uid), doc, finished

    upload, doc, finished = run(go())
    assert (upload["status"], upload["stage"], upload["is_processed"], doc) == (
        "done", "done", True, "doc")
    assert upload["processing_completed_at"] is not None
    if settings.sqlalchemy_url.startswith("postgresql"):
        assert [(n, auto) for _, n, auto in finished] == [(1, True)], finished


def test_a_verdicts_method_rows_go_in_one_statement(settings):
    """repository.save_results: the result row, then every method row in one multi-row
    upsert (not one execute a row); a repeat updates the same rows."""
    from storage import repository as repo
    from storage.context import open_storage

    async def go():
        async with open_storage(settings) as storage:
            uid = await _ingested(storage, settings, 36, "rows.jpg")
            methods = await repo.active_methods(storage.engine)
            sent = _spy(storage.engine)
            for confidence in (0.25, 0.75):
                sent.clear()
                rows = [{"method_id": m["method_id"], "is_ai_generated": True,
                         "confidence": confidence, "processing_time": 0.5,
                         "result_details": {"status": "ok"}} for m in methods.values()]
                await repo.save_results(
                    storage.engine, upload_id=uid, is_ai_generated=True, confidence=0.5,
                    processing_time=1.0, algorithm_version="t", summary="s", methods=rows)
            return methods, list(sent), await repo.result_for_upload(storage.engine, uid)

    methods, sent, stored = run(go())
    assert len(methods) > 1 and set(stored["methods"]) == set(methods)
    assert {m["confidence"] for m in stored["methods"].values()} == {0.75}
    assert [n for _, n, _ in sent] == [1, 1], sent


def test_an_upload_and_its_original_commit_together(settings):
    """service.ingest: the upload row, its original's ref and the file in one transaction
    (one commit, not one for the row and one for the ref); a duplicate writes nothing."""
    from sqlalchemy import event

    from service import ingest
    from storage.context import open_storage
    from storage.models import blob_refs

    data = encode(noisy_photo(seed=37), fmt="JPEG")

    async def go():
        async with open_storage(settings) as storage:
            commits = []
            event.listen(storage.engine.sync_engine, "commit", lambda conn: commits.append(1))
            seen = []
            for _ in range(2):
                commits.clear()
                outcome = await ingest.ingest_bytes(storage, settings, data=data,
                                                    original_file_name="together.jpg",
                                                    user_id=None)
                seen.append((outcome.status, len(commits)))
            async with storage.engine.connect() as conn:
                refs = (await conn.execute(sa.select(blob_refs.c.blob_key, blob_refs.c.kind)
                                           .where(blob_refs.c.upload_id == outcome.upload_id)
                                           )).all()
            return seen, refs, [await storage.blobs.aexists(k) for k, _ in refs]

    seen, refs, stored = run(go())
    # The second resumes the first; its commits are the lookup's alone (SQLite's read is a
    # plain transaction): a new upload commits once more than that.
    assert [status for status, _ in seen] == ["queued", "queued"]
    assert seen[0][1] - seen[1][1] == 1, seen
    assert [kind for _, kind in refs] == ["original"] and stored == [True]


def test_aggregate_touches_and_reads_its_upload_in_one_statement(settings):
    """repository.touch(read=True): aggregate's heartbeat and its read of the row in one
    statement while the upload is in flight; a finished one is read as it is (untouched)."""
    from storage import repository as repo
    from storage.context import open_storage

    async def go():
        async with open_storage(settings) as storage:
            uid = await _ingested(storage, settings, 38, "touchread.jpg")
            await repo.start_preparing(storage.engine, uid)
            sent = _spy(storage.engine)
            row = await repo.touch(storage.engine, uid, "aggregating", read=True)
            touched = list(sent)
            await repo.mark_failed(storage.engine, uid, "stop")
            finished = await repo.touch(storage.engine, uid, "aggregating", read=True)
            gone = await repo.touch(storage.engine, uid + 1000, "aggregating", read=True)
            return row, touched, finished, gone

    row, touched, finished, gone = run(go())
    assert (row["stage"], row["status"]) == ("aggregating", "processing")
    assert (finished["stage"], finished["status"], gone) == ("failed", "failed", None)
    if settings.sqlalchemy_url.startswith("postgresql"):
        assert [(n, auto) for _, n, auto in touched] == [(1, True)], touched


def test_blobs_stored_together_are_referenced_and_locked_in_two_statements(settings):
    """blobrefs.store_many: every ref in one multi-row INSERT and, on PostgreSQL, every
    key's lock in one statement (all held till the commit)."""
    from storage import blobrefs
    from storage.context import open_storage
    from storage.models import blob_refs

    held = []

    async def locks(conn):
        if conn.dialect.name == "postgresql":
            held.append((await conn.execute(sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid()"))).scalar_one())

    async def go():
        async with open_storage(settings) as storage:
            uid = await _ingested(storage, settings, 39, "many.jpg")
            sent = _spy(storage.engine)
            keys = await blobrefs.store_many(storage, uid, [
                (f"blob {i}".encode(), ".bin", "manifest") for i in range(3)], then=locks)
            stored = list(sent)
            async with storage.engine.connect() as conn:
                refs = set((await conn.execute(sa.select(blob_refs.c.blob_key).where(
                    blob_refs.c.upload_id == uid, blob_refs.c.kind == "manifest"))).scalars())
            return keys, refs, stored, [await storage.blobs.aexists(k) for k in keys]

    keys, refs, stored, there = run(go())
    assert refs == set(keys) and len(keys) == 3 and there == [True] * 3
    mine = [n for sql, n, _ in stored if "pg_locks" not in sql]
    if settings.sqlalchemy_url.startswith("postgresql"):
        assert mine == [1, 1] and held == [3], (stored, held)
    else:
        assert mine == [1], stored
