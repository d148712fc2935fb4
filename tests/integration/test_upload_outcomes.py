"""POST /v1/uploads for integrating services, in process on the embedded default (SQLite,
detection in the API's own thread) and on PostgreSQL: ``?wait=N`` answers with the verdict,
``GET …/result?wait=N`` long-polls, a mixed good/bad multi-file POST stores the good parts
and reports each one, ``Idempotency-Key`` makes a retried POST create nothing new, and
``client_reference`` is stored, returned and filterable."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa

from testkit.images import SD_PARAMETERS, encode, noisy_photo, smooth_scene
from tests.conftest import module_settings, run
from tests.inprocess import api, new_user

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def settings(request, tmp_path_factory):
    yield from module_settings(request, tmp_path_factory, "outcomes", mongo=True)


def render(seed: int) -> bytes:
    return encode(smooth_scene(seed=seed, rows=96, cols=96), text={"parameters": SD_PARAMETERS})


def photo(seed: int) -> bytes:
    return encode(noisy_photo(seed=seed, rows=96, cols=96), fmt="JPEG")


def files(*parts):
    return [("file", part) for part in parts]


async def count_uploads(storage, user_id: int) -> int:
    async with storage.engine.connect() as conn:
        return (await conn.execute(sa.text("SELECT count(*) FROM uploads WHERE user_id = :u"),
                                   {"u": user_id})).scalar_one()


def test_wait_answers_with_the_verdict_and_result_long_polls(settings):
    async def go():
        async with api(settings) as (client, storage):
            amy = await new_user(storage)
            r = await client.post("/v1/uploads", params={"wait": 10}, headers=amy["headers"],
                                  files=files(("render.png", render(1))), timeout=60)
            assert r.status_code == 200, r.text
            (entry,) = r.json()["uploads"]
            assert entry["status"] == "done" and entry["verdict"] == "ai"
            assert 0.5 < entry["ai_probability"] <= 1 and entry["confidence"] > 0.5
            assert r.json()["accepted"] == 1 and r.json()["refused"] == 0

            # Without wait: 202 at once; the result long-polls until it is ready.
            r = await client.post("/v1/uploads", headers=amy["headers"],
                                  files=files(("photo.jpg", photo(2))))
            assert r.status_code == 202, r.text
            (entry,) = r.json()["uploads"]
            assert entry["status"] == "queued" and entry["verdict"] is None
            result = await client.get(entry["result_url"], params={"wait": 20},
                                      headers=amy["headers"], timeout=60)
            assert result.status_code == 200, result.text
            assert result.json()["upload_id"] == entry["upload_id"]

            too_long = await client.post("/v1/uploads", params={"wait": 31},
                                         headers=amy["headers"],
                                         files=files(("photo.jpg", photo(3))))
            assert too_long.status_code == 422

    run(go())


def test_a_mixed_post_stores_the_good_parts_and_reports_each(settings):
    async def go():
        async with api(settings) as (client, storage):
            ben = await new_user(storage)
            good = photo(11)
            r = await client.post("/v1/uploads", headers=ben["headers"], files=files(
                ("good.jpg", good), ("notes.txt", b"just text"), ("cut.png", render(12)[:200]),
                ("again.jpg", good)))
            assert r.status_code == 207, r.text
            body = r.json()
            assert (body["accepted"], body["refused"]) == (2, 2)
            by_name = {e["file_name"]: e for e in body["uploads"]}
            assert [e["file_name"] for e in body["uploads"]] == ["good.jpg", "notes.txt",
                                                                 "cut.png", "again.jpg"]
            assert by_name["good.jpg"]["status"] == "queued" and by_name["good.jpg"]["upload_id"]
            assert by_name["again.jpg"]["status"] == "duplicate"
            assert by_name["again.jpg"]["upload_id"] == by_name["good.jpg"]["upload_id"]
            assert (by_name["notes.txt"]["status"], by_name["notes.txt"]["code"]) == (
                "refused", "unsupported_image_type")
            assert by_name["notes.txt"]["upload_id"] is None
            assert by_name["cut.png"]["code"] == "invalid_image"
            assert await count_uploads(storage, ben["user_id"]) == 1

            # Nothing taken: the first refusal's status, every part in the details.
            r = await client.post("/v1/uploads", headers=ben["headers"], files=files(
                ("a.txt", b"text"), ("b.png", render(13)[:100])))
            assert (r.status_code, r.json()["code"]) == (415, "unsupported_image_type")
            assert [d["code"] for d in r.json()["details"]] == ["unsupported_image_type",
                                                               "invalid_image"]
            assert await count_uploads(storage, ben["user_id"]) == 1

    run(go())


def test_a_retried_post_with_the_same_idempotency_key_creates_nothing_new(settings):
    async def go():
        async with api(settings) as (client, storage):
            cat = await new_user(storage)
            key = str(uuid.uuid4())
            head = {**cat["headers"], "Idempotency-Key": key}
            first = await client.post("/v1/uploads", headers=head,
                                      files=files(("a.jpg", photo(21)), ("b.jpg", photo(22))))
            assert first.status_code == 202, first.text
            again = await client.post("/v1/uploads", headers=head,
                                      files=files(("a.jpg", photo(21)), ("b.jpg", photo(22))))
            assert again.status_code == 202 and again.json() == first.json()
            assert again.headers["idempotent-replayed"] == "true"
            assert await count_uploads(storage, cat["user_id"]) == 2

            other = await client.post("/v1/uploads", headers=head,
                                      files=files(("a.jpg", photo(23))))
            assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
            assert await count_uploads(storage, cat["user_id"]) == 2

            # Another key (or no key) is another request; the key is per API key.
            fresh = await client.post("/v1/uploads",
                                      headers={**cat["headers"], "Idempotency-Key": "k2"},
                                      files=files(("c.jpg", photo(24))))
            assert fresh.status_code == 202
            assert await count_uploads(storage, cat["user_id"]) == 3
            dan = await new_user(storage)
            theirs = await client.post("/v1/uploads",
                                       headers={**dan["headers"], "Idempotency-Key": key},
                                       files=files(("a.jpg", photo(21))))
            assert theirs.status_code == 202 and theirs.json() != first.json()

            # Two at once with one key: one runs, the other is told to retry (409) or replayed.
            head3 = {**cat["headers"], "Idempotency-Key": "together"}
            answers = await asyncio.gather(*(
                client.post("/v1/uploads", headers=head3, files=files(("d.jpg", photo(25))))
                for _ in range(2)))
            codes = sorted(a.status_code for a in answers)
            assert codes in ([202, 202], [202, 409]), [a.text for a in answers]
            assert await count_uploads(storage, cat["user_id"]) == 4

    run(go())


def test_client_reference_is_stored_returned_and_filterable(settings):
    async def go():
        async with api(settings) as (client, storage):
            eve = await new_user(storage)
            r = await client.post(
                "/v1/uploads", headers=eve["headers"],
                files=files(("a.jpg", photo(31)), ("b.jpg", photo(32))),
                data={"client_reference": ["order-1", "order-2"]})
            assert r.status_code == 202, r.text
            refs = {e["file_name"]: e["client_reference"] for e in r.json()["uploads"]}
            assert refs == {"a.jpg": "order-1", "b.jpg": "order-2"}
            listed = await client.get("/v1/uploads", params={"client_reference": "order-2"},
                                      headers=eve["headers"])
            (item,) = listed.json()["items"]
            assert item["file_name"] == "b.jpg" and item["client_reference"] == "order-2"
            one = await client.get(item["status_url"], headers=eve["headers"])
            assert one.json()["client_reference"] == "order-2"

            too_many = await client.post("/v1/uploads", headers=eve["headers"],
                                         files=files(("c.jpg", photo(33))),
                                         data={"client_reference": ["x", "y"]})
            assert (too_many.status_code, too_many.json()["code"]) == (
                400, "invalid_client_reference")
            too_long = await client.post("/v1/uploads", headers=eve["headers"],
                                         files=files(("c.jpg", photo(33))),
                                         data={"client_reference": "x" * 300})
            assert too_long.status_code == 400

    run(go())
