"""The blob store in an S3 bucket (AWS S3, MinIO, Ceph, R2, …), through boto3.

Objects are named ``<prefix><key>``. Staging (bytes streaming in from an HTTP request) stays on
the local disk of the process that receives them — the API validates the file by path while it
is hashed — and ``commit`` uploads the finished file under its key; staging files are listed by
``keys`` as ``.staging/<name>`` so that ``skygate blobs gc`` removes abandoned ones exactly as it
does for the folder backend.

Errors: a missing object is :class:`BlobNotFound` naming the key and the bucket; a store that
does not answer (connection refused or reset, timeouts, HTTP 5xx, throttling), after botocore's
own retries (``standard`` or ``adaptive`` mode), is :class:`BlobStoreUnavailable` — transient,
the task is retried later; anything else (access denied, no such bucket, no credentials) is a
plain :class:`BlobStoreError`, which retrying would not fix.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from storage.blobs.base import (
    BlobNotFound,
    BlobStore,
    BlobStoreError,
    BlobStoreUnavailable,
    StagedBlob,
    write_atomically,
)

# Deferred imports: boto3 and botocore (the [s3] extra) load when an S3 store is built.

# Error codes S3 and its look-alikes answer when trying again later helps.
_TRANSIENT_CODES = {
    "RequestTimeout", "RequestTimeoutException", "SlowDown", "Throttling", "ThrottlingException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "ServiceUnavailable", "InternalError",
    "XMinioServerNotInitialized", "500", "502", "503", "504",
}
_MISSING_CODES = {"NoSuchKey", "NotFound", "404"}
_SERVER_ERROR = 500  # HTTP 5xx: the store's fault, worth trying again

STAGING = ".staging"


class S3BlobStore(BlobStore):
    def __init__(self, bucket: str, prefix: str = "", *, staging_dir: Path,
                 endpoint_url: str | None = None, retry_mode: str = "standard",
                 max_attempts: int = 5, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, cache_dir: Path | None = None):
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # the light install leaves the S3 client out
            raise RuntimeError("an s3:// blob URL needs boto3: pip install 'skygate[s3]'") from exc

        if not bucket:
            raise ValueError("an s3:// blob URL needs a bucket: s3://BUCKET[/PREFIX]")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url or None
        self.staging_dir = Path(staging_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else self.staging_dir.parent / "blob-cache"
        config = Config(
            retries={"mode": retry_mode, "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            # MinIO and most S3 look-alikes serve buckets by path, not by host name.
            s3={"addressing_style": "path"} if self.endpoint_url else None,
            max_pool_connections=20,
        )
        # A session of its own: boto3's default session is not safe to share across threads.
        self.client = boto3.session.Session().client("s3", endpoint_url=self.endpoint_url,
                                                     config=config)

    # --- naming and errors --------------------------------------------------------------

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where

    def _name(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or ".." in parts or "" in parts:
            raise BlobNotFound(key, self.describe())
        return self.prefix + key

    def _error(self, exc: Exception, key: str, action: str) -> BlobStoreError:
        from botocore.exceptions import (
            ClientError,
            HTTPClientError,
            IncompleteReadError,
            ResponseStreamingError,
        )
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )

        where = f"s3://{self.bucket}/{self.prefix}{key}"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code in _MISSING_CODES:
                return BlobNotFound(key, self.describe())
            message = f"{action} {where}: {code or status} {error.get('Message', '')}".strip()
            if status >= _SERVER_ERROR or code in _TRANSIENT_CODES:
                return BlobStoreUnavailable(message)
            return BlobStoreError(message)
        if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError,
                            ResponseStreamingError)):
            return BlobStoreUnavailable(f"{action} {where}: {exc}")
        return BlobStoreError(f"{action} {where}: {type(exc).__name__}: {exc}")

    def _call(self, action: str, key: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, key, action) from exc

    # --- the interface --------------------------------------------------------------------

    def _head(self, key: str) -> dict | None:
        try:
            return self._call("HEAD", key, self.client.head_object, Key=self._name(key))
        except BlobNotFound:
            return None

    def put(self, data: bytes, *, suffix: str = "") -> str:
        key = self.key_for(hashlib.sha256(data).hexdigest(), suffix)
        # Content-addressed: an object under this key already holds these bytes.
        if self._head(key) is None:
            self._call("PUT", key, self.client.put_object, Key=self._name(key), Body=data)
        return key

    def _probe_put(self, key: str, data: bytes) -> None:
        self._call("PUT", key, self.client.put_object, Key=self._name(key), Body=data)

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        response = self._call("GET", key, self.client.get_object, Key=self._name(key))
        try:
            return response["Body"].read()
        except (BotoCoreError, ClientError, OSError) as exc:
            # The connection broke while the body streamed: worth another try later.
            raise BlobStoreUnavailable(f"GET s3://{self.bucket}/{self.prefix}{key}: "
                                       f"{type(exc).__name__}: {exc}") from exc

    def exists(self, key: str) -> bool:
        if key.startswith(STAGING + "/"):
            return self._staged_path(key).exists()
        return self._head(key) is not None

    def delete(self, key: str) -> bool:
        if key.startswith(STAGING + "/"):
            try:
                self._staged_path(key).unlink()
                return True
            except FileNotFoundError:
                return False
        # S3's DELETE succeeds whether or not the object was there: ask first, so the
        # answer means the same as the folder's (callers count what they freed).
        if self._head(key) is None:
            return False
        self._call("DELETE", key, self.client.delete_object, Key=self._name(key))
        return True

    def local_path(self, key: str) -> Path:
        """A local copy, downloaded once into the cache folder (keys name their content, so
        a cached copy never goes stale)."""
        self._name(key)  # refuses keys that would leave the folder
        path = self.cache_dir / key
        if not path.exists():
            write_atomically(path, self.get(key))
        return path

    def stage(self) -> StagedBlob:
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.staging_dir, prefix="up-")
        os.close(fd)
        return StagedBlob(Path(tmp))

    def commit(self, staged: StagedBlob, key: str) -> str:
        staged.finish()
        name = self._name(key)
        if self._head(key) is None:
            with open(staged.path, "rb") as fh:
                self._call("PUT", key, self.client.put_object, Key=name, Body=fh,
                           ContentLength=staged.size)
        staged.path.unlink(missing_ok=True)
        return key

    def _staged_path(self, key: str) -> Path:
        name = key[len(STAGING) + 1:]
        if not name or "/" in name or name.startswith("."):
            raise BlobNotFound(key, str(self.staging_dir))
        return self.staging_dir / name

    def keys(self):
        paginator = self.client.get_paginator("list_objects_v2")
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", ()):
                    key = obj["Key"][len(self.prefix):]
                    if key.startswith(".doctor-"):
                        continue
                    yield key, obj["Size"], obj["LastModified"].timestamp()
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "", "LIST") from exc
        if self.staging_dir.is_dir():
            for path in self.staging_dir.iterdir():
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                yield f"{STAGING}/{path.name}", st.st_size, st.st_mtime
