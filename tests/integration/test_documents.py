"""The document store contract, run against every backend: MongoDB (nx-27017 or a real one
via SKYGATE_TEST_MONGO_URL), the embedded SQLite store and the SQL store on PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.documents import (
    AggregatedResults,
    BoundingBox,
    ContributingFactor,
    DetectedAnomaly,
    DetectionMetadata,
    ExifData,
    GpsCoordinates,
    ModelResult,
    SystemConfiguration,
)
from storage import migrate
from storage.db import create_engine
from storage.documents import (
    SEED_INDEXES,
    DuplicateDocumentError,
    MongoDocumentStore,
    SqlDocumentStore,
)
from tests.conftest import run

BACKENDS = ["mongo", "sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def with_store(request, tmp_path):
    """Returns ``go(body)``: runs ``await body(store)`` on a fresh store in a fresh loop."""
    kind = request.param
    if kind == "mongo":
        url = request.getfixturevalue("mongo_url")
        database = f"t_{uuid.uuid4().hex[:10]}"

        async def make():
            store = MongoDocumentStore(url, database)
            await store.ensure_indexes()
            return store, None
    elif kind == "sqlite":
        async def make():
            engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'docs.db'}")
            await migrate.upgrade(engine)
            return SqlDocumentStore(engine), engine
    else:
        pg = request.getfixturevalue("migrated_pg_url")

        async def make():
            engine = create_engine(pg.replace("postgresql://", "postgresql+asyncpg://"))
            from sqlalchemy import text

            async with engine.begin() as conn:
                await conn.execute(text("DELETE FROM embedded_documents"))
            return SqlDocumentStore(engine), engine

    def go(body):
        async def wrapped():
            store, engine = await make()
            try:
                return await body(store)
            finally:
                await store.close()
                if engine is not None:
                    await engine.dispose()

        return run(wrapped())

    go.kind = kind
    return go


def rich_document(result_id: int, **overrides) -> DetectionMetadata:
    doc = DetectionMetadata(
        result_id=result_id,
        upload_id=result_id * 10,
        user_id=7,
        exif_data=ExifData(
            exists=True,
            camera_make="Canon",
            camera_model="EOS 5D",
            creation_date=datetime(2021, 5, 4, 12, 30, tzinfo=timezone(timedelta(hours=2))),
            gps_coordinates=GpsCoordinates(latitude=48.85, longitude=2.35),
        ),
        model_results=[
            ModelResult(
                model_name="lr",
                model_version="1",
                is_ai_generated=False,
                confidence=0.8,
                processing_time=0.01,
                feature_importance={"flat_noise": -1.2, "nested": {"a": [1, 2]}},
            )
        ],
        aggregated_results=AggregatedResults(
            is_ai_generated=False,
            confidence_score=0.8123,
            contributing_factors=[ContributingFactor(factor="prnu", weight=0.6, contribution=-0.4)],
        ),
    )
    doc.visual_anomalies.detected_anomalies.append(
        DetectedAnomaly(
            type="smooth_region",
            confidence=0.7,
            bounding_box=BoundingBox(x=0, y=8, width=64, height=64),
            description="no sensor noise",
        )
    )
    return doc.model_copy(update=overrides)


def test_document_round_trips_with_nested_fields_and_aware_datetimes(with_store):
    doc = rich_document(1)

    async def body(store):
        doc_id = await store.upsert_detection_metadata(doc)
        return doc_id, await store.get_detection_metadata(1)

    doc_id, back = with_store(body)
    assert back.id == doc_id and len(doc_id) == 24
    assert back.model_dump(exclude={"id"}) == doc.model_dump(exclude={"id"}) or (
        # Mongo stores datetimes in UTC with millisecond precision.
        back.exif_data.creation_date == doc.exif_data.creation_date
    )
    assert back.exif_data.creation_date.tzinfo is not None
    assert back.exif_data.creation_date == doc.exif_data.creation_date
    assert back.created_at.utcoffset() == timedelta(0)
    assert abs(back.created_at - doc.created_at) < timedelta(milliseconds=1)
    assert back.model_results[0].feature_importance == {"flat_noise": -1.2, "nested": {"a": [1, 2]}}
    assert back.visual_anomalies.detected_anomalies[0].bounding_box.y == 8
    assert back.aggregated_results.contributing_factors[0].factor == "prnu"
    assert back.exif_data.gps_coordinates.latitude == 48.85


def test_duplicate_result_id_is_rejected_by_unique_index(with_store):
    async def body(store):
        await store.insert_detection_metadata(rich_document(2))
        with pytest.raises(DuplicateDocumentError):
            await store.insert_detection_metadata(rich_document(2))
        return await store.find_detection_metadata(upload_id=20)

    assert len(with_store(body)) == 1


def test_upsert_twice_leaves_one_document_keeping_id_and_created_at(with_store):
    async def body(store):
        first = await store.upsert_detection_metadata(rich_document(3))
        before = await store.get_detection_metadata(3)
        changed = rich_document(
            3, aggregated_results=AggregatedResults(is_ai_generated=True, confidence_score=0.99)
        )
        second = await store.upsert_detection_metadata(changed)
        after = await store.find_detection_metadata(upload_id=30)
        return first, second, before, after

    first, second, before, after = with_store(body)
    assert first == second
    assert len(after) == 1
    assert after[0].aggregated_results.is_ai_generated is True
    assert after[0].created_at == before.created_at
    assert after[0].updated_at >= before.updated_at


def test_delete_document(with_store):
    async def body(store):
        await store.upsert_detection_metadata(rich_document(4))
        gone = await store.delete_detection_metadata(4)
        again = await store.delete_detection_metadata(4)
        return gone, again, await store.get_detection_metadata(4)

    assert with_store(body) == (True, False, None)


def test_configuration_upsert_and_active_lookup(with_store):
    async def body(store):
        older = SystemConfiguration(
            config_name="model_a", config_type="model",
            parameters={"model_path": "/m/a.onnx", "input_size": {"width": 224, "height": 224},
                        "batch_size": 4, "threshold": 0.6},
            updated_at=datetime(2020, 1, 1, tzinfo=UTC),
        )
        await store.upsert_configuration(older)
        await store.upsert_configuration(
            SystemConfiguration(config_name="model_b", config_type="model", is_active=False)
        )
        await store.upsert_configuration(
            SystemConfiguration(config_name="thr", config_type="threshold",
                                parameters={"threshold": 0.7, "custom": "kept"})
        )
        # Same name again: replaced, not duplicated.
        await store.upsert_configuration(older.model_copy(update={"is_active": True}))
        return (
            await store.active_configurations("model"),
            await store.get_configuration("thr"),
        )

    models, thr = with_store(body)
    assert [m.config_name for m in models] == ["model_a"]
    assert models[0].parameters.input_size.width == 224
    assert thr.parameters.threshold == 0.7
    assert thr.parameters.model_extra["custom"] == "kept"


def test_mongo_has_the_eight_seed_indexes(mongo_url):
    database = f"t_{uuid.uuid4().hex[:10]}"

    async def body():
        store = MongoDocumentStore(mongo_url, database)
        try:
            await store.ensure_indexes()
            await store.ensure_indexes()  # idempotent
            found = {}
            for collection in ("detection_metadata", "system_configuration"):
                info = await store._db[collection].index_information()
                for name, spec in info.items():
                    if name != "_id_":
                        found[(collection, spec["key"][0][0])] = bool(spec.get("unique"))
            return found
        finally:
            await store.close()

    found = run(body())
    assert found == {(c, k): u for c, k, u in SEED_INDEXES}
    assert len(found) == 8
