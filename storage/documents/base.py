"""The document store's interface: the seed's two collections behind one small contract.

Backends (``mongo.py``, ``embedded.py``) stay on the ground both can hold: whole-document
replaces, no transactions, DuplicateKeyError (never a message's text) for a duplicate.
"""

from __future__ import annotations

import abc

from schemas.documents import DetectionMetadata, SystemConfiguration

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


def doc_blob_keys(raw: dict) -> set[str]:
    """The blob keys one raw detection_metadata document names."""
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
