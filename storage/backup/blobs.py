"""Blobs in a backup: a folder store is copied (``blobs/<key>``); an S3 store gets a manifest
of its keys, sizes and SHA-256s (``blobs.jsonl``) — the bucket's own versioning is its copy,
and a restore checks that every listed object is there.

Staging files (keys starting with a dot) are work in progress and are left out.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from storage.blobs import BlobNotFound, BlobStore, LocalBlobStore

FOLDER = "blobs"
LISTING = "blobs.jsonl"
_CHUNK = 1 << 20
_CONTENT_KEY = re.compile(r"(?:[0-9a-f]{2}/){2}([0-9a-f]{64})(?:\.[A-Za-z0-9]+)?")


def _keys(store: BlobStore):
    for key, size, _mtime in store.keys():  # noqa: SIM118 - BlobStore.keys() is a method, not a dict
        if not key.startswith(".") and "/." not in key:
            yield key, size


def backup(store: BlobStore, root: Path) -> dict:
    """Copy (a folder store) or list (an S3 store) every blob; returns counts for the manifest."""
    count = total = 0
    if isinstance(store, LocalBlobStore):
        for key, size in sorted(_keys(store)):
            target = root / FOLDER / key
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(store.local_path(key), "rb") as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
            except FileNotFoundError:
                continue  # removed by gc or a delete since it was listed
            count, total = count + 1, total + size
        return {"kind": "copy", "count": count, "bytes": total, "store": store.describe()}
    with open(root / LISTING, "w", encoding="utf-8") as out:
        for key, size in sorted(_keys(store)):
            match = _CONTENT_KEY.fullmatch(key)
            # Content-addressed keys name their SHA-256; anything else is read and hashed.
            digest = match.group(1) if match else hashlib.sha256(store.get(key)).hexdigest()
            out.write(json.dumps({"key": key, "size": size, "sha256": digest}) + "\n")
            count, total = count + 1, total + size
    return {"kind": "listing", "count": count, "bytes": total, "store": store.describe()}


def occupied(store: BlobStore, manifest: dict) -> list[str]:
    """A store that already holds blobs, when the backup would copy some in."""
    if manifest["kind"] != "copy":
        return []  # a listing is checked against the same bucket: it must not be empty
    n = sum(1 for _ in _keys(store))
    return [f"blob store {store.describe()}: {n} blobs"] if n else []


def restore(store: BlobStore, root: Path, manifest: dict) -> dict:
    """Copy the blobs into ``store`` (any backend: they go through its staging area), or check
    that a listed bucket still holds each object. Returns ``{"restored": n, "missing": [...]}``."""
    if manifest["kind"] == "copy":
        folder = root / FOLDER
        n = 0
        for path in sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []:
            staged = store.stage()
            try:
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, staged, _CHUNK)
            except BaseException:
                staged.discard()
                raise
            store.commit(staged, path.relative_to(folder).as_posix())
            n += 1
        return {"restored": n, "missing": []}
    missing = []
    with open(root / LISTING, encoding="utf-8") as lines:
        for line in lines:
            key = json.loads(line)["key"]
            try:
                if not store.exists(key):
                    missing.append(key)
            except BlobNotFound:
                missing.append(key)
    return {"restored": 0, "missing": missing}


def count(store: BlobStore) -> int:
    return sum(1 for _ in _keys(store))
