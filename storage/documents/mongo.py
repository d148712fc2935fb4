"""MongoDB backend of the document store, through PyMongo's ``AsyncMongoClient``.

``ensure_indexes`` also puts the models' ``$jsonSchema`` validators on the collections
(storage/documents/validation.py), so MongoDB itself refuses malformed documents.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import CollectionInvalid, DuplicateKeyError

from schemas.clock import utcnow
from schemas.documents import DetectionMetadata, SystemConfiguration
from schemas.text import clean_json
from storage.documents.base import (
    CONFIGURATION,
    METADATA,
    SEED_INDEXES,
    DocumentStore,
    DuplicateDocumentError,
    doc_blob_keys,
)
from storage.documents.validation import VALIDATORS


def pool_options(settings) -> dict:
    """``AsyncMongoClient`` pool keywords from the settings (``mongo_*_pool_size``,
    ``mongo_wait_queue_timeout_ms``; a timeout of 0 waits without limit)."""
    return {"maxPoolSize": settings.mongo_max_pool_size,
            "minPoolSize": settings.mongo_min_pool_size,
            "waitQueueTimeoutMS": settings.mongo_wait_queue_timeout_ms or None}


class MongoDocumentStore(DocumentStore):
    """MongoDB backend. Create it inside the event loop (and, in workers, after the fork).

    ``pool``: the client's pool keywords (:func:`pool_options`); PyMongo's defaults without.
    """

    def __init__(self, url: str, database: str, *, client: AsyncMongoClient | None = None,
                 pool: dict | None = None):
        self._client = client or AsyncMongoClient(url, tz_aware=True, tzinfo=UTC,
                                                  **(pool or {}))
        self._db = self._client[database]

    def pool_status(self) -> dict:
        """The configured pool: ``max``, ``min``, ``wait_queue_timeout_ms``."""
        opts = self._client.options.pool_options
        timeout = opts.wait_queue_timeout
        return {"max": opts.max_pool_size, "min": opts.min_pool_size,
                "wait_queue_timeout_ms": None if timeout is None else int(timeout * 1000)}

    @staticmethod
    def _to_mongo(model) -> dict[str, Any]:
        body = clean_json(model.model_dump(mode="python", exclude={"id"}))
        if model.id:
            body["_id"] = ObjectId(model.id)
        return body

    @staticmethod
    def _from_mongo(model, raw: dict[str, Any] | None):
        if raw is None:
            return None
        raw = dict(raw)
        raw["id"] = str(raw.pop("_id"))
        return model.model_validate(raw)

    async def missing_indexes(self) -> list[str]:
        await self._db.command("ping")
        present: dict[str, set] = {}
        for collection in {c for c, _, _ in SEED_INDEXES}:
            info = await self._db[collection].index_information()
            present[collection] = {tuple(k for k, _ in spec["key"]) for spec in info.values()}
        return [f"{c}.{key}" for c, key, _ in SEED_INDEXES if (key,) not in present[c]]

    async def ensure_validators(self) -> None:
        """Create each collection with its ``$jsonSchema`` validator, or set it on an existing
        one (``collMod``): the server then refuses a document the models would refuse, even
        one written around this store. Documents already stored are not re-checked."""
        existing = set(await self._db.list_collection_names())
        for collection, validator in VALIDATORS.items():
            options = {"validator": validator, "validationLevel": "strict",
                       "validationAction": "error"}
            if collection not in existing:
                try:
                    await self._db.create_collection(collection, **options)
                    continue
                except CollectionInvalid:
                    pass  # created meanwhile by another process: set the validator below
            await self._db.command("collMod", collection, **options)

    async def ensure_indexes(self) -> list[str]:
        await self.ensure_validators()
        names = []
        for collection, key, unique in SEED_INDEXES:
            names.append(
                await self._db[collection].create_index([(key, ASCENDING)], unique=unique)
            )
        return names

    async def insert_detection_metadata(self, doc: DetectionMetadata) -> str:
        body = self._to_mongo(doc)
        try:
            result = await self._db[METADATA].insert_one(body)
        except DuplicateKeyError as exc:
            raise DuplicateDocumentError(f"result_id {doc.result_id} exists") from exc
        return str(result.inserted_id)

    async def upsert_detection_metadata(self, doc: DetectionMetadata) -> str:
        collection = self._db[METADATA]
        existing = await collection.find_one({"result_id": doc.result_id})
        if existing is None:
            try:
                return await self.insert_detection_metadata(doc)
            except DuplicateDocumentError:
                # Another delivery of the same aggregate won the race: replace its document.
                existing = await collection.find_one({"result_id": doc.result_id})
        doc = doc.model_copy(
            update={
                "id": str(existing["_id"]),
                "created_at": existing.get("created_at", doc.created_at),
                "updated_at": utcnow(),
            }
        )
        await collection.replace_one({"_id": existing["_id"]}, self._to_mongo(doc))
        return doc.id

    async def get_detection_metadata(self, result_id: int) -> DetectionMetadata | None:
        raw = await self._db[METADATA].find_one({"result_id": result_id})
        return self._from_mongo(DetectionMetadata, raw)

    async def find_detection_metadata(self, *, upload_id: int) -> list[DetectionMetadata]:
        cursor = self._db[METADATA].find({"upload_id": upload_id}).sort("result_id", ASCENDING)
        return [self._from_mongo(DetectionMetadata, raw) async for raw in cursor]

    async def delete_detection_metadata(self, result_id: int) -> bool:
        result = await self._db[METADATA].delete_one({"result_id": result_id})
        return result.deleted_count > 0

    async def referenced_blob_keys(self) -> set[str]:
        # Top-level projections only (the wire-protocol server has no dotted projections).
        cursor = self._db[METADATA].find(
            {}, {"blob_keys": 1, "pixel_analysis": 1, "visual_anomalies": 1})
        return {k async for raw in cursor for k in doc_blob_keys(raw)}

    async def upsert_configuration(self, cfg: SystemConfiguration) -> str:
        collection = self._db[CONFIGURATION]
        existing = await collection.find_one({"config_name": cfg.config_name})
        if existing is None:
            try:
                result = await collection.insert_one(self._to_mongo(cfg))
                return str(result.inserted_id)
            except DuplicateKeyError:
                existing = await collection.find_one({"config_name": cfg.config_name})
        cfg = cfg.model_copy(
            update={
                "id": str(existing["_id"]),
                "created_at": existing.get("created_at", cfg.created_at),
                "updated_at": utcnow(),
            }
        )
        await collection.replace_one({"_id": existing["_id"]}, self._to_mongo(cfg))
        return cfg.id

    async def get_configuration(self, config_name: str) -> SystemConfiguration | None:
        raw = await self._db[CONFIGURATION].find_one({"config_name": config_name})
        return self._from_mongo(SystemConfiguration, raw)

    async def active_configurations(self, config_type: str) -> list[SystemConfiguration]:
        cursor = (
            self._db[CONFIGURATION]
            .find({"config_type": config_type, "is_active": True})
            .sort("updated_at", -1)
        )
        return [self._from_mongo(SystemConfiguration, raw) async for raw in cursor]

    async def close(self) -> None:
        await self._client.close()
