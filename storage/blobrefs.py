"""Reference counts for the content-addressed blob store.

Blobs are keyed by their own bytes, so uploads share them: the same original sent by two users,
or two different files with the same decoded pixels (their pixel caches, thumbnail, ELA image
and heatmap are byte-identical). ``blob_refs`` has one row per (upload, key) and a blob is
deleted only when its last row goes.

The protocol that keeps a delete and a concurrent writer apart:

- a writer (:func:`store`, :func:`attach`) inserts its row, takes the key's lock, writes the
  file and commits, all in one transaction. The row insert checks the upload's foreign key,
  which takes a share lock on the upload row: a delete of that upload waits for it, or, if the
  delete came first, the insert fails and the writer learns the upload is gone
  (:class:`UploadGone`) before writing anything;
- :func:`release` takes the key's lock, counts the rows left and unlinks the file only at
  zero; a writer of the same key from another upload waits on the lock, then writes the file
  again if it was unlinked.

On PostgreSQL the key lock is a transaction-scoped advisory lock; SQLite serialises every
writing transaction anyway.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from storage.db import autocommit
from storage.models import blob_refs, uploads

log = logging.getLogger("skygate.blobs")


class UploadGone(LookupError):
    """The upload was deleted while work on it was in flight."""


async def _lock_key(conn, key: str) -> None:
    await _lock_keys(conn, [key])


async def _lock_keys(conn, keys: list[str]) -> None:
    """Each key's lock, in the order given (sorted by callers: no deadlocks), in one
    statement (the lock, a volatile call, is evaluated after the ORDER BY)."""
    if conn.dialect.name == "postgresql" and keys:
        await conn.execute(_LOCKS, {"keys": keys})


_LOCKS = sa.text("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
                 "FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS t(k, n) ORDER BY n")


def _insert_refs(conn, upload_id: int, refs: list[tuple[str, str]], owner: tuple | None):
    """(statement, parameters): one INSERT of every (key, kind) ref of ``upload_id``; with
    ``owner`` (the upload's ``file_path`` and ``user_id`` as the canvas knows them), only
    while the row still is that upload (an id can be reused: service.canvas.our_upload),
    checked in the same statement: it then returns a row for each ref, inserted or already
    there. The statements are built once (per dialect and number of refs) and run with
    their values as parameters: building one cost more than running it."""
    if owner is None:
        return (_plain_insert(conn.dialect.name),
                [{"upload_id": upload_id, "blob_key": k, "kind": kind} for k, kind in refs])
    params = {"upload_id": upload_id, "file_path": owner[0], "user_id": owner[1]}
    for i, (k, kind) in enumerate(refs):
        params[f"key_{i}"], params[f"kind_{i}"] = k, kind
    return _owned_insert(conn.dialect.name, len(refs)), params


@functools.cache
def _plain_insert(dialect: str):
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # RETURNING: SQLAlchemy sends the rows as one multi-row INSERT, not an execute a row.
    return insert(blob_refs).on_conflict_do_nothing().returning(blob_refs.c.blob_key)


@functools.cache
def _owned_insert(dialect: str, count: int):
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    upload_id = sa.bindparam("upload_id", type_=sa.Integer)
    ours = sa.exists().where(uploads.c.upload_id == upload_id,
                             uploads.c.file_path == sa.bindparam("file_path", type_=sa.String),
                             uploads.c.user_id.is_not_distinct_from(
                                 sa.bindparam("user_id", type_=sa.Integer)))
    wanted = sa.union_all(*(sa.select(sa.bindparam(f"key_{i}", type_=sa.String).label("blob_key"),
                                      sa.bindparam(f"kind_{i}", type_=sa.String).label("kind"))
                            for i in range(count))).subquery()
    rows = sa.select(upload_id, wanted.c.blob_key, wanted.c.kind).where(ours)
    stmt = insert(blob_refs).from_select(["upload_id", "blob_key", "kind"], rows)
    # A ref already there is "updated" to itself, so that it is returned too.
    return stmt.on_conflict_do_update(index_elements=[blob_refs.c.upload_id,
                                                      blob_refs.c.blob_key],
                                      set_={"kind": blob_refs.c.kind}
                                      ).returning(blob_refs.c.blob_key)


async def attach(storage, upload_id: int, key: str, kind: str, write: Callable[[], object],
                 *, owner: tuple | None = None) -> str:
    """Reference ``key`` from ``upload_id`` and call ``write()`` to put the bytes there, in one
    transaction under the key's lock. Raises UploadGone if the upload no longer exists (or,
    ``owner`` given, is no longer the upload ``owner`` names: see :func:`_insert_refs`)."""
    await _attach_all(storage, upload_id, [(key, kind)], write, owner=owner)
    return key


async def _attach_all(storage, upload_id: int, refs: list[tuple[str, str]],
                      write: Callable[[], object], *, owner: tuple | None,
                      then: Callable[[object], Awaitable[object]] | None = None) -> None:
    try:
        async with storage.engine.begin() as conn:
            await attach_in(conn, upload_id, refs, write, owner=owner)
            if then is not None:  # the caller's own statements, committed with the refs
                await then(conn)
    except IntegrityError as exc:
        raise UploadGone(upload_id) from exc


async def attach_in(conn, upload_id: int, refs: list[tuple[str, str]],
                    write: Callable[[], object], *, owner: tuple | None = None) -> None:
    """:func:`attach` of several ``(key, kind)`` inside the caller's transaction ``conn``
    (an upload gone raises IntegrityError, or UploadGone with ``owner``)."""
    refs = list(dict(reversed(refs)).items())  # one ref a key (its first kind)
    # The foreign key check fails if the upload is gone (SQLite: foreign_keys=ON).
    inserted = await conn.execute(*_insert_refs(conn, upload_id, refs, owner))
    if owner is not None and len(inserted.all()) < len(refs):
        raise UploadGone(upload_id)  # rolled back: nothing referenced or written
    await _lock_keys(conn, sorted(k for k, _ in refs))  # one lock order: no deadlocks
    # In a thread: with an object store, writing is a network round trip (or a 50 MB
    # upload) that must not stall the event loop (the API serves other requests).
    await asyncio.to_thread(write)


async def store(storage, upload_id: int, data: bytes, *, suffix: str, kind: str,
                owner: tuple | None = None) -> str:
    """Put ``data`` in the blob store as a blob of ``upload_id``; returns its key."""
    key = storage.blobs.key_for_bytes(data, suffix)
    return await attach(storage, upload_id, key, kind,
                        lambda: storage.blobs.put(data, suffix=suffix), owner=owner)


async def store_many(storage, upload_id: int, items: list[tuple[bytes, str, str]], *,
                     owner: tuple | None = None,
                     then: Callable[[object], Awaitable[object]] | None = None) -> list[str]:
    """:func:`store` of several ``(data, suffix, kind)`` in one transaction and one INSERT;
    returns their keys, in order. ``then(conn)``: more statements of the caller's, run in
    the same transaction once the files are written (one commit instead of two)."""
    keys = [storage.blobs.key_for_bytes(data, suffix) for data, suffix, _ in items]

    def write():
        for data, suffix, _ in items:
            storage.blobs.put(data, suffix=suffix)

    refs = [(key, kind) for key, (_, _, kind) in zip(keys, items, strict=True)]
    await _attach_all(storage, upload_id, refs, write, owner=owner, then=then)
    return keys


async def upload_exists(storage, upload_id: int) -> bool:
    async with autocommit(storage.engine) as conn:
        return (await conn.execute(sa.select(uploads.c.upload_id)
                                   .where(uploads.c.upload_id == upload_id))).first() is not None


async def _unreferenced(conn, key: str) -> bool:
    """No ref row names ``key``, nor (rows written before reference counting) an upload's
    original or thumbnail column: one statement."""
    refs = (sa.select(sa.func.count()).select_from(blob_refs)
            .where(blob_refs.c.blob_key == key).scalar_subquery())
    legacy = (sa.select(sa.func.count()).select_from(uploads)
              .where(sa.or_(uploads.c.file_path == key, uploads.c.thumbnail_path == key))
              .scalar_subquery())
    return (await conn.execute(sa.select(refs + legacy))).scalar_one() == 0


async def release_in(conn, storage, keys: Iterable[str]) -> list[str]:
    """Inside ``conn``'s transaction: unlink every key no row references any more."""
    removed = []
    for key in sorted({k for k in keys if k}):  # one lock order: no deadlocks
        await _lock_key(conn, key)
        if (await _unreferenced(conn, key)
                and await storage.blobs.adelete(key)):
            removed.append(key)
    return removed


async def release(storage, keys: Iterable[str]) -> list[str]:
    """Unlink the blobs among ``keys`` that nothing references; returns the keys removed."""
    async with storage.engine.begin() as conn:
        return await release_in(conn, storage, keys)


async def keys_of(conn, upload_id: int) -> set[str]:
    rows = await conn.execute(sa.select(blob_refs.c.blob_key)
                              .where(blob_refs.c.upload_id == upload_id))
    return {r[0] for r in rows}


# --- intermediates: what a canvas shares between its steps, kept only while it runs ----------

#: Blob kinds that live only as long as the canvas: prepare writes them, aggregate releases
#: them (:func:`release_intermediates`), and the recovery sweep releases those of canvases
#: that were abandoned (:func:`release_stale_intermediates`). ``neutral_pixels`` is only
#: found on uploads prepared before issue 13.
INTERMEDIATE_KINDS = frozenset({"native_pixels", "neutral_pixels", "manifest"})
#: An unfinished upload nobody touched for this long has abandoned its intermediates (a
#: recovery re-dispatch makes them again): far above the stuck-upload threshold
#: (``SKYGATE_STUCK_AFTER``, 360 s by default) times the sweep's patience with a busy queue (6).
INTERMEDIATE_TTL_SECONDS = 24 * 3600


async def release_intermediates(storage, upload_id: int) -> list[str]:
    """Drop the upload's intermediate refs and unlink the blobs nothing else references."""
    async with storage.engine.begin() as conn:
        keys = (await conn.execute(
            sa.delete(blob_refs)
            .where(blob_refs.c.upload_id == upload_id,
                   blob_refs.c.kind.in_(sorted(INTERMEDIATE_KINDS)))
            .returning(blob_refs.c.blob_key))).scalars().all()
        return await release_in(conn, storage, keys)


def _abandoned(touched_before):
    """Uploads whose intermediates nobody will read: finished, failed, or long untouched."""
    touched = sa.func.coalesce(uploads.c.stage_touched_at, uploads.c.processing_started_at,
                               uploads.c.upload_date)
    return sa.select(uploads.c.upload_id).where(sa.or_(
        uploads.c.status.in_(("done", "failed")), touched < touched_before))


async def release_stale_intermediates(storage, *, touched_before, unlink: bool = True,
                                      limit: int = 1000) -> list[str]:
    """Release the intermediates of abandoned canvases (:func:`_abandoned`), in one statement
    per batch so an upload re-sent meanwhile keeps the ones its new run wrote.

    Returns the keys whose refs were dropped; with ``unlink`` False the files are left for
    ``skygate blobs gc`` (its grace period) to remove.
    """
    async with storage.engine.begin() as conn:
        victims = (sa.select(blob_refs.c.upload_id, blob_refs.c.blob_key)
                   .where(blob_refs.c.kind.in_(sorted(INTERMEDIATE_KINDS)),
                          blob_refs.c.upload_id.in_(_abandoned(touched_before)))
                   .limit(limit))
        rows = [tuple(r) for r in (await conn.execute(victims)).all()]
        if not rows:
            return []
        # The conditions again in the DELETE itself: an upload re-sent since the SELECT is
        # no longer abandoned and keeps its refs.
        released = list((await conn.execute(
            sa.delete(blob_refs).where(
                sa.tuple_(blob_refs.c.upload_id, blob_refs.c.blob_key).in_(rows),
                blob_refs.c.kind.in_(sorted(INTERMEDIATE_KINDS)),
                blob_refs.c.upload_id.in_(_abandoned(touched_before)))
            .returning(blob_refs.c.blob_key))).scalars().all())
        if unlink:
            await release_in(conn, storage, released)
    if released:
        log.info("released %d intermediate blob(s) of abandoned canvases", len(released))
    return released
