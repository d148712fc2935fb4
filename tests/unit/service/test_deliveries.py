"""Method and aggregate deliveries counted per (upload, stage) on the embedded database: a
worker that died on a delivery counts, a retry or a finished delivery does not, and past the
cap a method ends status=error (the canvas goes on) while aggregate fails the upload."""

from __future__ import annotations

import pytest

from testkit.images import encode, noisy_photo
from tests.conftest import run


async def _prepared(storage, settings):
    from service import detection, ingest
    from storage import migrate

    await migrate.upgrade(storage.engine)
    outcome = await ingest.ingest_bytes(storage, settings, data=encode(noisy_photo(seed=5)),
                                        original_file_name="p.png", user_id=None)
    key, methods = await detection.prepare(storage, settings, outcome.upload_id,
                                           share_pixels=False)
    assert key is not None and "exif" in methods
    return outcome.upload_id, key


def _died(storage, upload_id, stage, times):
    """``times`` deliveries that started and never ended (their worker process died)."""
    from storage import deliveries

    async def go():
        for _ in range(times):
            await deliveries.begin(storage.engine, upload_id, stage)
    return go()


def test_a_method_that_killed_its_worker_past_the_cap_ends_in_error(embedded):
    from service import detection
    from storage import repository
    from storage.context import open_storage

    settings = embedded.model_copy(update={"max_deliveries": 2})

    async def go():
        async with open_storage(settings) as storage:
            upload_id, key = await _prepared(storage, settings)
            await _died(storage, upload_id, "detect.exif", 2)
            touched = (await repository.get_upload(storage.engine, upload_id))[
                "stage_touched_at"]
            # The third delivery finds the second still running: a second death, the cap.
            poisoned = await detection.detect(storage, settings, upload_id, "exif", key,
                                              heartbeat=True)
            after = (await repository.get_upload(storage.engine, upload_id))
            other = await detection.detect(storage, settings, upload_id, "prnu", key,
                                           heartbeat=True)
            results = [poisoned.model_dump(mode="json"), other.model_dump(mode="json")]
            verdict = await detection.aggregate_counted(storage, settings, upload_id, key,
                                                        results)
            return poisoned, after, touched, verdict, await repository.get_upload(
                storage.engine, upload_id)

    poisoned, after, touched, verdict, upload = run(go())
    assert poisoned.status == "error"
    assert poisoned.error == "detect.exif killed its worker 2 times: poison image"
    assert after["stage_touched_at"] == touched  # no heartbeat from a poison's redelivery
    assert "result_id" in verdict and upload["status"] == "done"


def test_a_finished_delivery_or_a_retry_counts_no_death(embedded):
    from service import deliveries
    from storage.context import open_storage

    async def go():
        async with open_storage(embedded) as storage:
            upload_id, _ = await _prepared(storage, embedded)
            seen = []
            for _ in range(3):  # each delivery ends: nobody died
                seen.append(await deliveries.begin(storage, embedded, upload_id, "detect.ela"))
                await deliveries.end(storage, upload_id, "detect.ela")
            await deliveries.begin(storage, embedded, upload_id, "detect.ela")
            # It raised a transient fault without ending; its retry is not a death.
            seen.append(await deliveries.begin(storage, embedded, upload_id, "detect.ela",
                                               may_count=False))
            seen.append(await deliveries.begin(storage, embedded, upload_id, "detect.ela"))
            return seen, await deliveries.begin(storage, embedded, 999_999, "detect.ela")

    seen, gone = run(go())
    assert [(d.deaths, d.redelivered, d.poisoned) for d in seen] == [
        (0, False, False), (0, False, False), (0, False, False), (0, False, False),
        (1, True, False)]
    assert gone is None  # the upload does not exist (was deleted)


@pytest.mark.parametrize("retry", [False, True])
def test_aggregate_past_the_cap_fails_the_upload_and_a_retry_starts_afresh(embedded, retry):
    from service import detection
    from storage import repository
    from storage.context import open_storage

    async def go():
        async with open_storage(embedded) as storage:
            upload_id, key = await _prepared(storage, embedded)
            await _died(storage, upload_id, "aggregate", embedded.max_deliveries)
            if retry:  # skygate retry: a new run counts from 0
                await repository.reset_for_retry(storage.engine, upload_id)
                key, _ = await detection.prepare(storage, embedded, upload_id,
                                                 share_pixels=False)
            out = await detection.aggregate_counted(storage, embedded, upload_id, key, [])
            return out, await repository.get_upload(storage.engine, upload_id)

    out, upload = run(go())
    if retry:
        assert upload["status"] == "done" and "result_id" in out
    else:
        assert upload["status"] == "failed"
        assert upload["error"] == "aggregate killed its worker 3 times: poison image"
