"""Validation of documents below the application: the embedded store validates each document
on write, and MongoDB's collections get ``$jsonSchema`` validators that accept what the store
writes and refuse raw pymongo inserts that break them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from jsonschema import Draft7Validator, validators
from jsonschema import ValidationError as SchemaError
from pydantic import ValidationError

from schemas.documents import AggregatedResults, DetectionMetadata, SystemConfiguration
from storage import migrate
from storage.db import create_engine
from storage.documents import METADATA, MongoDocumentStore, SqlDocumentStore
from storage.documents.validation import VALIDATORS
from tests.conftest import run

pytestmark = pytest.mark.integration


# --- documents ----------------------------------------------------------------------------


def _bad_document() -> DetectionMetadata:
    """A document no model would build, made the way code can: by assignment."""
    doc = DetectionMetadata(result_id=1, upload_id=1,
                            aggregated_results=AggregatedResults(confidence_score=0.9))
    doc.aggregated_results.confidence_score = 7.0  # not validated on assignment
    return doc


def test_embedded_store_validates_each_document_on_write(tmp_path):
    async def body():
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'docs.db'}")
        store = SqlDocumentStore(engine)
        try:
            await migrate.upgrade(engine)
            with pytest.raises(ValidationError):
                await store.insert_detection_metadata(_bad_document())
            with pytest.raises(ValidationError):
                await store.upsert_detection_metadata(_bad_document())
            good = DetectionMetadata(result_id=1, upload_id=1)
            await store.insert_detection_metadata(good)
            bad_update = good.model_copy(update={
                "aggregated_results": AggregatedResults.model_construct(confidence_score=-1.0)})
            with pytest.raises(ValidationError):
                await store.upsert_detection_metadata(bad_update)
            stored = await store.get_detection_metadata(1)
            return stored.upload_id
        finally:
            await engine.dispose()

    assert run(body()) == 1


def _bson_validator(schema: dict):
    """A JSON-Schema validator that reads MongoDB's ``bsonType`` for Python values as PyMongo
    would store them: how a ``$jsonSchema`` judges documents, without a MongoDB."""
    from bson import ObjectId

    kinds = {
        "object": dict, "array": list, "string": str, "null": type(None),
        "date": datetime, "objectId": ObjectId, "double": float,
        "int": int, "long": int, "decimal": float,
    }

    def is_kind(value, kind):
        if kind == "bool":
            return isinstance(value, bool)
        return isinstance(value, kinds[kind]) and not isinstance(value, bool)

    def bson_type(_validator, kind, value, _schema):
        wanted = kind if isinstance(kind, list) else [kind]
        if not any(is_kind(value, k) for k in wanted):
            yield SchemaError(f"{value!r} is not of bsonType {kind}")

    cls = validators.extend(Draft7Validator, {"bsonType": bson_type})
    return cls(schema)


def test_mongo_validator_accepts_what_the_store_writes_and_refuses_the_rest(mongo_url):
    """Judged locally with the generated ``$jsonSchema`` (nx-27017 does not enforce one):
    every document the store itself wrote passes; broken ones do not."""
    database = f"t_{uuid.uuid4().hex[:10]}"

    async def body():
        from pymongo import AsyncMongoClient

        store = MongoDocumentStore(mongo_url, database)
        raw = AsyncMongoClient(mongo_url, tz_aware=True, tzinfo=UTC)
        try:
            await store.ensure_indexes()
            doc = DetectionMetadata(result_id=5, upload_id=9, user_id=None)
            doc.exif_data.creation_date = datetime(2020, 1, 1, tzinfo=UTC)
            await store.upsert_detection_metadata(doc)
            await store.upsert_detection_metadata(doc)  # the replace path too
            await store.upsert_configuration(SystemConfiguration(
                config_name="c", config_type="model"))
            return (await raw[database][METADATA].find_one({"result_id": 5}),
                    await raw[database]["system_configuration"].find_one({"config_name": "c"}))
        finally:
            await store.close()
            await raw.close()

    metadata, configuration = run(body())
    check_metadata = _bson_validator(VALIDATORS[METADATA]["$jsonSchema"])
    check_config = _bson_validator(VALIDATORS["system_configuration"]["$jsonSchema"])
    assert list(check_metadata.iter_errors(metadata)) == []
    assert list(check_config.iter_errors(configuration)) == []

    broken = [
        {**metadata, "result_id": "five"},
        {k: v for k, v in metadata.items() if k != "upload_id"},
        {**metadata, "aggregated_results": {**metadata["aggregated_results"],
                                            "confidence_score": 1.5}},
        {**metadata, "model_results": [{"model_name": "m", "model_version": "1",
                                        "processing_time": -1.0}]},
        {**metadata, "created_at": "2020-01-01T00:00:00Z"},  # a string, not a date
    ]
    for bad in broken:
        assert list(check_metadata.iter_errors(bad)), bad
    assert list(check_config.iter_errors({**configuration, "is_active": "yes"}))
    assert list(check_config.iter_errors({"config_type": "model"}))


def test_mongo_collections_get_the_validators(mongo_url):
    """``ensure_indexes`` sends the validators (``create`` or ``collMod``). A server that
    enforces them (a real MongoDB: SKYGATE_TEST_MONGO_URL) refuses a raw bad insert."""
    from pymongo import AsyncMongoClient, monitoring
    from pymongo.errors import WriteError

    class Commands(monitoring.CommandListener):
        def __init__(self):
            self.sent = []

        def started(self, event):
            if event.command_name in ("create", "collMod"):
                self.sent.append((event.command_name, event.command.get(event.command_name),
                                  event.command.get("validator")))

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    database = f"t_{uuid.uuid4().hex[:10]}"
    listener = Commands()

    async def body():
        client = AsyncMongoClient(mongo_url, tz_aware=True, tzinfo=UTC,
                                  event_listeners=[listener])
        store = MongoDocumentStore(mongo_url, database, client=client)
        try:
            await store.ensure_indexes()
            await store.ensure_indexes()  # the second time: collMod on existing collections
            db = client[database]
            options = {c["name"]: c.get("options", {})
                       async for c in await db.list_collections()}
            if "validator" not in options.get(METADATA, {}):
                return None  # nx-27017: accepts the commands, keeps and enforces nothing
            await db[METADATA].insert_one({"result_id": 1, "upload_id": 1})
            with pytest.raises(WriteError) as refused:
                await db[METADATA].insert_one({"result_id": "one", "upload_id": 1})
            with pytest.raises(WriteError):
                await db[METADATA].insert_one(
                    {"result_id": 2, "upload_id": 1,
                     "aggregated_results": {"confidence_score": 3}})
            return refused.value.code
        finally:
            await store.close()

    code = run(body())
    sent = {(name, collection) for name, collection, _ in listener.sent}
    assert sent == {("create", METADATA), ("create", "system_configuration"),
                    ("collMod", METADATA), ("collMod", "system_configuration")}
    assert all(v == VALIDATORS[c] for _, c, v in listener.sent)
    if code is None:
        pytest.skip("this Mongo server (nx-27017) does not keep or enforce validators; "
                    "set SKYGATE_TEST_MONGO_URL to a real MongoDB to see it refuse")
    assert code == 121  # DocumentValidationFailure
