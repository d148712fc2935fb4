"""Backup and restore of everything SkyGate stores: the SQL database, the documents, the blobs.

``create_backup(settings, dest)`` writes ``dest/skygate-backup-<UTC time>/``::

    manifest.json          time, schema revision, counts, settings fingerprint (no secrets)
    SHA256SUMS             sha256 of every other file (``sha256sum -c SHA256SUMS``)
    database/postgres.dump pg_dump custom format   | database/skygate.db (SQLite backup API)
    documents/             MongoDB only: collections.json (options, validators, indexes)
                           and <collection>.jsonl (canonical Extended JSON)
    blobs/<key>            a folder store's blobs  | blobs.jsonl (an S3 store: key, size, sha256)

The folder is written under a hidden ``.partial`` name and renamed when complete. Order: the
database first, then the documents, then the blobs, so every blob a row or document names is
in the copy even while uploads go on (a blob removed in between is the only gap: stop the
workers and the API for a strictly consistent cut).

``restore_backup(settings, src)`` checks every checksum before it touches anything, refuses
a target that holds data unless ``force``, restores all three and checks the counts.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from schemas.clock import utcnow
from storage.backup import blobs, documents, sql
from storage.backup.manifest import (
    FORMAT,
    MANIFEST,
    BackupError,
    ChecksumMismatch,
    settings_fingerprint,
    verify_checksums,
    write_checksums,
)
from storage.blobs import blob_store_for

__all__ = ["BackupError", "ChecksumMismatch", "TargetNotEmpty", "create_backup",
           "restore_backup", "verify_backup"]

PREFIX = "skygate-backup-"


class TargetNotEmpty(BackupError):
    """The restore target holds data; ``found`` says what (restore with force to replace it)."""

    def __init__(self, found: list[str]):
        self.found = found
        super().__init__("the target is not empty (" + "; ".join(found) +
                         "): restore into empty databases, or pass --force to replace")


def _skygate_version() -> str | None:
    try:
        return version("skygate")
    except PackageNotFoundError:
        return None


async def create_backup(settings, dest: Path, *, now: datetime | None = None) -> Path:
    """Write one complete backup under ``dest``; returns its folder."""
    now = now or utcnow()
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    dest = Path(dest)
    final = dest / f"{PREFIX}{stamp}"
    if final.exists():
        raise BackupError(f"{final} already exists")
    work = dest / f".{PREFIX}{stamp}.partial"
    work.mkdir(parents=True)
    (work / "database").mkdir()
    try:
        database = await sql.dump(settings, work / "database")
        embedded = database.pop("embedded_documents")
        if settings.mongo_url:
            docs = await asyncio.to_thread(documents.export, settings, work / "documents")
        else:
            docs = {"backend": "embedded", "counts": embedded}
        blob_info = await asyncio.to_thread(blobs.backup, blob_store_for(settings), work)
        manifest = {
            "format": FORMAT,
            "created_at": now.isoformat(),
            "skygate_version": _skygate_version(),
            "schema_revision": database["revision"],
            "database": database,
            "documents": docs,
            "blobs": blob_info,
            "settings": settings_fingerprint(settings),
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        write_checksums(work)
        os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def verify_backup(src: Path) -> dict:
    """Check every file of the backup; returns its manifest or raises ChecksumMismatch."""
    return verify_checksums(Path(src))


def _check_compatible(settings, manifest: dict) -> None:
    source, target = manifest["database"]["backend"], sql.backend(settings)
    if source != target:
        raise BackupError(f"the backup holds a {source} database but the target is {target}")
    docs = manifest["documents"]["backend"]
    if docs == "mongodb" and not settings.mongo_url:
        raise BackupError("the backup holds MongoDB collections: set SKYGATE_MONGO_URL")
    if docs == "embedded" and settings.mongo_url:
        raise BackupError("the backup's documents are embedded in its SQL database: "
                          "unset SKYGATE_MONGO_URL to restore it")


async def _occupied(settings, manifest: dict, store) -> list[str]:
    found = []
    tables = (await sql.describe(settings))["tables"]
    if tables:
        found.append(f"database: {len(tables)} tables ({', '.join(list(tables)[:4])}…)")
    if manifest["documents"]["backend"] == "mongodb":
        found += await asyncio.to_thread(documents.occupied, settings)
    return found + blobs.occupied(store, manifest["blobs"])


async def _counts_after(settings, manifest: dict, store) -> dict:
    """What the target holds now, against what the manifest says; raise on a difference."""
    after = await sql.describe(settings)
    docs = after["embedded_documents"]
    if manifest["documents"]["backend"] == "mongodb":
        docs = await asyncio.to_thread(documents.counts, settings)
    wanted = {("table", k): v for k, v in manifest["database"]["tables"].items()}
    wanted |= {("collection", k): v for k, v in manifest["documents"]["counts"].items()}
    have = {("table", k): v for k, v in after["tables"].items()}
    have |= {("collection", k): v for k, v in docs.items()}
    wrong = [f"{kind} {name}: {have.get((kind, name))} restored, backup has {n}"
             for (kind, name), n in wanted.items() if have.get((kind, name)) != n]
    if manifest["blobs"]["kind"] == "copy" and blobs.count(store) < manifest["blobs"]["count"]:
        wrong.append(f"blobs: {blobs.count(store)} in the store, backup has "
                     f"{manifest['blobs']['count']}")
    if wrong:
        raise BackupError("restored data differs from the manifest: " + "; ".join(wrong))
    return {"tables": after["tables"], "documents": docs, "revision": after["revision"]}


async def restore_backup(settings, src: Path, *, force: bool = False) -> dict:
    """Restore a backup into the storage ``settings`` name. Nothing is touched unless every
    checksum matches, the target's backends match the backup's, and the target is empty (or
    ``force``). Returns what was restored and any blobs an S3 listing names but the bucket
    lacks."""
    src = Path(src)
    manifest = await asyncio.to_thread(verify_backup, src)
    _check_compatible(settings, manifest)
    store = blob_store_for(settings)
    found = await _occupied(settings, manifest, store)
    if found and not force:
        raise TargetNotEmpty(found)
    await sql.restore(settings, src / "database", manifest["database"], force=force)
    if manifest["documents"]["backend"] == "mongodb":
        await asyncio.to_thread(documents.restore, settings, src / "documents")
    blob_result = await asyncio.to_thread(blobs.restore, store, src, manifest["blobs"])
    restored = await _counts_after(settings, manifest, store)
    return {"manifest": manifest, "replaced": found, **restored, "blobs": blob_result}
