"""The blob store on both backends — a folder and S3 (moto's server mode on a loopback port) —
with the same behavioural tests; the factory that picks one from ``SKYGATE_BLOB_URL``; an S3
outage as a transient fault; and a cluster of two workers that share no folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

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
from tests.conftest import (
    REDIS_URL,
    ROOT,
    _pg_admin,
    claimed_redis_db,
    cluster_sql,
    free_port,
    run,
    stop,
    unavailable,
    wait_for,
)

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}


# --- moto's S3 server --------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """``moto_server`` (moto[server]) on a free loopback port, for this test session."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        unavailable("moto_server is not installed (pip install -e '.[test]')")
    port = free_port()
    workdir = tmp_path_factory.mktemp("moto")
    log_path = workdir / "moto.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], cwd=workdir,
                                stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **AWS_ENV})
    url = f"http://127.0.0.1:{port}"

    def up():
        import urllib.request

        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()  # noqa: S310 - loopback http
            return True
        except OSError:
            return False

    try:
        wait_for(up, 30, "moto_server answering", alive=proc, log=log_path)
        yield url
    finally:
        stop(proc)


def make_bucket(endpoint: str) -> str:
    import boto3

    name = f"skygate-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1"
                 ).create_bucket(Bucket=name)
    return name


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


@pytest.fixture
def s3_settings(tmp_path, s3_endpoint, aws_env):
    """Settings naming a fresh bucket on moto."""
    return Settings(data_dir=tmp_path, blob_url=f"s3://{make_bucket(s3_endpoint)}/blobs",
                    s3_endpoint_url=s3_endpoint)


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


# --- two workers that share no folder ------------------------------------------------------


@contextlib.contextmanager
def s3_cluster(pg_url, mongo_url, s3_endpoint, tmp_path_factory):
    """A migrated database, and two Celery workers, each with its own SKYGATE_DATA_DIR, both
    on one S3 bucket: one serves ingest+aggregate, the other detect+model, so every image
    crosses between them only through S3."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    tag = f"s3_{uuid.uuid4().hex[:6]}"
    name = pg_url.rsplit("/", 1)[1] + "_" + tag
    run(_pg_admin(f'CREATE DATABASE "{name}"'))
    with claimed_redis_db() as db_index:
        bucket = make_bucket(s3_endpoint)
        base = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("SKYGATE_", "AWS_"))},
            **AWS_ENV,
            "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "SKYGATE_DATABASE_URL": pg_url.rsplit("/", 1)[0] + "/" + name,
            "SKYGATE_MONGO_URL": f"{mongo_url}/{tag}",
            "SKYGATE_BROKER_URL": f"{REDIS_URL}/{db_index}",
            "SKYGATE_RESULT_BACKEND": f"{REDIS_URL}/{db_index}",
            "SKYGATE_BLOB_URL": f"s3://{bucket}/skygate",
            "SKYGATE_S3_ENDPOINT_URL": s3_endpoint,
        }
        dirs = {role: tmp_path_factory.mktemp(f"{tag}_{role}") for role in
                ("ingest", "detect", "submitter")}
        up = subprocess.run([sys.executable, "-m", "skygate.cli", "db", "upgrade"],
                            env={**base, "SKYGATE_DATA_DIR": str(dirs["submitter"])}, cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
        assert up.returncode == 0, up.stderr
        workers, logs = [], []
        try:
            for role, queues in (("ingest", "ingest,aggregate,webhooks"),
                                 ("detect", "detect,model")):
                log_path = dirs[role] / "worker.log"
                log = open(log_path, "w")  # noqa: SIM115 - closed below
                logs.append(log)
                workers.append((subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "workers", "worker", "-l", "info",
                     "-c", "2", "-Q", queues, "-n", f"{role}-{tag}@%h", "--without-gossip",
                     "--without-mingle"],
                    env={**base, "SKYGATE_DATA_DIR": str(dirs[role])}, cwd=ROOT,
                    stdout=log, stderr=subprocess.STDOUT), log_path))
            for proc, log_path in workers:
                wait_for(lambda p=log_path: "ready." in p.read_text(), 60, "worker ready",
                         alive=proc, log=log_path)
            yield {"env": base, "dirs": dirs, "bucket": bucket,
                   "db_url": base["SKYGATE_DATABASE_URL"], "logs": [p for _, p in workers]}
        finally:
            for proc, _ in workers:
                stop(proc)
            for log in logs:
                log.close()
            run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def s3_stack(pg_url, mongo_url, s3_endpoint, tmp_path_factory):
    """The two-worker cluster on S3, plus the API in a fourth data dir."""
    from tests.conftest import serve

    with s3_cluster(pg_url, mongo_url, s3_endpoint, tmp_path_factory) as cluster:
        api_dir = tmp_path_factory.mktemp("s3_api")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with serve(["api", "--port", str(port)],
                   env={**cluster["env"], "SKYGATE_DATA_DIR": str(api_dir)},
                   health_url=f"{base}/healthz", log_path=api_dir / "api.log"):
            yield {**cluster, "base": base, "dirs": {**cluster["dirs"], "api": api_dir}}


def bucket_names(cluster, s3_endpoint) -> set[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=cluster["bucket"])
    return {o["Key"] for page in pages for o in page.get("Contents", ())}


@pytest.mark.slow
@pytest.mark.integration
def test_two_workers_sharing_no_folder_give_every_image_a_verdict(s3_stack, s3_endpoint):
    cluster = s3_stack
    submitter = cluster["dirs"]["submitter"]
    files = []
    for i in range(3):
        path = submitter / f"photo{i}.jpg"
        path.write_bytes(encode(noisy_photo(rows=240, cols=320, seed=40 + i), fmt="JPEG"))
        files.append(path)
    declared = submitter / "declared.png"
    declared.write_bytes(encode(smooth_scene(seed=41), text={"parameters": SD_PARAMETERS}))
    files.append(declared)
    out = submitter / "out.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "skygate.cli", "submit", *map(str, files), "--wait",
         "--out", str(out), "--timeout", "300"],
        env={**cluster["env"], "SKYGATE_DATA_DIR": str(submitter)}, cwd=ROOT,
        capture_output=True, text=True, timeout=400, check=False)
    logs = "\n".join(p.read_text()[-3000:] for p in cluster["logs"])
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:] + logs
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 and all(r["status"] == "done" for r in records), records
    assert all(set(r["methods"]) == {"exif", "prnu", "ela", "texture", "model"}
               for r in records)
    assert {r["path"]: r["is_ai_generated"] for r in records}[str(declared)] is True
    # Every original, cache and picture is in the bucket; no data dir holds a blob.
    names = bucket_names(cluster, s3_endpoint)
    for r in records:
        digest = r["sha256"]
        assert any(n.startswith(f"skygate/{digest[:2]}/{digest[2:4]}/{digest}.")
                   for n in names), digest
    keys = cluster_sql(cluster["db_url"], "SELECT blob_key FROM blob_refs")
    assert keys and all(f"skygate/{k}" in names for (k,) in keys)
    for role, folder in cluster["dirs"].items():
        assert not (folder / "blobs").exists(), role
        staging = folder / "blob-staging"
        assert not staging.exists() or not list(staging.iterdir()), role


@pytest.mark.slow
@pytest.mark.integration
def test_api_streams_uploads_into_s3_serves_pictures_and_deletes(s3_stack, s3_endpoint):
    """The API's streamed upload goes through its local staging file into the bucket; the
    ELA picture comes back from S3; DELETE removes the upload's objects from the bucket."""
    import httpx

    from service import accounts
    from storage.db import create_engine

    async def make_key():
        engine = create_engine(s3_stack["db_url"].replace("postgresql://",
                                                          "postgresql+asyncpg://"))
        try:
            await accounts.create_user(engine, username="s3user", email="s3@example.org",
                                       password=None)
            key, _ = await accounts.create_key(engine, username="s3user", name="t", limit=100,
                                               expires_at=None)
            return key
        finally:
            await engine.dispose()

    key = run(make_key())
    data = encode(noisy_photo(rows=200, cols=260, seed=77), fmt="JPEG")
    digest = hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=s3_stack["base"], headers={"X-API-Key": key}, timeout=60) as c:
        r = c.post("/v1/uploads", files=[("file", ("api.jpg", data))])
        assert r.status_code == 202, r.text
        upload_id = r.json()["uploads"][0]["upload_id"]
        state = {}

        def done():
            state.update(c.get(f"/v1/uploads/{upload_id}").json())
            return state["status"] in ("done", "failed")

        wait_for(done, 120, "API upload finished")
        assert state["status"] == "done", state
        ela = c.get(f"/v1/uploads/{upload_id}/ela.png")
        assert ela.status_code == 200 and ela.content.startswith(b"\x89PNG")
        original = f"skygate/{digest[:2]}/{digest[2:4]}/{digest}.jpeg"
        assert original in bucket_names(s3_stack, s3_endpoint)
        staging = s3_stack["dirs"]["api"] / "blob-staging"
        assert not staging.exists() or not list(staging.iterdir())
        keys = [k for (k,) in cluster_sql(s3_stack["db_url"], "SELECT blob_key FROM blob_refs "
                                          "WHERE upload_id = :u", u=upload_id)]
        assert len(keys) >= 4  # original, thumbnail, ELA, heatmap (intermediates released)
        assert c.delete(f"/v1/uploads/{upload_id}").status_code in (200, 204)
    left = bucket_names(s3_stack, s3_endpoint)
    assert original not in left
    # Its derived blobs go too, unless an upload of the other test shares them (it cannot:
    # different pixels).
    assert not any(f"skygate/{k}" in left for k in keys)
