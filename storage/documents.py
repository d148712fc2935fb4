"""The document store: the seed's two collections behind one small interface.

Two backends: MongoDB through PyMongo's ``AsyncMongoClient``, and the embedded default that
keeps the same documents as JSON rows in the SQL database. Both stay on the common ground of
DESIGN.md (whole-document replaces, no transactions, DuplicateKeyError not message text).
"""

from __future__ import annotations

import abc
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from bson import ObjectId
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.documents import DetectionMetadata, SystemConfiguration
from schemas.text import clean_json
from storage.models import embedded_documents

METADATA = "detection_metadata"
CONFIGURATION = "system_configuration"

# The seed's eight indexes: (collection, key, unique).
SEED_INDEXES: list[tuple[str, str, bool]] = [
    (METADATA, "result_id", True),
    (METADATA, "upload_id", False),
    (METADATA, "user_id", False),
    (METADATA, "aggregated_results.is_ai_generated", False),
    (METADATA, "created_at", False),
    (CONFIGURATION, "config_name", True),
    (CONFIGURATION, "config_type", False),
    (CONFIGURATION, "is_active", False),
]


class DuplicateDocumentError(Exception):
    """A document with the same unique key (result_id, config_name) already exists."""


def _now() -> datetime:
    return datetime.now(UTC)


def _doc_blob_keys(raw: dict) -> set[str]:
    keys = set((raw.get("blob_keys") or {}).values())
    ela = ((raw.get("pixel_analysis") or {}).get("ela_results") or {}).get("ela_image_path")
    heatmap = (raw.get("visual_anomalies") or {}).get("heatmap_path")
    return {k for k in (*keys, ela, heatmap) if isinstance(k, str) and k}


class DocumentStore(abc.ABC):
    """What the pipeline and the API need of the two collections."""

    @abc.abstractmethod
    async def ensure_indexes(self) -> list[str]:
        """Create the collections and the seed's indexes; idempotent. Returns index names."""

    @abc.abstractmethod
    async def insert_detection_metadata(self, doc: DetectionMetadata) -> str:
        """Insert a new document; raise DuplicateDocumentError if its result_id exists."""

    @abc.abstractmethod
    async def upsert_detection_metadata(self, doc: DetectionMetadata) -> str:
        """Write the document for ``doc.result_id``, replacing an earlier one; returns its id."""

    @abc.abstractmethod
    async def get_detection_metadata(self, result_id: int) -> DetectionMetadata | None: ...

    @abc.abstractmethod
    async def find_detection_metadata(self, *, upload_id: int) -> list[DetectionMetadata]: ...

    @abc.abstractmethod
    async def delete_detection_metadata(self, result_id: int) -> bool: ...

    @abc.abstractmethod
    async def referenced_blob_keys(self) -> set[str]:
        """Every blob key a detection_metadata document names (blob_keys, the ELA image,
        the heatmap): what `skygate blobs gc` must never remove."""

    @abc.abstractmethod
    async def upsert_configuration(self, cfg: SystemConfiguration) -> str: ...

    @abc.abstractmethod
    async def get_configuration(self, config_name: str) -> SystemConfiguration | None: ...

    @abc.abstractmethod
    async def active_configurations(self, config_type: str) -> list[SystemConfiguration]: ...

    @abc.abstractmethod
    async def missing_indexes(self) -> list[str]:
        """Reach the store; return the seed's indexes it lacks (``collection.key``)."""

    async def close(self) -> None:
        return None


class MongoDocumentStore(DocumentStore):
    """MongoDB backend. Create it inside the event loop (and, in workers, after the fork)."""

    def __init__(self, url: str, database: str, *, client: AsyncMongoClient | None = None):
        self._client = client or AsyncMongoClient(url, tz_aware=True, tzinfo=UTC)
        self._db = self._client[database]

    @staticmethod
    def _to_mongo(model) -> dict[str, Any]:
        body = clean_json(model.model_dump(mode="python", exclude={"id"}))
        if model.id:
            body["_id"] = ObjectId(model.id)
        return body

    @staticmethod
    def _from_mongo(cls, raw: dict[str, Any] | None):
        if raw is None:
            return None
        raw = dict(raw)
        raw["id"] = str(raw.pop("_id"))
        return cls.model_validate(raw)

    async def missing_indexes(self) -> list[str]:
        await self._db.command("ping")
        present: dict[str, set] = {}
        for collection in {c for c, _, _ in SEED_INDEXES}:
            info = await self._db[collection].index_information()
            present[collection] = {tuple(k for k, _ in spec["key"]) for spec in info.values()}
        return [f"{c}.{key}" for c, key, _ in SEED_INDEXES if (key,) not in present[c]]

    async def ensure_indexes(self) -> list[str]:
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
                "updated_at": _now(),
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
        return {k async for raw in cursor for k in _doc_blob_keys(raw)}

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
                "updated_at": _now(),
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


class SqlDocumentStore(DocumentStore):
    """Embedded backend: documents as JSON rows of ``embedded_documents`` (migration 0004)."""

    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    async def ensure_indexes(self) -> list[str]:
        # The table and its unique index come with the migrations; say what stands in for
        # the seed's indexes here.
        return ["uq_embedded_documents_collection_key"]

    async def missing_indexes(self) -> list[str]:
        async with self._engine.connect() as conn:
            await conn.execute(sa.select(sa.func.count()).select_from(embedded_documents))
        return []

    async def _get(self, collection: str, key: str) -> dict[str, Any] | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(embedded_documents.c.doc_id, embedded_documents.c.body).where(
                        embedded_documents.c.collection == collection,
                        embedded_documents.c.unique_key == key,
                    )
                )
            ).first()
        return None if row is None else {**row.body, "id": row.doc_id}

    async def _insert(self, collection: str, key: str, model) -> str:
        doc_id = model.id or str(ObjectId())
        body = clean_json(model.model_dump(mode="json", exclude={"id"}))
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    embedded_documents.insert().values(
                        doc_id=doc_id, collection=collection, unique_key=key, body=body
                    )
                )
        except IntegrityError as exc:
            raise DuplicateDocumentError(f"{collection} {key} exists") from exc
        return doc_id

    async def _upsert(self, collection: str, key: str, model) -> str:
        existing = await self._get(collection, key)
        if existing is None:
            try:
                return await self._insert(collection, key, model)
            except DuplicateDocumentError:
                existing = await self._get(collection, key)
        model = model.model_copy(
            update={"created_at": type(model).model_validate(existing).created_at,
                    "updated_at": _now()}
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                embedded_documents.update()
                .where(embedded_documents.c.doc_id == existing["id"])
                .values(body=clean_json(model.model_dump(mode="json", exclude={"id"})))
            )
        return existing["id"]

    async def insert_detection_metadata(self, doc: DetectionMetadata) -> str:
        return await self._insert(METADATA, str(doc.result_id), doc)

    async def upsert_detection_metadata(self, doc: DetectionMetadata) -> str:
        return await self._upsert(METADATA, str(doc.result_id), doc)

    async def get_detection_metadata(self, result_id: int) -> DetectionMetadata | None:
        raw = await self._get(METADATA, str(result_id))
        return None if raw is None else DetectionMetadata.model_validate(raw)

    async def find_detection_metadata(self, *, upload_id: int) -> list[DetectionMetadata]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(embedded_documents.c.doc_id, embedded_documents.c.body).where(
                    embedded_documents.c.collection == METADATA,
                    embedded_documents.c.body["upload_id"].as_integer() == upload_id,
                )
            )
            docs = [DetectionMetadata.model_validate({**r.body, "id": r.doc_id}) for r in rows]
        return sorted(docs, key=lambda d: d.result_id)

    async def referenced_blob_keys(self) -> set[str]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(embedded_documents.c.body)
                                      .where(embedded_documents.c.collection == METADATA))
            return {k for r in rows for k in _doc_blob_keys(r.body)}

    async def delete_detection_metadata(self, result_id: int) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                embedded_documents.delete().where(
                    embedded_documents.c.collection == METADATA,
                    embedded_documents.c.unique_key == str(result_id),
                )
            )
        return result.rowcount > 0

    async def upsert_configuration(self, cfg: SystemConfiguration) -> str:
        return await self._upsert(CONFIGURATION, cfg.config_name, cfg)

    async def get_configuration(self, config_name: str) -> SystemConfiguration | None:
        raw = await self._get(CONFIGURATION, config_name)
        return None if raw is None else SystemConfiguration.model_validate(raw)

    async def active_configurations(self, config_type: str) -> list[SystemConfiguration]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(embedded_documents.c.doc_id, embedded_documents.c.body).where(
                    embedded_documents.c.collection == CONFIGURATION
                )
            )
            configs = [
                SystemConfiguration.model_validate({**r.body, "id": r.doc_id}) for r in rows
            ]
        active = [c for c in configs if c.config_type == config_type and c.is_active]
        return sorted(active, key=lambda c: c.updated_at, reverse=True)
