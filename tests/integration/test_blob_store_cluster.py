"""A cluster of two Celery workers that share no folder, both on one S3 bucket (moto's server
mode on a loopback port), and the API streaming uploads into that bucket."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import uuid

import pytest

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
from tests.integration.conftest import AWS_ENV, make_bucket


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
