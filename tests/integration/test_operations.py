"""Operators' tools with real parts: Flower as a real process on the test broker, ``skygate
doctor`` against up and down services, JSON logs of a real worker, retry and rescore."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from pipeline.ensemble import ALGORITHM_VERSION
from testkit.images import encode, noisy_photo
from tests.conftest import ROOT, cluster_sql, free_port, run, serve, start_cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLOWER_AUTH = ("ops", "flower-secret-pw")


@pytest.fixture(scope="module")
def cluster(pg_url, mongo_url, tmp_path_factory):
    with start_cluster(pg_url, mongo_url, tmp_path_factory, "ops",
                       SKYGATE_FLOWER_BASIC_AUTH=":".join(FLOWER_AUTH)) as c:
        yield c


def skygate(cluster, *args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "skygate.cli", *map(str, args)],
                          env={**cluster["env"], **(env or {})}, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def submit(cluster, *paths, out):
    result = skygate(cluster, "submit", *paths, "--wait", "--out", out, "--timeout", "300")
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return result, records


def sql(cluster, query, **params):
    return cluster_sql(cluster["db_url"], query, **params)


def test_flower_shows_workers_tasks_and_metrics(cluster, tmp_path):
    port = free_port()
    log_path = tmp_path / "flower.log"
    base = f"http://127.0.0.1:{port}"
    with serve(["flower", "--port", str(port)], env=cluster["env"],
               health_url=f"{base}/healthcheck", log_path=log_path):
        # Flower learns tasks from events, so the run comes after it started.
        image = tmp_path / "watched.jpg"
        image.write_bytes(encode(noisy_photo(seed=71), fmt="JPEG"))
        result, (record,) = submit(cluster, image, out=tmp_path / "r.jsonl")
        assert record["status"] == "done", result.stderr

        assert httpx.get(f"{base}/api/workers", timeout=10).status_code == 401
        # The metrics are behind the same basic auth; the health probe is not.
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 401
        assert httpx.get(f"{base}/healthcheck", timeout=10).status_code == 200
        with httpx.Client(base_url=base, auth=FLOWER_AUTH, timeout=30) as c:
            workers = c.get("/api/workers", params={"refresh": "true"}).json()
            assert workers, "no worker listed"
            (info,) = workers.values()
            queues = {q["name"] for q in info["active_queues"]}
            assert queues == {"ingest", "detect", "model", "aggregate", "webhooks"}

            def names():
                return {t["name"] for t in c.get("/api/tasks").json().values()}

            expected = {"skygate.ingest", "skygate.prepare", "skygate.aggregate",
                        *(f"skygate.detect.{m}" for m in
                          ("exif", "prnu", "ela", "texture", "model"))}
            wait_for(lambda: names() >= expected, 30, "flower saw every task")
            tasks = c.get("/api/tasks").json().values()
            for task in tasks:
                assert task["state"] == "SUCCESS", task
                assert task["runtime"] is not None and task["runtime"] >= 0
                # Arguments are ids, keys and names, never image bytes or secrets.
                assert len(task["args"] or "") < 2000 and len(task["kwargs"] or "") < 2000
                assert FLOWER_AUTH[1] not in json.dumps(task)
            ingest = next(t for t in tasks if t["name"] == "skygate.ingest")
            assert "watched.jpg" in ingest["kwargs"] and "blob_key" in ingest["kwargs"]

            metrics = c.get("/metrics")
            assert metrics.status_code == 200
            assert 'flower_events_total{task="skygate.detect.prnu"' in metrics.text
            assert "flower_task_runtime_seconds" in metrics.text
            # What waits, per queue, read from the broker at the scrape (all drained here).
            for queue in ("ingest", "detect", "model", "aggregate"):
                assert f'skygate_queue_depth{{queue="{queue}"}} 0.0' in metrics.text, queue
            assert "skygate_queue_depth_up 1.0" in metrics.text
    assert FLOWER_AUTH[1] not in log_path.read_text()


def test_doctor_passes_with_everything_up(cluster):
    result = skygate(cluster, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("database", "documents", "broker", "result backend", "workers",
                  "blob store", "model"):
        assert check in result.stdout
    assert "FAIL" not in result.stdout
    assert "ingest" in result.stdout and "detect" in result.stdout, result.stdout
    # The model's numerics on this CPU, against its shipped float reference.
    assert "known-answer" in result.stdout and "cosine" in result.stdout, result.stdout


def test_doctor_names_the_broker_when_its_port_is_closed(cluster):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    result = skygate(cluster, "doctor", env={"SKYGATE_BROKER_URL": closed}, timeout=120)
    assert result.returncode == 1
    broker_row = next(line for line in result.stdout.splitlines() if "broker" in line)
    assert "FAIL" in broker_row and "SKYGATE_BROKER_URL" in result.stdout
    assert "failed: broker" in result.stderr
    # The database and documents are still fine, and say so.
    db_row = next(line for line in result.stdout.splitlines() if "database" in line)
    assert "ok" in db_row


def test_doctor_with_postgresql_stopped_names_it_and_nothing_else(cluster):
    """MongoDB, Redis and the workers are up; PostgreSQL's port answers nothing."""
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/skygate"
    result = skygate(cluster, "doctor", "--json", env={"SKYGATE_DATABASE_URL": closed},
                     timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["causes"] == ["database"], report
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["database"]["detail"].startswith("PostgreSQL ")
    assert by_name["pools"]["detail"] == "skipped: database unreachable"
    # MongoDB holds the documents and the model configuration: they are checked, and pass.
    assert all(c["status"] == "ok" for n, c in by_name.items() if n not in ("database", "pools"))


def test_doctor_names_an_unmigrated_database(cluster, pg_url):
    from tests.conftest import _pg_admin

    name = pg_url.rsplit("/", 1)[1] + "_empty"
    run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        result = skygate(cluster, "doctor", env={
            "SKYGATE_DATABASE_URL": pg_url.rsplit("/", 1)[0] + "/" + name}, timeout=120)
    finally:
        run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    assert result.returncode == 1
    assert "skygate db upgrade" in result.stdout and "failed: database" in result.stderr


def test_worker_logs_are_json_with_upload_and_task_ids(cluster, tmp_path):
    client = MongoClient(cluster["mongo_url"])
    configs = client.get_default_database()["system_configuration"]
    original = configs.find_one({"config_name": "default_model"})
    configs.update_one({"_id": original["_id"]},
                       {"$set": {"parameters.model_path": "/nonexistent/broken.onnx"}})
    try:
        image = tmp_path / "logged-file.jpg"
        image.write_bytes(encode(noisy_photo(seed=72), fmt="JPEG"))
        _, (record,) = submit(cluster, image, out=tmp_path / "r.jsonl")
    finally:
        configs.replace_one({"_id": original["_id"]}, original)
        client.close()
    upload_id = record["upload_id"]
    lines = [json.loads(line) for line in cluster["log"].read_text().splitlines()
             if line.startswith("{")]
    assert lines, "the worker wrote no JSON log lines"
    ours = [entry for entry in lines if entry["logger"].startswith("skygate.")
            and entry.get("upload_id") == upload_id]
    assert ours and all(entry["task_id"] for entry in ours), ours
    failure = next(e for e in ours if e.get("method") == "model")
    assert failure["file"] == "logged-file.jpg" and "not found" in failure["reason"]
    assert failure["task_name"] == "skygate.detect.model"
    # Every pipeline line of any upload carries its upload and task.
    # (The worker's own lines — its start-up wait, the model loaded ahead, the recovery
    # sweep — belong to no task.)
    pipeline = [e for e in lines if e["logger"].startswith("skygate.")
                and e["logger"] not in ("skygate.recovery", "skygate.faults", "skygate.startup")]
    assert all(e.get("upload_id") and e.get("task_id") for e in pipeline), pipeline[:3]
    text = cluster["log"].read_text()
    assert "\\x89PNG" not in text and "\\xff\\xd8" not in text


def test_retry_failed_reenqueues_and_rescore_keeps_history(cluster, tmp_path):
    image = tmp_path / "again.jpg"
    image.write_bytes(encode(noisy_photo(seed=73), fmt="JPEG"))
    _, (record,) = submit(cluster, image, out=tmp_path / "r.jsonl")
    upload_id = record["upload_id"]
    # As if its chord had been lost: failed, though the image is fine.
    sql(cluster, "UPDATE uploads SET status='failed', error='detection did not complete' "
                 "WHERE upload_id=:u", u=upload_id)
    retried = skygate(cluster, "retry", "--failed")
    assert retried.returncode == 0 and str(upload_id) in retried.stdout, retried.stderr

    def status():
        return sql(cluster, "SELECT status FROM uploads WHERE upload_id=:u", u=upload_id)[0][0]

    wait_for(lambda: status() == "done", 120, "retried upload done")

    (texture_weight,) = sql(cluster, "SELECT weight FROM detection_methods "
                                     "WHERE method_name='texture'")[0]
    sql(cluster, "UPDATE detection_methods SET weight=0.10 WHERE method_name='texture'")
    try:
        rescored = skygate(cluster, "rescore", "--algorithm-version", ALGORITHM_VERSION)
        assert rescored.returncode == 0, rescored.stderr
        (result_id,) = sql(cluster, "SELECT result_id FROM detection_results WHERE upload_id=:u",
                           u=upload_id)[0]
        client = MongoClient(cluster["mongo_url"])
        docs = client.get_default_database()["detection_metadata"]

        def history():
            doc = docs.find_one({"result_id": result_id})
            return doc.get("history", []) if status() == "done" else []

        wait_for(lambda: len(history()) >= 2, 120, "rescored with history")
        entries = history()
        client.close()
    finally:
        sql(cluster, "UPDATE detection_methods SET weight=:w WHERE method_name='texture'",
            w=texture_weight)
    # One entry for the retry's run, one for the rescore's; each keeps the verdict it replaced.
    assert all(e["algorithm_version"] == ALGORITHM_VERSION and "methods" in e for e in entries)
    assert {"prnu", "texture", "model"} <= set(entries[-1]["methods"])
    assert sql(cluster, "SELECT count(*) FROM detection_results WHERE upload_id=:u",
               u=upload_id)[0][0] == 1


def test_recover_resends_a_stuck_upload_and_dry_run_only_lists_it(cluster, tmp_path):
    """`skygate recover` by hand: a processing upload nobody touched (its messages lost) is
    listed by --dry-run, re-sent by recover, and ends done with no duplicate rows; a second
    `submit --wait` of the same file reports it as already known."""
    image = tmp_path / "stuck.jpg"
    image.write_bytes(encode(noisy_photo(seed=4242), fmt="JPEG"))
    _, (record,) = submit(cluster, image, out=tmp_path / "a.jsonl")
    upload_id = record["upload_id"]
    # As if its chord died with the broker 100 s ago (the worker's own sweep waits 360 s).
    sql(cluster, "UPDATE uploads SET status='processing', stage='detecting', "
                 "stage_touched_at = now() - interval '100 seconds' WHERE upload_id=:u",
        u=upload_id)
    dry = skygate(cluster, "recover", "--dry-run", "--stuck-after", "50")
    assert dry.returncode == 0, dry.stderr
    assert f"would re-send upload {upload_id} (processing, stage detecting" in dry.stdout
    assert sql(cluster, "SELECT status, recoveries FROM uploads WHERE upload_id=:u",
               u=upload_id)[0] == ("processing", 0)
    done = skygate(cluster, "recover", "--stuck-after", "50")
    assert done.returncode == 0, done.stderr
    assert f"re-sent upload {upload_id}" in done.stdout and "re-sent 1 stuck" in done.stdout
    wait_for(lambda: sql(cluster, "SELECT status FROM uploads WHERE upload_id=:u",
                         u=upload_id)[0][0] == "done", 120, "recovered upload done")
    (recoveries, deliveries) = sql(cluster, "SELECT recoveries, delivery_count FROM uploads "
                                            "WHERE upload_id=:u", u=upload_id)[0]
    assert recoveries == 1 and deliveries == 1  # a re-dispatch is not a worker death
    assert sql(cluster, "SELECT count(*) FROM detection_results WHERE upload_id=:u",
               u=upload_id)[0][0] == 1
    again, (second,) = submit(cluster, image, out=tmp_path / "b.jsonl")
    assert again.returncode == 0 and second["status"] == "duplicate"
    assert "summary: done 1, failed 0, still pending 0" in again.stdout
    nothing = skygate(cluster, "recover", "--stuck-after", "50")
    assert "re-sent 0 stuck upload(s)" in nothing.stdout


def test_submit_wait_honours_its_timeout_and_reports_what_is_pending(cluster, tmp_path):
    """The broker is down for the whole run: --wait keeps trying to send, stops at --timeout
    (to the second), reports the file as pending rather than failed, and exits 3."""
    import time

    image = tmp_path / "never.jpg"
    image.write_bytes(encode(noisy_photo(seed=4343), fmt="JPEG"))
    broker = f"redis://127.0.0.1:{free_port()}/0"
    out = tmp_path / "p.jsonl"
    started = time.monotonic()
    result = skygate(cluster, "submit", image, "--wait", "--out", out, "--timeout", "4",
                     env={"SKYGATE_BROKER_URL": broker})
    elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stderr + result.stdout
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["status"] == "pending" and "not ingested yet" in record["error"]
    assert "summary: done 0, failed 0, still pending 1" in result.stdout
    assert elapsed < 4 + 8, elapsed  # the timeout plus the interpreter's start-up


def test_a_request_id_travels_from_the_publisher_into_every_task_log_line(cluster, tmp_path):
    """What the API does for each request: bind its id, publish. Every task the upload's
    canvas runs in the real worker logs JSON lines with that request id, ISO UTC times."""
    from celery import Celery

    from service.runtime.logs import _propagate_request_ids, bind_request, unbind_request

    image = tmp_path / "traced.jpg"  # bytes no other test sends: a new upload, a whole canvas
    image.write_bytes(encode(noisy_photo(rows=200, cols=232, seed=9273), fmt="JPEG"))
    app = Celery(broker=cluster["env"]["SKYGATE_BROKER_URL"])
    _propagate_request_ids()
    token = bind_request("req-trace-73")
    try:
        app.send_task("skygate.ingest", queue="ingest",
                      kwargs={"path": str(image), "original_file_name": "traced.jpg"})
    finally:
        unbind_request(token)
        app.close()

    def traced():
        lines = [json.loads(line) for line in cluster["log"].read_text().splitlines()
                 if line.startswith("{")]
        return [e for e in lines if e.get("request_id") == "req-trace-73"]

    wait_for(lambda: any(e["task_name"] == "skygate.aggregate" for e in traced()), 120,
             "the aggregate task logged with the request id", log=cluster["log"])
    lines = traced()
    names = {e["task_name"] for e in lines}
    assert {"skygate.ingest", "skygate.prepare", "skygate.aggregate"} <= names, names
    assert any(n.startswith("skygate.detect.") for n in names), names
    upload_ids = {e["upload_id"] for e in lines if e["task_name"] != "skygate.ingest"}
    assert len(upload_ids) == 1 and None not in upload_ids, lines
    for entry in lines:
        assert entry["time"].endswith("Z") and "T" in entry["time"], entry
        assert entry["task_id"], entry
        assert "data" not in entry and "{" not in entry["message"], entry


def test_submit_skips_sidecars_and_dangling_links_without_failing(cluster, tmp_path):
    """Nothing to send (a sidecar, a note, a link to a deleted file): each is skipped with its
    reason, the run exits 0 and no broker is needed."""
    folder = tmp_path / "only-sidecars"
    folder.mkdir()
    (folder / "IMG_1.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    (folder / "notes.txt").write_text("day 3")
    (folder / "gone.jpg").symlink_to(folder / "deleted.jpg")
    out = tmp_path / "s.jsonl"
    result = skygate(cluster, "submit", folder, "--out", out,
                     env={"SKYGATE_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert result.returncode == 0, result.stderr + result.stdout
    records = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert {n: r["status"] for n, r in records.items()} == dict.fromkeys(
        ("IMG_1.xmp", "notes.txt", "gone.jpg"), "skipped")
    assert records["gone.jpg"]["error"].startswith("dangling link")
    assert "failed 0" in result.stdout and "skipped 3 (not images)" in result.stdout
