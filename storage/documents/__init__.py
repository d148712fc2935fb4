"""The document store: the seed's two collections (``detection_metadata``,
``system_configuration``) behind one interface (:class:`DocumentStore`, ``base.py``).

Two backends, chosen by the settings in one factory (:func:`document_store_for`): MongoDB
(``SKYGATE_MONGO_URL`` set; ``mongo.py``) or the embedded default that keeps the same
documents as JSON rows in the SQL database (``embedded.py``).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from storage.documents.base import (
    CONFIGURATION,
    METADATA,
    SEED_INDEXES,
    DocumentStore,
    DuplicateDocumentError,
    doc_blob_keys,
)
from storage.documents.embedded import SqlDocumentStore
from storage.documents.mongo import MongoDocumentStore, pool_options

__all__ = [
    "CONFIGURATION", "METADATA", "SEED_INDEXES", "DocumentStore", "DuplicateDocumentError",
    "MongoDocumentStore", "SqlDocumentStore", "doc_blob_keys", "document_store_for",
]


def document_store_for(settings, engine: AsyncEngine) -> DocumentStore:
    """The document store the settings name: MongoDB when ``SKYGATE_MONGO_URL`` is set (its
    pool sized by the settings), else the embedded store on ``engine``. Call inside the event
    loop that will use it."""
    if settings.mongo_url:
        return MongoDocumentStore(settings.mongo_url, settings.mongo_database,
                                  pool=pool_options(settings))
    return SqlDocumentStore(engine)
