"""The blob store's interface, its staging area and its errors.

Keys are relative strings (``ab/cd/<sha256><suffix>``) so that every backend (a folder, an S3
bucket) serves the same keys that PostgreSQL and the documents record.

The store is synchronous (a folder, boto3). Async code reaches it only through the ``a``
methods (``aget``, ``aput``, ``adelete``, ``aexists``, ``acommit``, ``akeys``), which run the
call in a thread: an S3 request (its timeouts times its retries) never holds an event loop,
the API's above all. ``tests/unit/test_async_blobs.py`` fails when an ``async def`` calls a
blocking method itself. The staging area (``stage`` and the StagedBlob's writes) is a local
temporary file, written chunk by chunk as a body streams in, and stays synchronous.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import os
import tempfile
from pathlib import Path


class BlobStoreError(Exception):
    """Anything the blob store cannot do; the subclasses say whether trying again helps."""


class BlobNotFound(BlobStoreError, KeyError):
    """No blob under this key (a ``KeyError``, as a dict would raise)."""

    def __init__(self, key: str, where: str | None = None):
        super().__init__(key)
        self.key = key
        self.where = where

    def __str__(self) -> str:
        return f"blob {self.key!r} not found" + (f" in {self.where}" if self.where else "")


class BlobStoreUnavailable(BlobStoreError, ConnectionError):
    """The store did not answer (connection refused or reset, timeouts, 5xx, throttling) even
    after the client's own retries: a transient fault, worth retrying the task later. It is a
    ``ConnectionError``, so retry rules written for dropped connections cover it too."""


# Exceptions a task may retry with backoff: the store was unreachable, not the data wrong.
TRANSIENT_BLOB_ERRORS: tuple[type[BaseException], ...] = (BlobStoreUnavailable,)


class StagedBlob:
    """A blob being received: written to a temporary file in the store while it is hashed,
    so no caller ever holds a whole upload in memory. ``commit`` moves it under its key."""

    HEAD_BYTES = 4096

    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "wb")  # noqa: SIM115 - closed by finish/discard
        self._hash = hashlib.sha256()
        self.size = 0
        self.head = b""

    def write(self, chunk) -> None:
        if len(self.head) < self.HEAD_BYTES:
            self.head += bytes(chunk[:self.HEAD_BYTES - len(self.head)])
        self._hash.update(chunk)
        self._fh.write(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        """Close the file; returns the SHA-256 hex digest of everything written."""
        if not self._fh.closed:
            self._fh.close()
        return self._hash.hexdigest()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def discard(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.path.unlink(missing_ok=True)


class BlobStore(abc.ABC):
    @abc.abstractmethod
    def put(self, data: bytes, *, suffix: str = "") -> str:
        """Store ``data`` under its SHA-256 and return the key. Idempotent."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> bool: ...

    @abc.abstractmethod
    def local_path(self, key: str) -> Path:
        """A filesystem path for tools that need one (the HTML report, ``open``)."""

    @abc.abstractmethod
    def stage(self) -> StagedBlob:
        """A new StagedBlob to stream bytes into."""

    @abc.abstractmethod
    def commit(self, staged: StagedBlob, key: str) -> str:
        """Move a finished StagedBlob under ``key`` (replacing identical content)."""

    @abc.abstractmethod
    def keys(self):
        """Every stored key with its size in bytes and modification time:
        ``(key, size, mtime)``; staging files are listed too, under keys starting with a dot,
        and ``delete`` removes them."""

    # The async path: each call in a thread, so no event loop waits on the store.
    async def aget(self, key: str) -> bytes:
        return await asyncio.to_thread(self.get, key)

    async def aput(self, data: bytes, *, suffix: str = "") -> str:
        return await asyncio.to_thread(self.put, data, suffix=suffix)

    async def aexists(self, key: str) -> bool:
        return await asyncio.to_thread(self.exists, key)

    async def adelete(self, key: str) -> bool:
        return await asyncio.to_thread(self.delete, key)

    async def acommit(self, staged: StagedBlob, key: str) -> str:
        return await asyncio.to_thread(self.commit, staged, key)

    async def akeys(self) -> list[tuple[str, int, float]]:
        """``keys()`` listed in full in a thread (a bucket's listing is paged requests)."""
        return await asyncio.to_thread(lambda: list(self.keys()))

    def describe(self) -> str:
        """Where the blobs are, for humans (``skygate doctor``, errors)."""
        return type(self).__name__

    def probe(self) -> None:
        """Write, read back and delete a small object; raises if the store cannot."""
        data = f"doctor {os.getpid()} {os.urandom(8).hex()}".encode()
        key = f".doctor-{hashlib.sha256(data).hexdigest()[:16]}"
        self._probe_put(key, data)
        try:
            if self.get(key) != data:
                raise BlobStoreError(f"{self.describe()}: read back different bytes")
        finally:
            self.delete(key)

    def _probe_put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    @staticmethod
    def key_for(digest: str, suffix: str = "") -> str:
        return f"{digest[:2]}/{digest[2:4]}/{digest}{suffix}"

    @classmethod
    def key_for_bytes(cls, data: bytes, suffix: str = "") -> str:
        return cls.key_for(hashlib.sha256(data).hexdigest(), suffix)


def write_atomically(path: Path, data: bytes) -> None:
    """Write-then-rename so a reader never sees half a file, even with concurrent writers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
