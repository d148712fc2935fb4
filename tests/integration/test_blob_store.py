"""The blob store on both backends — a folder and S3 (moto's server mode on a loopback port) —
with the same behavioural tests; the factory that picks one from ``SKYGATE_BLOB_URL``; and an
S3 outage as a transient fault. (Two workers that share no folder: test_blob_store_cluster.)"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from schemas.settings import Settings
from storage.blobs import (
    TRANSIENT_BLOB_ERRORS,
    BlobNotFound,
    BlobStoreError,
    BlobStoreUnavailable,
    LocalBlobStore,
    blob_store_for,
    parse_blob_url,
)
from testkit.images import SD_PARAMETERS, encode, noisy_photo, smooth_scene
from tests.conftest import free_port, run


@pytest.fixture(params=["local", "s3"])
def settings(request, tmp_path):
    """Settings naming a fresh store of each backend (the factory builds it)."""
    if request.param == "local":
        return Settings(data_dir=tmp_path, blob_url=(tmp_path / "store").as_uri())
    return request.getfixturevalue("s3_settings")


@pytest.fixture
def store(settings):
    return blob_store_for(settings)


# --- the factory ---------------------------------------------------------------------------


def test_blob_url_picks_the_backend(tmp_path, aws_env):
    assert parse_blob_url("file:///srv/blobs") == ("file", "/srv/blobs", "")
    assert parse_blob_url("/srv/blobs") == ("file", "/srv/blobs", "")
    assert parse_blob_url("s3://bucket/a/b/") == ("s3", "bucket", "a/b")
    assert parse_blob_url("s3://bucket") == ("s3", "bucket", "")
    for bad, why in (("s3:///prefix", "names no bucket"), ("gs://bucket/x", "unsupported"),
                     ("file://", "names no folder")):
        with pytest.raises(ValueError, match=why):
            parse_blob_url(bad)
    default = blob_store_for(Settings(data_dir=tmp_path))
    assert isinstance(default, LocalBlobStore) and default.root == tmp_path / "blobs"
    other = Settings(data_dir=tmp_path, blob_url=(tmp_path / "elsewhere").as_uri())
    assert other.blob_dir == tmp_path / "elsewhere"
    assert blob_store_for(other).root == tmp_path / "elsewhere"
    s3 = blob_store_for(Settings(data_dir=tmp_path, blob_url="s3://b/p",
                                 s3_endpoint_url="http://127.0.0.1:9", s3_retry_mode="adaptive",
                                 s3_max_attempts=7))
    assert type(s3).__name__ == "S3BlobStore"
    assert s3.describe() == "s3://b/p/ at http://127.0.0.1:9"
    assert s3.client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 7}


def test_storage_context_uses_the_factory(tmp_path, aws_env):
    from storage.context import build_storage

    async def go():
        storage = build_storage(Settings(data_dir=tmp_path, blob_url="s3://bucket/x",
                                         s3_endpoint_url="http://127.0.0.1:9"))
        try:
            return type(storage.blobs).__name__
        finally:
            await storage.close()

    assert run(go()) == "S3BlobStore"


# --- the same behaviour on both backends ---------------------------------------------------


def test_put_is_content_addressed_idempotent_and_deletable(store):
    data = b"\x89PNG fake but bytes " + os.urandom(16)
    key = store.put(data, suffix=".png")
    digest = hashlib.sha256(data).hexdigest()
    assert key == f"{digest[:2]}/{digest[2:4]}/{digest}.png"
    assert store.put(data, suffix=".png") == key
    assert store.get(key) == data and store.exists(key)
    assert store.local_path(key).read_bytes() == data
    assert store.delete(key) is True
    assert store.delete(key) is False and not store.exists(key)
    with pytest.raises(BlobNotFound) as info:
        store.get(key)
    # The error names the key (and where it was looked for); it is still a KeyError.
    assert key in str(info.value) and isinstance(info.value, KeyError)
    assert info.value.key == key


def test_keys_cannot_escape_the_store(store):
    for key in ("../secret", "a/../../secret", "/etc/passwd"):
        with pytest.raises(BlobNotFound):
            store.get(key)


def test_staged_blob_streams_then_commits_under_its_key(store):
    chunks = [os.urandom(3000), os.urandom(5000), b"tail"]
    staged = store.stage()
    for chunk in chunks:
        staged.write(memoryview(chunk))
    digest = staged.finish()
    data = b"".join(chunks)
    assert digest == hashlib.sha256(data).hexdigest() and staged.size == len(data)
    assert staged.head == data[:4096] and staged.path.read_bytes() == data  # a local file
    key = store.key_for(digest, ".bin")
    assert store.commit(staged, key) == key
    staged.discard()  # a no-op once committed
    assert store.get(key) == data
    assert not staged.path.exists()
    # Committing identical content again (a second upload of the same file) is harmless.
    again = store.stage()
    again.write(data)
    store.commit(again, key)
    assert store.get(key) == data


def test_keys_lists_blobs_and_staging_files_and_delete_removes_both(store):
    a = store.put(b"alpha", suffix=".txt")
    b = store.put(b"bravo" * 100, suffix=".npy")
    abandoned = store.stage()
    abandoned.write(b"half an upload")
    abandoned.finish()
    listed = {key: (size, mtime) for key, size, mtime in store.keys()}  # noqa: SIM118 - a blob store, not a dict
    assert listed[a][0] == 5 and listed[b][0] == 500
    assert all(abs(mtime - time.time()) < 300 for _, mtime in listed.values())
    staging = [k for k in listed if k not in (a, b)]
    assert len(staging) == 1 and staging[0].startswith(".")
    assert listed[staging[0]][0] == len(b"half an upload")
    assert store.delete(staging[0]) and not abandoned.path.exists()
    assert {k for k, _, _ in store.keys()} == {a, b}  # noqa: SIM118 - a blob store, not a dict


def test_probe_writes_reads_and_cleans_up(store):
    store.probe()
    assert list(store.keys()) == []


def test_embedded_pipeline_reference_counts_and_delete_on_each_backend(settings):
    """The whole pipeline in one process on the store: ingest (staging, commit), prepare,
    the five methods, aggregate; two uploads share their derived blobs, deleting one keeps
    them, deleting the other removes every blob (storage/blobrefs.py's counting)."""
    from service import detection, ingest
    from storage import migrate, removal, seed
    from storage.context import open_storage

    png = encode(smooth_scene(seed=21), text={"parameters": SD_PARAMETERS})
    # Same pixels, different bytes: the same pixel caches, thumbnail, ELA image and heatmap.
    png2 = encode(smooth_scene(seed=21), text={"parameters": SD_PARAMETERS + " "})
    settings = settings.model_copy(update={"evidence": "eager"})  # the ELA image in the canvas

    async def go():
        async with open_storage(settings) as storage:
            await migrate.upgrade(storage.engine)
            await seed.ensure_default_configuration(storage.documents)
            ids = []
            for data, name in ((png, "a.png"), (png2, "b.png")):
                outcome = await ingest.ingest_bytes(storage, settings, data=data,
                                                   original_file_name=name, user_id=None)
                assert outcome.status == "queued"
                await detection.run_all(storage, settings, outcome.upload_id)
                ids.append(outcome.upload_id)
            docs = [(await storage.documents.find_detection_metadata(upload_id=i))[0]
                    for i in ids]
            assert all(d.aggregated_results for d in docs)
            a_keys, b_keys = (set(d.blob_keys.values()) for d in docs)
            shared = a_keys & b_keys
            assert len(shared) >= 3, (a_keys, b_keys)  # thumbnail, ELA, heatmap (caches released)
            assert all(storage.blobs.exists(k) for k in a_keys | b_keys)
            await removal.delete_upload(storage, ids[0])
            assert all(storage.blobs.exists(k) for k in b_keys)
            assert not any(storage.blobs.exists(k) for k in a_keys - b_keys)
            await removal.delete_upload(storage, ids[1])
            return [k for k, _, _ in storage.blobs.keys()]  # noqa: SIM118 - a blob store, not a dict

    assert run(go()) == []


def test_blobs_gc_removes_old_unreferenced_blobs_on_each_backend(settings):
    from storage import gc, migrate
    from storage.context import open_storage

    async def go():
        async with open_storage(settings) as storage:
            await migrate.upgrade(storage.engine)
            orphan = storage.blobs.put(b"nobody's", suffix=".npy")
            staged = storage.blobs.stage()
            staged.write(b"abandoned")
            staged.finish()
            young = await gc.collect(storage, grace_seconds=3600)
            assert young.removed == []
            report = await gc.collect(storage, grace_seconds=-1)
            removed = {k for k, _ in report.removed}
            assert orphan in removed and len(removed) == 2
            return list(storage.blobs.keys()), staged.path.exists()

    assert run(go()) == ([], False)


# --- S3 faults -----------------------------------------------------------------------------


def test_missing_blob_in_s3_names_the_key_and_bucket(s3_settings):
    store = blob_store_for(s3_settings)
    key = "ab/cd/" + "0" * 64 + ".png"
    with pytest.raises(BlobNotFound) as info:
        store.get(key)
    assert key in str(info.value) and store.bucket in str(info.value)
    assert not isinstance(info.value, TRANSIENT_BLOB_ERRORS)


def test_an_s3_outage_is_a_transient_fault(tmp_path, aws_env):
    """Nothing listens: botocore retries, then the store raises BlobStoreUnavailable, a
    ConnectionError — what the workers' retry rules (workers/tasks.py TRANSIENT) retry."""
    store = blob_store_for(Settings(
        data_dir=tmp_path, blob_url="s3://bucket/p", s3_endpoint_url=f"http://127.0.0.1:"
        f"{free_port()}", s3_max_attempts=2, s3_connect_timeout=1, s3_read_timeout=1))
    key = "ab/cd/" + "1" * 64 + ".npy"
    for call in (lambda: store.get(key), lambda: store.put(b"x"), lambda: store.exists(key),
                 lambda: store.delete(key), lambda: list(store.keys())):
        with pytest.raises(BlobStoreUnavailable) as info:
            call()
        assert isinstance(info.value, TRANSIENT_BLOB_ERRORS)
        assert isinstance(info.value, ConnectionError)
    staged = store.stage()
    staged.write(b"bytes")
    with pytest.raises(BlobStoreUnavailable):
        store.commit(staged, key)
    staged.discard()
    try:  # the workers' one classification of faults, where it exists
        from storage.faults import is_transient
    except ImportError:
        return
    assert is_transient(info.value)
    assert not is_transient(BlobNotFound(key, store.describe()))


def test_an_outage_mid_canvas_raises_transient_then_the_step_succeeds(s3_settings):
    """prepare on an S3 store that stops answering raises the transient error (the task is
    retried); once the store is back the same step completes."""
    settings = s3_settings
    from service import detection, ingest
    from storage import migrate
    from storage.context import open_storage

    async def go():
        async with open_storage(settings) as storage:
            await migrate.upgrade(storage.engine)
            outcome = await ingest.ingest_bytes(storage, settings,
                                               data=encode(noisy_photo(seed=4)),
                                               original_file_name="p.png", user_id=None)
            working = storage.blobs.client
            down = blob_store_for(settings.model_copy(update={
                "s3_endpoint_url": f"http://127.0.0.1:{free_port()}", "s3_max_attempts": 1,
                "s3_connect_timeout": 1}))
            storage.blobs.client = down.client
            with pytest.raises(BlobStoreUnavailable):
                await detection.prepare(storage, settings, outcome.upload_id)
            storage.blobs.client = working
            manifest_key, methods = await detection.prepare(storage, settings, outcome.upload_id)
            return manifest_key, methods

    manifest_key, methods = run(go())
    assert manifest_key and methods


def test_permanent_s3_errors_are_not_transient(s3_settings):
    store = blob_store_for(s3_settings.model_copy(update={"blob_url": "s3://no-such-bucket-here/x"}))
    with pytest.raises(BlobStoreError) as info:
        store.put(b"data")
    assert not isinstance(info.value, TRANSIENT_BLOB_ERRORS)
    assert "no-such-bucket-here" in str(info.value)


def test_doctor_checks_the_object_store(s3_settings):
    from service.runtime.health import _check_blobs

    check = _check_blobs(s3_settings)
    assert check.ok and s3_settings.blob_url.split("/")[2] in check.detail
    down = _check_blobs(s3_settings.model_copy(update={
        "s3_endpoint_url": f"http://127.0.0.1:{free_port()}", "s3_max_attempts": 1,
        "s3_connect_timeout": 1}))
    assert not down.ok and "BlobStoreUnavailable" in down.detail
