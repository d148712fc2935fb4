"""Content-addressed blob store: originals, thumbnails, ELA images, heatmaps, decoded caches.

One interface (:class:`BlobStore`), two backends chosen by ``SKYGATE_BLOB_URL`` in one
factory (:func:`blob_store_for`): a folder (``file:///path``, the default is the data dir's
``blobs/``) or an S3 bucket (``s3://bucket/prefix``, boto3 imported only then).

For retry rules: :data:`TRANSIENT_BLOB_ERRORS` are the faults worth retrying (the store did not
answer); :class:`BlobNotFound` and other :class:`BlobStoreError` are not.
"""

from __future__ import annotations

from pathlib import Path

from schemas.settings import parse_blob_url
from storage.blobs.base import (
    TRANSIENT_BLOB_ERRORS,
    BlobNotFound,
    BlobStore,
    BlobStoreError,
    BlobStoreUnavailable,
    StagedBlob,
)
from storage.blobs.local import LocalBlobStore

# Deferred imports: the S3 store (boto3, the [s3] extra) loads only when configured.

__all__ = [
    "TRANSIENT_BLOB_ERRORS", "BlobNotFound", "BlobStore", "BlobStoreError",
    "BlobStoreUnavailable", "LocalBlobStore", "S3BlobStore", "StagedBlob", "blob_store_for",
    "parse_blob_url",
]


def __getattr__(name: str):
    if name == "S3BlobStore":  # boto3 is imported only by those who use S3
        from storage.blobs.s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(name)


def blob_store_for(settings) -> BlobStore:
    """The blob store the settings name (``SKYGATE_BLOB_URL``); every process that touches
    blobs — workers, API, CLI, ``skygate submit`` — builds it here."""
    if not settings.blob_url:
        return LocalBlobStore(settings.blob_dir)
    scheme, location, prefix = parse_blob_url(settings.blob_url)
    if scheme == "file":
        return LocalBlobStore(Path(location))
    from storage.blobs.s3 import S3BlobStore

    return S3BlobStore(
        location, prefix, endpoint_url=settings.s3_endpoint_url,
        staging_dir=settings.data_dir / "blob-staging",
        cache_dir=settings.data_dir / "blob-cache",
        retry_mode=settings.s3_retry_mode, max_attempts=settings.s3_max_attempts,
        connect_timeout=settings.s3_connect_timeout, read_timeout=settings.s3_read_timeout,
    )
