"""What one upload leaves in the blob store (issue 13): the original, a thumbnail, the ELA
picture and the heatmap; the intermediates the methods share live only as long as the canvas.
Budget for a camera JPEG: stored bytes <= original + 25 % + 512 KB."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from PIL import Image

from schemas.settings import Settings
from tests.conftest import migrated, run

BUDGET_SHARE, BUDGET_SLACK = 0.25, 512 * 1024
KEPT = {"original", "thumbnail", "heatmap", "forensic_heatmap", "ela"}


def camera_jpeg(*, rows: int = 3000, cols: int = 4000, seed: int = 13) -> bytes:
    """A camera-like 12 MP JPEG: a smooth scene, PRNU-like gain, shot/read noise, EXIF."""
    rng = np.random.default_rng(seed)
    r = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None]
    c = np.linspace(0.0, 1.0, cols, dtype=np.float32)[None, :]
    scene = np.empty((rows, cols, 3), np.float32)
    scene[..., 0] = 90 + 80 * r + 30 * np.sin(9 * c)
    scene[..., 1] = 70 + 110 * c * r + 20 * np.cos(7 * r)
    scene[..., 2] = 150 - 60 * r * c
    scene *= 1 + 0.02 * rng.standard_normal((rows, cols, 1), dtype=np.float32)
    scene += rng.normal(0, 2.0, (rows, cols, 3)).astype(np.float32)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "SkyGate Test Camera", "SG-12"
    out = io.BytesIO()
    Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8)).save(
        out, format="JPEG", quality=90, exif=exif)
    return out.getvalue()


def _stored_files(settings: Settings) -> dict[str, int]:
    root = Path(settings.data_dir) / "blobs"
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()
            and not p.name.startswith(".")}


async def _refs(storage, upload_id: int) -> dict[str, str]:
    from storage.models import blob_refs

    async with storage.engine.connect() as conn:
        rows = await conn.execute(sa.select(blob_refs.c.blob_key, blob_refs.c.kind)
                                  .where(blob_refs.c.upload_id == upload_id))
        return dict(rows.all())


def test_a_camera_jpeg_leaves_the_original_and_a_small_budget(embedded):
    from service import detection, ingest
    from storage import repository as repo
    from storage.context import open_storage

    data = camera_jpeg()
    assert Image.open(io.BytesIO(data)).size[0] * Image.open(io.BytesIO(data)).size[1] >= 12e6
    # Every picture stored: the model's map and the evidence-only methods' (on request else).
    embedded = embedded.model_copy(update={"model_heatmap": True, "evidence": "eager"})

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            outcome = await ingest.ingest_bytes(storage, embedded, data=data,
                                               original_file_name="camera.jpg", user_id=None)
            await detection.run_all(storage, embedded, outcome.upload_id)
            upload = await repo.get_upload(storage.engine, outcome.upload_id)
            doc = (await storage.documents.find_detection_metadata(
                upload_id=outcome.upload_id))[0]
            return upload, doc, await _refs(storage, outcome.upload_id)

    upload, doc, refs = run(go())
    assert upload["status"] == "done"
    files = _stored_files(embedded)
    stored = sum(files.values())
    budget = len(data) * (1 + BUDGET_SHARE) + BUDGET_SLACK
    print(f"\noriginal {len(data):,} B; stored {stored:,} B in {len(files)} files "
          f"(budget {budget:,.0f}): {sorted(files.values())}")
    assert stored <= budget, files
    # The document lists only what stays, every stored file is one of them, no ref dangles.
    assert set(doc.blob_keys) <= KEPT and {"original", "thumbnail", "ela"} <= set(doc.blob_keys)
    assert set(files) == set(doc.blob_keys.values())
    assert set(refs) == set(doc.blob_keys.values())
    assert not set(refs.values()) & {"native_pixels", "neutral_pixels", "manifest"}
    # The heatmap is the voting model's map; the forensic methods vote with weight 0 and an
    # unusable calibration, so their map is kept as evidence and lists no anomaly.
    visual = doc.visual_anomalies
    assert visual.heatmap_source == "model" and visual.heatmap_path == doc.blob_keys["heatmap"]
    assert visual.forensic_heatmap_path == doc.blob_keys["forensic_heatmap"]
    assert visual.detected_anomalies == []


def test_a_redelivered_aggregate_after_release_returns_the_stored_verdict(embedded):
    """Aggregate releases the manifest: running it again (a redelivery) answers from the
    stored result instead of failing on the missing manifest."""
    from service import detection, ingest
    from storage.context import open_storage
    from testkit.images import encode, noisy_photo

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            outcome = await ingest.ingest_bytes(
                storage, embedded, data=encode(noisy_photo(seed=7), fmt="JPEG"),
                original_file_name="a.jpg", user_id=None)
            uid = outcome.upload_id
            manifest_key, methods = await detection.prepare(storage, embedded, uid)
            assert (await _refs(storage, uid))[manifest_key] == "manifest"
            results = [(await detection.detect(storage, embedded, uid, m, manifest_key))
                       .model_dump(mode="json") for m in methods]
            first = await detection.aggregate(storage, embedded, uid, manifest_key, results)
            again = await detection.aggregate(storage, embedded, uid, manifest_key, results)
            return first, again, storage.blobs.exists(manifest_key), await _refs(storage, uid)

    first, again, manifest_left, refs = run(go())
    assert again == first and not manifest_left
    assert "manifest" not in refs.values() and "native_pixels" not in refs.values()


def test_the_sweep_releases_intermediates_of_abandoned_canvases(embedded):
    """A canvas that died after prepare (its upload failed, or untouched past the TTL) leaves
    intermediates; the recovery sweep's cleanup removes them and their files."""
    from datetime import UTC, datetime, timedelta

    from service import detection, ingest, recovery
    from storage import blobrefs
    from storage import repository as repo
    from storage.context import open_storage
    from testkit.images import encode, noisy_photo

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            ids = []
            for seed in (21, 22):
                outcome = await ingest.ingest_bytes(
                    storage, embedded, data=encode(noisy_photo(seed=seed), fmt="JPEG"),
                    original_file_name=f"{seed}.jpg", user_id=None)
                await detection.prepare(storage, embedded, outcome.upload_id)
                ids.append(outcome.upload_id)
            failed, live = ids
            await repo.mark_failed(storage.engine, failed, "worker lost")
            before = {u: await _refs(storage, u) for u in ids}
            now = datetime.now(UTC)
            # What the recovery sweep runs (its blob store built from the settings).
            released = await recovery.release_abandoned(storage, embedded, now=now)
            after = {u: await _refs(storage, u) for u in ids}
            # Past the TTL even an unfinished canvas counts as abandoned.
            later = await blobrefs.release_stale_intermediates(
                storage, touched_before=now + timedelta(hours=1))
            return before, released, after, later, storage.blobs.exists, failed, live

    before, released, after, later, exists, failed, live = run(go())
    dropped = {k for k, kind in before[failed].items() if kind in blobrefs_kinds()}
    assert dropped and set(released) == dropped
    assert not any(exists(k) for k in dropped)
    assert set(after[failed].values()) <= {"original", "thumbnail"}
    assert after[live] == before[live]  # in flight: untouched
    assert {k for k, kind in before[live].items() if kind in blobrefs_kinds()} == set(later)


def blobrefs_kinds():
    from storage.blobrefs import INTERMEDIATE_KINDS

    return INTERMEDIATE_KINDS


def test_an_oversized_image_fails_at_prepare_with_the_reason_and_caches_nothing(embedded):
    """The pixel limit is checked on the header before any pixel is decoded: an upload
    admitted under a larger limit fails at prepare, naming the size and the limit."""
    from service import detection, ingest
    from storage import repository as repo
    from storage.context import open_storage
    from testkit.images import encode, noisy_photo

    data = encode(noisy_photo(rows=1200, cols=1000, seed=5), fmt="JPEG")
    strict = embedded.model_copy(update={"max_image_pixels": 1_000_000})

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            outcome = await ingest.ingest_bytes(storage, embedded, data=data,
                                               original_file_name="big.jpg", user_id=None)
            manifest_key, methods = await detection.prepare(storage, strict, outcome.upload_id)
            upload = await repo.get_upload(storage.engine, outcome.upload_id)
            return manifest_key, methods, upload, await _refs(storage, outcome.upload_id)

    manifest_key, methods, upload, refs = run(go())
    assert manifest_key is None and methods == []
    assert upload["status"] == "failed"
    assert "1,200,000 pixels, over the limit of 1,000,000" in upload["error"]
    assert set(refs.values()) == {"original"}


def test_a_released_crop_is_decoded_again_from_the_original(embedded):
    """A canvas whose crop was released under it (a recovered canvas racing the run it
    replaced) still runs its methods: they decode the original again."""
    # Another host; prnu computed in the canvas (not left for a request): it reads pixels.
    embedded = embedded.model_copy(update={"shared_pixels_dir": "", "evidence": "eager"})
    from service import canvas, detection, ingest
    from storage.context import open_storage

    data = camera_jpeg(rows=1400, cols=1800, seed=3)  # > 2 MP: the crop is cached as a PNG

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            outcome = await ingest.ingest_bytes(storage, embedded, data=data,
                                               original_file_name="c.jpg", user_id=None)
            uid = outcome.upload_id
            manifest_key, _ = await detection.prepare(storage, embedded, uid)
            refs = await _refs(storage, uid)
            crop = next(k for k, kind in refs.items() if kind == "native_pixels")
            first = await detection.detect(storage, embedded, uid, "prnu", manifest_key)
            canvas._recent.clear()  # another process: nothing read yet
            storage.blobs.delete(crop)
            again = await detection.detect(storage, embedded, uid, "prnu", manifest_key)
            return first, again

    first, again = run(go())
    assert first.status == again.status == "ok"
    assert first.details["native"] == again.details["native"]


def test_a_released_manifest_is_rebuilt_from_the_upload_row(embedded):
    """The whole canvas released under a method (an older run's aggregate finished after the
    recovery sweep re-sent the upload): the method reads the original instead of failing."""
    # Another host; prnu computed in the canvas (not left for a request): it reads pixels.
    embedded = embedded.model_copy(update={"shared_pixels_dir": "", "evidence": "eager"})
    from service import canvas, detection, ingest
    from storage.context import open_storage

    data = camera_jpeg(rows=1400, cols=1800, seed=4)

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            outcome = await ingest.ingest_bytes(storage, embedded, data=data,
                                               original_file_name="m.jpg", user_id=None)
            uid = outcome.upload_id
            manifest_key, _ = await detection.prepare(storage, embedded, uid)
            first = await detection.detect(storage, embedded, uid, "texture", manifest_key)
            canvas._recent.clear()
            await canvas.release(storage, uid)
            assert not storage.blobs.exists(manifest_key)
            again = await detection.detect(storage, embedded, uid, "texture", manifest_key)
            return first, again

    first, again = run(go())
    assert again.status == "ok" and first.status == "ok"
    assert again.details["native"] == first.details["native"]


def test_a_canvas_that_outlived_its_upload_writes_nothing_on_the_upload_given_its_id(embedded):
    """SQLite gives a deleted newest upload's id to the next upload: the old canvas's methods
    and aggregate must not land on it (another user's upload)."""
    from service import detection, ingest
    from storage import removal
    from storage import repository as repo
    from storage.context import open_storage

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            first = await ingest.ingest_bytes(storage, embedded, data=camera_jpeg(
                rows=600, cols=800, seed=5), original_file_name="a.jpg", user_id=None)
            manifest_key, methods = await detection.prepare(storage, embedded, first.upload_id)
            manifest = storage.blobs.get(manifest_key)
            assert await removal.delete_upload(storage, first.upload_id)
            second = await ingest.ingest_bytes(storage, embedded, data=camera_jpeg(
                rows=600, cols=800, seed=6), original_file_name="b.jpg", user_id=None)
            assert second.upload_id == first.upload_id  # the premise: SQLite reused the id
            # Its manifest gone (delete released it): aggregate writes nothing.
            gone = await detection.aggregate(storage, embedded, first.upload_id, manifest_key,
                                             [])
            # Its manifest still readable (a worker that read it before the delete).
            assert storage.blobs.put(manifest, suffix=".json") == manifest_key
            stale = [(await detection.detect(storage, embedded, first.upload_id, m,
                                             manifest_key)).model_dump(mode="json")
                     for m in methods]
            out = await detection.aggregate(storage, embedded, first.upload_id, manifest_key,
                                            stale)
            upload = await repo.get_upload(storage.engine, second.upload_id)
            result = await repo.result_for_upload(storage.engine, second.upload_id)
            refs = await _refs(storage, second.upload_id)
            return gone, stale, out, upload, result, refs

    gone, stale, out, upload, result, refs = run(go())
    assert gone["status"] == "superseded"
    # The methods that read the image skipped it; the evidence-only ones answered at once
    # (their evidence waits for a request: they wrote nothing either).
    assert {r["method"] for r in stale if r["status"] == "skipped"} == {"exif", "model"}
    assert all(r["details"].get("evidence") == "on_request" for r in stale
               if r["status"] != "skipped")
    assert out["status"] == "deleted"
    assert upload["original_file_name"] == "b.jpg" and upload["status"] == "queued"
    assert result is None
    assert set(refs.values()) == {"original"}
