"""End to end with real parts: a Celery worker process on Redis (broker and results),
PostgreSQL, and the Mongo wire-protocol server; files sent with ``skygate submit``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
from pymongo import MongoClient

from testkit.images import SD_PARAMETERS, encode, noisy_photo, smooth_scene
from tests.conftest import ROOT, cluster_sql, corpus_dir, start_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(pg_url, mongo_url, tmp_path_factory):
    # Workers that draw the voting model's map: the cluster report shows it.
    with start_cluster(pg_url, mongo_url, tmp_path_factory, "pipe",
                       SKYGATE_MODEL_HEATMAP="1") as c:
        yield c


def submit(cluster, *paths, out, extra=()):
    result = subprocess.run(
        [sys.executable, "-m", "skygate.cli", "submit", *map(str, paths), "--wait",
         "--out", str(out), "--timeout", "600", *map(str, extra)],
        env=cluster["env"], cwd=ROOT, capture_output=True, text=True, timeout=900,
        check=False)
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return result, records


def sql(cluster, query, **params):
    return cluster_sql(cluster["db_url"], query, **params)


def mongo(cluster):
    client = MongoClient(cluster["mongo_url"])
    return client, client.get_default_database()


SECTIONS = ("file_info", "exif_data", "pixel_analysis", "model_results", "visual_anomalies",
            "aggregated_results", "created_at", "updated_at", "result_id", "upload_id")


def test_sd_parameters_png_is_called_ai_with_high_confidence(cluster, tmp_path):
    path = tmp_path / "sd.png"
    path.write_bytes(encode(smooth_scene(seed=11), text={"parameters": SD_PARAMETERS}))
    result, records = submit(cluster, path, out=tmp_path / "r.jsonl")
    assert result.returncode == 0, result.stderr + result.stdout
    (record,) = records
    assert record["status"] == "done"
    assert record["is_ai_generated"] is True and record["confidence"] >= 0.95
    assert set(record["methods"]) == {"exif", "prnu", "ela", "texture", "model"}


@pytest.mark.corpus
def test_twenty_corpus_images_give_twenty_results_rows_and_documents(cluster, tmp_path):
    ai = sorted(corpus_dir("ai").iterdir())
    # Some that declare their generator (ComfyUI's workflow chunks), some that do not.
    declared_ai = [p for p in ai if "comfyanonymo" in p.name][::9][:4]
    other_ai = [p for p in ai if "comfyanonymo" not in p.name][::20][:4]
    real = sorted(p for p in corpus_dir("real").iterdir() if p.suffix.lower() == ".jpg")
    web = sorted(corpus_dir("real_web").iterdir())
    files = declared_ai + other_ai + real[::12][:7] + web[::8][:5]
    assert len(files) == 20
    report = tmp_path / "corpus.html"
    result, records = submit(cluster, *files, out=tmp_path / "corpus.jsonl",
                             extra=["--report", report])
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    # The report of a cluster run has every image with its pictures from the shared blobs.
    page = report.read_text()
    assert all(os.path.basename(f) in page for f in files)
    data = json.loads(re.search(r"<script type='application/json' id='data'>(.*?)</script>",
                                page, re.S).group(1))
    pages = [(report.with_name("corpus_files") / r["g"]).read_text() for r in data["rows"]]
    assert sum("id='ela'" in p for p in pages) == 20  # an ELA picture for each
    assert sum("id='map'" in p for p in pages) == 20  # and the voting model's map
    assert not any("x" in r for r in data["rows"])  # no picture missing
    assert len(records) == 20 and all(r["status"] == "done" for r in records), records
    ids = [r["upload_id"] for r in records]
    rows = sql(cluster, "SELECT r.upload_id, count(m.method_result_id), r.metadata_id, "
                        "u.is_processed, u.processing_completed_at FROM detection_results r "
                        "JOIN method_results m USING (result_id) JOIN uploads u USING (upload_id) "
                        "WHERE r.upload_id = ANY(:ids) GROUP BY r.upload_id, r.metadata_id, "
                        "u.is_processed, u.processing_completed_at", ids=ids)
    assert len(rows) == 20
    assert all(n == 5 and meta and processed and done for _, n, meta, processed, done in rows)
    client, db = mongo(cluster)
    try:
        docs = list(db["detection_metadata"].find({"upload_id": {"$in": ids}}))
    finally:
        client.close()
    assert len(docs) == 20
    for doc in docs:
        assert all(section in doc for section in SECTIONS)
        assert doc["file_info"]["dimensions"]["width"] > 0
        assert doc["pixel_analysis"]["ela_results"]["ela_image_path"]
        assert doc["aggregated_results"]["contributing_factors"]
    declared = [r for r in records if "comfyanonymo" in r["path"]]
    assert declared and all(r["is_ai_generated"] is True for r in declared)


def test_repeated_upload_and_redelivered_pipeline_leave_no_duplicates(cluster, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(noisy_photo(rows=300, cols=400, seed=5), fmt="JPEG"))
    _, first = submit(cluster, path, out=tmp_path / "a.jsonl")
    _, second = submit(cluster, path, out=tmp_path / "b.jsonl")
    assert first[0]["status"] == "done" and second[0]["status"] == "duplicate"
    upload_id = first[0]["upload_id"]
    assert second[0]["upload_id"] == upload_id
    # Run the whole canvas for the same upload again, as a redelivery would.
    from workers import app

    app.conf.broker_url = cluster["env"]["SKYGATE_BROKER_URL"]
    app.conf.result_backend = cluster["env"]["SKYGATE_RESULT_BACKEND"]
    before = sql(cluster, "SELECT detection_date FROM detection_results WHERE upload_id = :u",
                 u=upload_id)[0][0]
    pending = app.send_task("skygate.prepare", args=[upload_id])
    pending.get(timeout=120)
    # Release the result's Redis subscription now, not in __del__ at interpreter exit.
    del pending
    import gc

    gc.collect()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = sql(cluster, "SELECT detection_date FROM detection_results WHERE upload_id = :u",
                  u=upload_id)[0][0]
        if now > before:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the repeated canvas did not aggregate")
    counts = sql(cluster, "SELECT count(DISTINCT r.result_id), count(m.method_result_id) "
                          "FROM detection_results r JOIN method_results m USING (result_id) "
                          "WHERE r.upload_id = :u", u=upload_id)[0]
    assert tuple(counts) == (1, 5)
    client, db = mongo(cluster)
    try:
        assert db["detection_metadata"].count_documents({"upload_id": upload_id}) == 1
    finally:
        client.close()


def test_a_failing_method_is_recorded_and_the_verdict_still_stored(cluster, tmp_path):
    client, db = mongo(cluster)
    configs = db["system_configuration"]
    original = configs.find_one({"config_name": "default_model"})
    configs.update_one({"_id": original["_id"]},
                       {"$set": {"parameters.model_path": "/nonexistent/broken.onnx"}})
    try:
        path = tmp_path / "x.jpg"
        path.write_bytes(encode(noisy_photo(rows=256, cols=256, seed=8), fmt="JPEG",
                                exif={0x010F: "Nikon", 0x0110: "D70"}))
        _, (record,) = submit(cluster, path, out=tmp_path / "r.jsonl")
    finally:
        configs.replace_one({"_id": original["_id"]}, original)
        client.close()
    assert record["status"] == "done"
    assert record["methods"]["model"]["status"] == "error"
    assert "model file not found" in record["methods"]["model"]["error"]
    assert record["methods"]["exif"]["status"] == "ok"
    assert record["confidence"] is not None
    assert "method model failed" in cluster["log"].read_text()


def test_bad_files_end_as_recorded_failures(cluster, tmp_path):
    # Text under an image's name (a .txt beside photos is a sidecar, skipped: test_scan).
    (tmp_path / "notes.jpg").write_text("not an image")
    good = encode(noisy_photo(seed=9))
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    result, records = submit(cluster, tmp_path / "notes.jpg", tmp_path / "truncated.png",
                             out=tmp_path / "r.jsonl")
    assert result.returncode == 1
    by_name = {os.path.basename(r["path"]): r for r in records}
    assert by_name["notes.jpg"]["status"] == "failed"
    assert "not a supported image" in by_name["notes.jpg"]["error"]
    assert by_name["truncated.png"]["status"] == "failed"
    rows = sql(cluster, "SELECT status, error FROM uploads WHERE upload_id = ANY(:ids)",
               ids=[r["upload_id"] for r in records])
    assert all(status == "failed" and error for status, error in rows)
