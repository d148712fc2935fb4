"""Content-addressed blob store: originals, thumbnails, ELA images, heatmaps, decoded caches.

Keys are relative strings (``ab/cd/<sha256><suffix>``) so that another implementation (an
object store) can serve the same keys that PostgreSQL and the documents record.
"""

from __future__ import annotations

import abc
import hashlib
import os
import tempfile
from pathlib import Path


class BlobNotFound(KeyError):
    pass


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

    @staticmethod
    def key_for(digest: str, suffix: str = "") -> str:
        return f"{digest[:2]}/{digest[2:4]}/{digest}{suffix}"


class LocalBlobStore(BlobStore):
    """A folder, shared by every process on the machine (or a shared volume across machines)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        # Keys come from our own database, but never let one escape the root.
        if self.root.resolve() not in path.parents:
            raise BlobNotFound(key)
        return path

    def put(self, data: bytes, *, suffix: str = "") -> str:
        key = self.key_for(hashlib.sha256(data).hexdigest(), suffix)
        path = self._path(key)
        if path.exists():
            return key
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename so a reader never sees half a file, even with concurrent writers.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def local_path(self, key: str) -> Path:
        return self._path(key)
