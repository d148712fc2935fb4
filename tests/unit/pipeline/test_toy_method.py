"""A voting method is one module plus one ``detection_methods`` row: the toy below (a module
file found by the registry, a row with a weight) is run, weighted into the verdict, stored,
shown in the batch outputs, and stacked by the training code — no list edited anywhere."""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from testkit.images import encode, noisy_photo
from tests.conftest import migrated, run

TOY_MODULE = '''
"""A toy voting method: the mean grey level of the neutral view as P(AI)."""
from pipeline.methods.base import NEUTRAL_PIXELS, Method
from schemas.results import MethodResult, verdict_from_probability


def run(*, neutral_pixels):
    p = float(neutral_pixels.mean() / 255)
    verdict, confidence = verdict_from_probability(p)
    return MethodResult(method="toy", ai_probability=p, is_ai_generated=verdict,
                        confidence=confidence, details={"mean_level": round(p * 255, 2)})


METHOD = Method(name="toy", needs=frozenset({NEUTRAL_PIXELS}), run=run)
'''
TOY_WEIGHT = 0.75


def _with_toy(tmp_path, monkeypatch):
    """The registry as it is with the toy's module in the methods' folder."""
    from pipeline.methods import __path__ as methods_path
    from pipeline.methods import registry

    (tmp_path / "toy.py").write_text(TOY_MODULE)
    found = registry.discover([*methods_path, str(tmp_path)])
    monkeypatch.setitem(registry.REGISTRY, "toy", found["toy"])


async def _add_row(storage) -> None:
    from storage.models import detection_methods

    async with storage.engine.begin() as conn:
        await conn.execute(sa.insert(detection_methods).values(
            method_name="toy", description="toy (test)", weight=TOY_WEIGHT, is_active=True))


def test_a_toy_voting_method_is_weighted_stored_shown_and_stacked(embedded, tmp_path,
                                                                   monkeypatch):
    from pipeline.methods.registry import method_names, stacked_methods
    from scripts.training import stacking
    from service import detection, ingest
    from skygate.batch import csv_fields, flatten, record_for
    from storage import repository as repo
    from storage.context import open_storage

    _with_toy(tmp_path, monkeypatch)
    data = encode(noisy_photo(seed=28), fmt="JPEG")

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            await _add_row(storage)
            outcome = await ingest.ingest_bytes(storage, embedded, data=data,
                                               original_file_name="toy.jpg", user_id=None)
            await detection.run_all(storage, embedded, outcome.upload_id)
            result = await repo.result_for_upload(storage.engine, outcome.upload_id)
            (doc,) = await storage.documents.find_detection_metadata(
                upload_id=outcome.upload_id)
            record = await record_for(storage.engine, storage.documents,
                                      path="toy.jpg", sha256=outcome.sha256,
                                      upload_id=outcome.upload_id, status=outcome.status)
            return result, doc, record

    result, doc, record = run(go())
    # Stored: its method_results row, with its own details.
    toy = result["methods"]["toy"]
    assert toy["status"] == "ok" and 0.5 <= toy["confidence"] <= 1
    # Weighted: a term of the verdict with the row's weight.
    factors = {f.factor: f for f in doc.aggregated_results.contributing_factors}
    assert factors["toy"].weight == TOY_WEIGHT and factors["toy"].contribution != 0
    assert doc.model_dump()["method_results"]["toy"]["details"]["mean_level"] > 0
    assert "toy" in result["result_summary"]
    # Shown: the batch outputs' columns (JSON lines and CSV) name it, with its values.
    assert method_names()[-1] == "toy"
    assert {"toy_is_ai_generated", "toy_confidence", "toy_status"} <= set(csv_fields())
    assert flatten(record)["toy_status"] == "ok"
    # Stacked: the training code's stacking fit learns a weight for it.
    methods = stacked_methods()
    assert "toy" in methods and "exif" not in methods
    rng = np.random.default_rng(28)
    y = np.repeat([0, 1], 200)
    probabilities = {m: np.clip(rng.normal(0.5, 0.15, y.size), 0.01, 0.99) for m in methods}
    probabilities["toy"] = np.where(y == 1, rng.uniform(0.6, 0.95, y.size),
                                    rng.uniform(0.05, 0.4, y.size))
    weights, _ = stacking.fit_stack(stacking.design(probabilities, methods), y, methods)
    assert set(weights) == set(methods) and weights["toy"] > 0
