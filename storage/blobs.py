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
        ``(key, size, mtime)``; staging files older than a day are listed too."""

    @staticmethod
    def key_for(digest: str, suffix: str = "") -> str:
        return f"{digest[:2]}/{digest[2:4]}/{digest}{suffix}"

    @classmethod
    def key_for_bytes(cls, data: bytes, suffix: str = "") -> str:
        return cls.key_for(hashlib.sha256(data).hexdigest(), suffix)


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

    STAGING = ".staging"

    def stage(self) -> StagedBlob:
        folder = self.root / self.STAGING
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="up-")
        os.close(fd)
        return StagedBlob(Path(tmp))

    def commit(self, staged: StagedBlob, key: str) -> str:
        staged.finish()
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, path)
        return key

    def keys(self):
        root = self.root
        for dirpath, _dirs, files in os.walk(root):
            rel = Path(dirpath).relative_to(root)
            for name in files:
                if name.startswith(".doctor-"):
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                yield (rel / name).as_posix(), st.st_size, st.st_mtime
