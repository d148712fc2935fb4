"""Embedded backend of the document store: the same documents as JSON rows of the SQL
table ``embedded_documents`` (migration 0004), on SQLite (the default) or PostgreSQL.

Every body is re-validated with its pydantic model before it is written (``check_body``): a
bad document raises ``pydantic.ValidationError`` and nothing is stored. Migration 0010 has the
table itself accept only the two collections' names.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from bson import ObjectId
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.clock import utcnow
from schemas.documents import DetectionMetadata, SystemConfiguration
from schemas.text import clean_json
from storage.db import autocommit
from storage.documents.base import (
    CONFIGURATION,
    METADATA,
    DocumentStore,
    DuplicateDocumentError,
    doc_blob_keys,
)
from storage.documents.validation import check_body
from storage.models import embedded_documents


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
        async with autocommit(self._engine) as conn:
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
        check_body(collection, body)
        try:
            # One statement, atomic by itself: no transaction around it (storage.db).
            async with autocommit(self._engine) as conn:
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
                    "updated_at": utcnow()}
        )
        body = clean_json(model.model_dump(mode="json", exclude={"id"}))
        check_body(collection, body)
        async with autocommit(self._engine) as conn:
            await conn.execute(
                embedded_documents.update()
                .where(embedded_documents.c.doc_id == existing["id"])
                .values(body=body)
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
            return {k for r in rows for k in doc_blob_keys(r.body)}

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
        async with autocommit(self._engine) as conn:
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
