"""Evidence on request (issue 30): the methods that cannot decide (no usable calibration) do
not run in the canvas; the first request computes exactly what the canvas would have, and
the verdict never moves."""

from __future__ import annotations

import sqlalchemy as sa

from tests.conftest import migrated, run
from tests.unit.service.test_storage_budget import camera_jpeg

EVIDENCE = ["prnu", "ela", "texture"]  # no usable calibration in pipeline/assets
VOLATILE = {"processing_time", "ela_image_path"}


async def _stored(storage, upload_id: int) -> dict:
    from storage import method_rows
    from storage import repository as repo
    from storage.models import blob_refs

    result = await repo.result_for_upload(storage.engine, upload_id)
    rows = await method_rows.details(storage.engine, result["result_id"])
    doc = await storage.documents.get_detection_metadata(result["result_id"])
    async with storage.engine.connect() as conn:
        kinds = {k for (k,) in await conn.execute(
            sa.select(blob_refs.c.kind).where(blob_refs.c.upload_id == upload_id))}
    return {"result": result, "rows": {n: r["result_details"] for n, r in rows.items()},
            "doc": doc, "kinds": kinds}


def _judge(settings, data: bytes, *, complete_after: int = 0):
    from service import detection, evidence, ingest
    from storage.context import open_storage

    async def go():
        async with open_storage(settings) as storage:
            await migrated(storage)
            upload_id = (await ingest.ingest_bytes(storage, settings, data=data,
                                                   original_file_name="camera.jpg",
                                                   user_id=None)).upload_id
            await detection.run_all(storage, settings, upload_id)
            states = [await _stored(storage, upload_id)]
            computed = []
            for _ in range(complete_after):
                computed.append(await evidence.complete(storage, settings, upload_id))
                states.append(await _stored(storage, upload_id))
            pictures = {}
            doc = states[-1]["doc"]
            for kind, key in (doc.blob_keys or {}).items():
                if kind in ("ela", "forensic_heatmap"):
                    pictures[kind] = await storage.blobs.aget(key)
            return states, computed, pictures

    return run(go())


def _steady(details: dict) -> dict:
    return {k: v for k, v in details.items() if k not in VOLATILE}


def test_the_first_request_computes_what_the_canvas_would_have(embedded, tmp_path):
    from pipeline.document import waiting, waiting_in
    from service import evidence

    data = camera_jpeg(rows=900, cols=1200)
    (before, after, again), computed, pictures = _judge(embedded, data, complete_after=2)
    eager = embedded.model_copy(update={"evidence": "eager",
                                        "data_dir": tmp_path / "eager"})
    (full,), _, full_pictures = _judge(eager, data)

    # The canvas left them for later: an abstention that says so, no picture, no map.
    for name in EVIDENCE:
        assert waiting(before["rows"][name]), before["rows"][name]
        assert before["rows"][name]["ai_probability"] is None
    assert waiting_in(before["doc"])
    assert before["doc"].pixel_analysis.ela_results.ela_image_path is None
    assert before["doc"].visual_anomalies.forensic_heatmap_path is None
    assert not {"ela", "forensic_heatmap"} & before["kinds"]
    assert not any(waiting(r) for r in full["rows"].values())

    # The first request computes them once; the second finds nothing waiting (and no lock
    # of the upload stays behind in the process).
    assert computed == [EVIDENCE, []] and not evidence._locks
    assert not waiting_in(after["doc"]) and again["rows"] == after["rows"]
    assert {"ela", "forensic_heatmap"} <= after["kinds"]
    assert after["doc"].visual_anomalies.heatmap_source == "forensic"
    assert after["doc"].blob_keys == full["doc"].blob_keys
    # ... exactly what an eager canvas computes: the statistics, the pictures, the map.
    for name in EVIDENCE:
        assert _steady(after["rows"][name]) == _steady(full["rows"][name]), name
    assert pictures == full_pictures and set(pictures) == {"ela", "forensic_heatmap"}

    # The verdict and every other method never move.
    for state in (after, full):
        for key in ("is_ai_generated", "confidence_score", "result_summary",
                    "algorithm_version"):
            assert state["result"][key] == before["result"][key], key
        assert state["rows"]["model"] == before["rows"]["model"]
        assert (state["doc"].aggregated_results.model_dump()
                == before["doc"].aggregated_results.model_dump())


def test_two_requests_at_once_compute_it_once(embedded):
    import asyncio

    from service import detection, evidence, ingest
    from storage.context import open_storage

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            upload_id = (await ingest.ingest_bytes(
                storage, embedded, data=camera_jpeg(rows=600, cols=800, seed=9),
                original_file_name="twice.jpg", user_id=None)).upload_id
            await detection.run_all(storage, embedded, upload_id)
            return await asyncio.gather(*(evidence.complete(storage, embedded, upload_id)
                                          for _ in range(3)))

    assert sorted(run(go())) == [[], [], EVIDENCE]
    assert not evidence._locks
