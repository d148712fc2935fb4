"""The blob store as a folder: one machine, or a volume every worker mounts."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from storage.blobs.base import BlobNotFound, BlobStore, StagedBlob, write_atomically


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
        write_atomically(path, data)
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(key, str(self.root)) from exc

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

    def describe(self) -> str:
        return str(self.root)

    def _probe_put(self, key: str, data: bytes) -> None:
        self._path(key).write_bytes(data)

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
