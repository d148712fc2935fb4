"""The method registry: it agrees with the seeded ``detection_methods`` rows and the task
names, and a sixth method is one module (here: a Method registered in the test) plus one row."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa

from pipeline.document import build_metadata_document
from pipeline.methods.registry import (
    METHOD_NAMES,
    NEUTRAL_PIXELS,
    REGISTRY,
    Finding,
    Method,
    Picture,
    needs_of,
)
from schemas.results import UNCERTAIN_BAND, MethodResult, verdict_from_probability
from testkit.images import encode, noisy_photo
from tests.conftest import migrated, run


def test_registry_matches_the_seeded_method_rows(embedded):
    from storage import repository as repo
    from storage.context import open_storage

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            return await repo.active_methods(storage.engine)

    rows = run(go())
    assert list(rows) == list(REGISTRY)  # same names, same order (method_id)
    assert all(info["weight"] >= 0 for info in rows.values())


def test_method_names_are_the_registry_keys_and_only_there():
    import schemas.results

    assert tuple(REGISTRY) == METHOD_NAMES
    assert not hasattr(schemas.results, "METHOD_NAMES")  # schemas cannot import pipeline


def test_every_registered_method_has_a_detect_task():
    from workers import tasks

    assert set(tasks.DETECT_TASKS) == set(REGISTRY)
    assert all(tasks.DETECT_TASKS[m].name == f"skygate.detect.{m}" for m in REGISTRY)


def test_a_method_declares_only_known_inputs():
    with pytest.raises(ValueError, match="unknown inputs"):
        Method(name="bad", needs=frozenset({"telepathy"}), run=lambda: None)
    with pytest.raises(ValueError, match="config_type"):
        Method(name="bad", needs=frozenset({"config"}), run=lambda config: None)
    assert needs_of(["exif"]) == {"original_bytes"}
    assert needs_of(["nobody"]) == frozenset()


def test_one_verdict_rule_and_one_band():
    assert verdict_from_probability(0.5 + UNCERTAIN_BAND - 0.01) == (None, pytest.approx(0.64))
    assert verdict_from_probability(0.5 + UNCERTAIN_BAND) == (True, pytest.approx(0.65))
    assert verdict_from_probability(0.1) == (False, pytest.approx(0.9))
    assert verdict_from_probability(None) == (None, 0.0)


def test_document_sections_come_from_the_registry():
    class Verdict:
        is_ai_generated, confidence, contributing_factors = None, 0.5, []
        ai_probability, summary, algorithm_version = None, "", "test"

    doc = build_metadata_document(result_id=1, upload_id=1, user_id=None, file_info={},
                                  results={}, verdict=Verdict(), heatmap_path=None, anomalies=[])
    # Every seed section exists even when no method reported.
    assert doc.exif_data.exists is False and doc.pixel_analysis.prnu_results.pattern_score is None
    assert doc.model_results == [] and "method_results" not in doc.model_dump()


# --- a sixth method: one Method, one row ---------------------------------------------------


def _toy_run(*, neutral_pixels: np.ndarray) -> Finding:
    p = float(neutral_pixels.mean() / 255.0)
    verdict, confidence = verdict_from_probability(p)
    result = MethodResult(method="toy", ai_probability=p, is_ai_generated=verdict,
                          confidence=confidence, details={"mean_level": round(p * 255, 2)})
    return Finding(result, {"toy_picture": Picture(b"\x89PNG not really", ".png")})


TOY = Method(name="toy", needs=frozenset({NEUTRAL_PIXELS}), run=_toy_run,
             pictures={"toy_picture": "toy_picture_path"})


TOY_MODULE = '''
"""A toy method: the mean grey level as P(AI)."""
from pipeline.methods.base import NEUTRAL_PIXELS, Method
from schemas.results import MethodResult


def run(*, neutral_pixels):
    return MethodResult(method="toy", ai_probability=float(neutral_pixels.mean() / 255))


METHOD = Method(name="toy", needs=frozenset({NEUTRAL_PIXELS}), run=run)
'''


def test_a_method_module_is_found_by_itself_after_the_seed_methods(tmp_path):
    """Adding a method is one module (its ``METHOD``) and one row: no list to edit."""
    from pipeline.methods import __path__ as methods_path
    from pipeline.methods import registry

    (tmp_path / "toy.py").write_text(TOY_MODULE)
    (tmp_path / "helper.py").write_text("X = 1\n")  # no METHOD: not a method
    found = registry.discover([*methods_path, str(tmp_path)])
    assert list(found) == [*registry.SEED_ORDER, "toy"]
    assert found["toy"].needs == {NEUTRAL_PIXELS}
    assert list(registry.REGISTRY) == list(registry.SEED_ORDER)


async def _add_method_row(storage, name: str, weight: float = 0.5) -> None:
    from storage.models import detection_methods

    async with storage.engine.begin() as conn:
        await conn.execute(sa.insert(detection_methods).values(
            method_name=name, description=f"{name} (test)", weight=weight, is_active=True))


async def _method_rows(storage, upload_id: int) -> dict[str, dict]:
    from storage.models import detection_methods, detection_results, method_results

    async with storage.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(detection_methods.c.method_name, method_results.c.result_details)
            .join(method_results, method_results.c.method_id == detection_methods.c.method_id)
            .join(detection_results,
                  detection_results.c.result_id == method_results.c.result_id)
            .where(detection_results.c.upload_id == upload_id))
        return {r.method_name: (r.result_details if isinstance(r.result_details, dict)
                                else json.loads(r.result_details)) for r in rows}


def test_a_sixth_method_is_one_module_and_one_row(embedded, monkeypatch):
    from service import detection, ingest
    from storage.context import open_storage

    monkeypatch.setitem(REGISTRY, "toy", TOY)
    data = encode(noisy_photo(seed=14), fmt="JPEG")

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            await _add_method_row(storage, "toy")
            await _add_method_row(storage, "ghost")  # a row with no implementation
            outcome = await ingest.ingest_bytes(storage, embedded, data=data,
                                               original_file_name="toy.jpg", user_id=None)
            await detection.run_all(storage, embedded, outcome.upload_id)
            docs = await storage.documents.find_detection_metadata(upload_id=outcome.upload_id)
            rows = await _method_rows(storage, outcome.upload_id)
            stored = storage.blobs.keys()  # (key, size, mtime) rows, not a dict's keys
            return rows, docs[0], [k for k, _, _ in stored]

    rows, doc, blob_keys = run(go())
    assert set(rows) == {*METHOD_NAMES, "toy", "ghost"}
    toy = rows["toy"]
    assert toy["status"] == "ok" and 0 < toy["ai_probability"] < 1
    assert toy["mean_level"] > 0 and toy["toy_picture_path"] in blob_keys
    assert rows["ghost"]["status"] == "skipped"
    assert "no implementation" in rows["ghost"]["abstain_reason"]
    # The document: the toy's generic section, its picture among the result's blobs, and the
    # five seed sections unchanged.
    section = doc.model_dump()["method_results"]["toy"]
    assert section["details"]["mean_level"] == toy["mean_level"]
    assert doc.blob_keys["toy_picture"] == toy["toy_picture_path"]
    # prnu has no usable calibration: its statistics wait for a request (service.evidence).
    assert doc.pixel_analysis.prnu_results.details["evidence"] == "on_request"
    assert doc.exif_data.analysis_result is not None


def test_prepare_caches_only_what_the_active_methods_read(embedded):
    from service import detection, ingest
    from storage.context import open_storage
    from storage.models import detection_methods

    data = encode(noisy_photo(seed=15), fmt="JPEG")

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            async with storage.engine.begin() as conn:
                await conn.execute(sa.update(detection_methods)
                                   .where(detection_methods.c.method_name != "exif")
                                   .values(is_active=False))
            outcome = await ingest.ingest_bytes(storage, embedded, data=data,
                                               original_file_name="exif.jpg", user_id=None)
            # prepare alone, to read the manifest before aggregate releases it.
            manifest_key, _ = await detection.prepare(storage, embedded, outcome.upload_id)
            manifest = json.loads(storage.blobs.get(manifest_key))
            await detection.run_all(storage, embedded, outcome.upload_id)
            doc = (await storage.documents.find_detection_metadata(
                upload_id=outcome.upload_id))[0]
            rows = await _method_rows(storage, outcome.upload_id)
            return doc, manifest, rows

    doc, manifest, rows = run(go())
    assert "native_pixels" not in doc.blob_keys and "neutral_pixels" not in doc.blob_keys
    assert "native_key" not in manifest and "neutral_key" not in manifest
    assert "native_from_original" not in manifest and "manifest" not in doc.blob_keys
    assert manifest["thumbnail_key"]
    assert set(rows) == {"exif"} and rows["exif"]["status"] == "ok"


def test_a_row_without_a_task_is_skipped_on_the_celery_path_too(embedded):
    """workers/tasks.py sends only registered methods to their tasks; aggregate records an
    unregistered active row as skipped, like the embedded runner, not as a lost result."""
    from service import detection, ingest
    from storage.context import open_storage

    data = encode(noisy_photo(seed=16), fmt="JPEG")

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            await _add_method_row(storage, "ghost")
            outcome = await ingest.ingest_bytes(storage, embedded, data=data,
                                               original_file_name="g.jpg", user_id=None)
            upload_id = outcome.upload_id
            manifest_key, methods = await detection.prepare(storage, embedded, upload_id)
            results = [(await detection.detect(storage, embedded, upload_id, m, manifest_key))
                       .model_dump(mode="json") for m in methods if m in REGISTRY]
            await detection.aggregate(storage, embedded, upload_id, manifest_key, results)
            return methods, await _method_rows(storage, upload_id)

    methods, rows = run(go())
    assert "ghost" in methods and set(rows) == {*METHOD_NAMES, "ghost"}
    assert rows["ghost"]["status"] == "skipped"
    assert all(rows[m]["status"] != "error" for m in METHOD_NAMES)
