"""The evidence-only methods' pictures through the API, in process on the embedded default and
on PostgreSQL + Mongo: the result links them before they exist, the first GET makes them
(service/evidence.py), and an upload whose original is gone answers 404 with the reason."""

from __future__ import annotations

import pytest

from storage import repository as repo
from testkit.images import encode, noisy_photo
from tests.conftest import module_settings, run
from tests.inprocess import api, new_user

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def settings(request, tmp_path_factory):
    yield from module_settings(request, tmp_path_factory, "pictures", mongo=True)


def photo(seed: int) -> bytes:
    return encode(noisy_photo(seed=seed, rows=320, cols=400), fmt="JPEG")


async def _judged(client, user, seed: int) -> dict:
    r = await client.post("/v1/uploads", params={"wait": 30}, headers=user["headers"],
                          files=[("file", (f"p{seed}.jpg", photo(seed)))], timeout=60)
    assert r.status_code == 200, r.text
    (entry,) = r.json()["uploads"]
    assert entry["status"] == "done", entry
    r = await client.get(f"/v1/uploads/{entry['upload_id']}/result", headers=user["headers"])
    assert r.status_code == 200, r.text
    return r.json()


def test_the_first_picture_request_makes_the_evidence(settings):
    async def go():
        async with api(settings) as (client, storage):
            ann = await new_user(storage)
            result = await _judged(client, ann, 1)
            ela = result["metadata"]["pixel_analysis"]["ela_results"]
            assert ela["ela_image_path"] is None and ela["details"]["evidence"] == "on_request"
            assert result["ela_url"] and result["forensic_heatmap_url"] and result["heatmap_url"]
            for url in (result["ela_url"], result["forensic_heatmap_url"], result["heatmap_url"]):
                r = await client.get(url, headers=ann["headers"])
                assert r.status_code == 200 and r.content.startswith(b"\x89PNG"), url
            again = (await client.get(f"/v1/uploads/{result['upload_id']}/result",
                                      headers=ann["headers"])).json()
            made = again["metadata"]["pixel_analysis"]["ela_results"]
            assert made["ela_image_path"] and "evidence" not in made["details"]
            assert made["details"]["view"]["downscale"] >= 1
            # The verdict did not move.
            for key in ("verdict", "confidence", "ai_probability", "summary", "explanation"):
                assert again[key] == result[key], key

            # The original gone from the blob store: a clear 404, never a 500.
            lost = await _judged(client, ann, 2)
            row = await repo.get_upload(storage.engine, lost["upload_id"])
            storage.blobs.delete(row["file_path"])
            r = await client.get(lost["ela_url"], headers=ann["headers"])
            assert r.status_code == 404, r.text
            assert r.json()["code"] == "ela_not_available", r.text

    run(go())
