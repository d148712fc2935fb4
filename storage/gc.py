"""`skygate blobs gc`: remove blobs nothing references.

A blob is referenced by a ``blob_refs`` row, by an upload's ``file_path``/``thumbnail_path``
(rows older than reference counting), or by a detection_metadata document. Only files older
than the grace period are candidates, so work in flight (a request still streaming into the
staging area, a write being renamed into place) is never touched; each candidate is checked
again under its key's lock (storage/blobrefs.py) just before it is unlinked.

A collection (not a dry run) first drops the refs of abandoned canvases' intermediates
(``blobrefs.release_stale_intermediates``), so their files are collected like any other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa

from schemas.clock import utcnow
from storage import blobrefs
from storage.models import blob_refs, uploads


@dataclass
class GcReport:
    scanned: int = 0
    candidates: list[tuple[str, int]] = field(default_factory=list)  # (key, bytes)
    removed: list[tuple[str, int]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def bytes(self) -> int:
        return sum(size for _, size in (self.candidates if self.dry_run else self.removed))


async def referenced_keys(storage) -> set[str]:
    async with storage.engine.connect() as conn:
        keys = set((await conn.execute(sa.select(blob_refs.c.blob_key))).scalars())
        for column in (uploads.c.file_path, uploads.c.thumbnail_path):
            keys |= set((await conn.execute(sa.select(column).where(column.is_not(None))))
                        .scalars())
    return keys | await storage.documents.referenced_blob_keys()


async def collect(storage, *, grace_seconds: float, dry_run: bool = False,
                  intermediate_ttl: float = blobrefs.INTERMEDIATE_TTL_SECONDS) -> GcReport:
    report = GcReport(dry_run=dry_run)
    if not dry_run:
        before = utcnow() - timedelta(seconds=intermediate_ttl)
        await blobrefs.release_stale_intermediates(storage, touched_before=before,
                                                   unlink=False)
    cutoff = time.time() - grace_seconds
    referenced = await referenced_keys(storage)
    for key, size, mtime in await storage.blobs.akeys():
        report.scanned += 1
        if mtime > cutoff or key in referenced:
            continue
        report.candidates.append((key, size))
    if dry_run:
        return report
    staged = [(k, s) for k, s in report.candidates
              if k.startswith(".") or k.rsplit("/", 1)[-1].startswith(".")]
    for key, size in staged:
        # Staging and temporary files: no key, nobody can reference them.
        if await storage.blobs.adelete(key):
            report.removed.append((key, size))
    sizes = dict(report.candidates)
    keyed = [k for k, _ in report.candidates if (k, sizes[k]) not in staged]
    # Referenced since the scan? blobrefs.release re-checks under each key's lock.
    fresh_docs = await storage.documents.referenced_blob_keys()
    removed = await blobrefs.release(storage, [k for k in keyed if k not in fresh_docs])
    report.removed += [(k, sizes[k]) for k in removed]
    return report
