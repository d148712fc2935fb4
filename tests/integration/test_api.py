"""The HTTP API with real parts: uvicorn serving ``skygate api`` on PostgreSQL, Mongo
(wire-protocol server), Redis and a real Celery worker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from storage import accounts as account_rows
from testkit.images import SD_PARAMETERS, encode, noisy_photo, smooth_scene
from tests.conftest import api_cluster, free_port, serve, wait_for
from tests.integration.conftest import client, db, new_user, sql, upload, wait_done

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_UPLOAD = 3_000_000
MAX_FILES = 3


@pytest.fixture(scope="module")
def stack(pg_url, mongo_url, tmp_path_factory):
    with api_cluster(pg_url, mongo_url, tmp_path_factory, "api",
                     SKYGATE_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
                     SKYGATE_API_MAX_FILES=str(MAX_FILES),
                     SKYGATE_MODEL_HEATMAP="1") as cluster:  # results with the model's map
        yield cluster


def test_round_trip_key_upload_result_pictures(stack):
    alice = new_user(stack)
    with client(stack, alice["key"]) as c:
        r = upload(c, ("photo.jpg", encode(noisy_photo(seed=11), fmt="JPEG")),
                   ("render.png",
                    encode(smooth_scene(seed=12), text={"parameters": SD_PARAMETERS})))
        assert r.status_code == 202, r.text
        accepted = {u["file_name"]: u for u in r.json()["uploads"]}
        assert set(accepted) == {"photo.jpg", "render.png"}
        assert all(u["status"] == "queued" for u in accepted.values())
        render_id = accepted["render.png"]["upload_id"]

        early = c.get(f"/v1/uploads/{render_id}/result")
        assert early.status_code in (200, 409)
        for u in accepted.values():
            assert wait_done(c, u["upload_id"])["status"] == "done"

        result = c.get(accepted["render.png"]["result_url"]).json()
        assert result["verdict"] == "ai" and result["confidence"] >= 0.95
        assert set(result["methods"]) == {"exif", "prnu", "ela", "texture", "model"}
        assert result["metadata"]["upload_id"] == render_id
        assert result["metadata"]["exif_data"]["analysis_result"]
        # Why, in the result: declared provenance decided; the model voted; the rest did not.
        why = result["explanation"]
        assert why["decided_by"] == "declared provenance" and why["verdict"] == "ai"
        assert why["provenance"]["generator_chunks"] == ["parameters"]
        assert result["ai_probability"] == why["ai_probability"] >= 0.95
        assert {n["method"] for n in why["not_voting"]} >= {"prnu", "texture", "ela"}
        assert why["algorithm_version"] == result["algorithm_version"] and why["model"]
        visual = result["metadata"]["visual_anomalies"]
        assert visual["heatmap_source"] == "model" and visual["detected_anomalies"] == []
        for picture in ("ela", "heatmap", "forensic_heatmap"):
            png = c.get(result[f"{picture}_url"])
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            assert png.content.startswith(b"\x89PNG")

        listing = c.get("/v1/uploads", params={"limit": 1}).json()
        assert listing["total"] == 2 and len(listing["items"]) == 1 and listing["next"]
        assert c.get(listing["next"]).json()["items"][0]["upload_id"] != \
            listing["items"][0]["upload_id"]
        ai_only = c.get("/v1/uploads", params={"verdict": "ai"}).json()
        assert [i["upload_id"] for i in ai_only["items"]] == [render_id]
        assert c.get("/v1/uploads", params={"processed": "false"}).json()["total"] == 0
        future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        assert c.get("/v1/uploads", params={"since": future}).json()["total"] == 0

        again = upload(c, ("same.png", encode(smooth_scene(seed=12),
                                              text={"parameters": SD_PARAMETERS})))
        assert again.json()["uploads"][0] == {**again.json()["uploads"][0],
                                              "upload_id": render_id, "status": "duplicate"}

    (key_row,) = sql(stack, "SELECT last_used_at, requests_made FROM api_keys WHERE key_id=:k",
                     k=alice["key_id"])
    assert key_row.last_used_at is not None and key_row.requests_made >= 10


def test_users_never_see_each_others_uploads(stack):
    alice, bob = new_user(stack), new_user(stack)
    with client(stack, alice["key"]) as a, client(stack, bob["key"]) as b:
        upload_id = upload(a, ("mine.jpg", encode(noisy_photo(seed=21), fmt="JPEG"))
                           ).json()["uploads"][0]["upload_id"]
        wait_done(a, upload_id)
        for path in ("", "/result", "/ela.png", "/heatmap.png"):
            r = b.get(f"/v1/uploads/{upload_id}{path}")
            assert r.status_code == 404, (path, r.text)
            assert r.json()["code"] == "upload_not_found"
        assert b.delete(f"/v1/uploads/{upload_id}").status_code == 404
        assert upload_id not in [i["upload_id"] for i in b.get("/v1/uploads").json()["items"]]
        # The same bytes from bob are bob's own upload, processed for him.
        own = upload(b, ("mine.jpg", encode(noisy_photo(seed=21), fmt="JPEG"))).json()
        assert own["uploads"][0]["upload_id"] != upload_id
        assert a.get(f"/v1/uploads/{upload_id}/result").status_code == 200


def test_delete_removes_rows_document_and_unshared_blobs(stack):
    from pymongo import MongoClient

    carol = new_user(stack)
    with client(stack, carol["key"]) as c:
        upload_id = upload(c, ("gone.png", encode(noisy_photo(seed=31)))
                           ).json()["uploads"][0]["upload_id"]
        wait_done(c, upload_id)
        (result_id,) = sql(stack, "SELECT result_id FROM detection_results WHERE upload_id=:u",
                           u=upload_id)[0]
        mongo = MongoClient(stack["mongo_url"])
        docs = mongo.get_default_database()["detection_metadata"]
        doc = docs.find_one({"result_id": result_id})
        blobs = [stack["data_dir"] / "blobs" / k for k in doc["blob_keys"].values()]
        assert blobs and all(p.exists() for p in blobs)

        r = c.delete(f"/v1/uploads/{upload_id}")
        assert r.status_code == 204, r.text
        assert c.get(f"/v1/uploads/{upload_id}").status_code == 404
        assert sql(stack, "SELECT count(*) FROM detection_results WHERE upload_id=:u",
                   u=upload_id)[0][0] == 0
        assert sql(stack, "SELECT count(*) FROM method_results WHERE result_id=:r",
                   r=result_id)[0][0] == 0
        assert docs.find_one({"result_id": result_id}) is None
        assert not any(p.exists() for p in blobs)
        mongo.close()


def test_missing_unknown_expired_revoked_and_suspended_keys_get_401(stack):
    from service import accounts

    expired = new_user(stack, expires_at=datetime.now(UTC) - timedelta(minutes=1))
    revoked = new_user(stack)
    suspended = new_user(stack)
    db(stack, lambda e: account_rows.revoke_key(e, key_id=revoked["key_id"]))
    db(stack, lambda e: accounts.set_account_status(e, suspended["name"], "suspended"))
    cases = [(None, "missing_api_key"), ("sg_deadbeef_nope", "invalid_api_key"),
             ("", "missing_api_key"), (expired["key"], "api_key_expired"),
             (revoked["key"], "api_key_revoked"), (suspended["key"], "account_suspended")]
    for key, code in cases:
        with client(stack, key) as c:
            r = c.get("/v1/uploads")
            assert r.status_code == 401, (code, r.text)
            assert r.json()["code"] == code and r.json()["message"]


def test_quota_holds_under_concurrent_requests(stack):
    limit = 5
    dave = new_user(stack, limit=limit)

    async def burst():
        async with httpx.AsyncClient(base_url=stack["base"], timeout=60,
                                     headers={"X-API-Key": dave["key"]}) as c:
            return await asyncio.gather(*(c.get("/v1/uploads") for _ in range(16)))

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == limit and codes.count(429) == 16 - limit, codes
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 86_401
    (made,) = sql(stack, "SELECT requests_made FROM api_keys WHERE key_id=:k", k=dave["key_id"])[0]
    assert made == limit


def test_bad_uploads_get_clear_errors(stack):
    erin = new_user(stack)
    png = encode(noisy_photo(seed=41))
    with client(stack, erin["key"]) as c:
        wrong_type = c.post("/v1/uploads", json={"file": "x"})
        assert (wrong_type.status_code, wrong_type.json()["code"]) == (
            415, "unsupported_media_type")

        malformed = c.post("/v1/uploads", content=b"--xyz\r\nnot really multipart",
                           headers={"Content-Type": "multipart/form-data; boundary=abc"})
        assert malformed.status_code in (400, 422) and malformed.json()["code"] in (
            "malformed_multipart", "no_file")
        no_boundary = c.post("/v1/uploads", content=b"x",
                             headers={"Content-Type": "multipart/form-data"})
        assert no_boundary.status_code == 400, no_boundary.text

        wrong_field = c.post("/v1/uploads", files=[("image", ("a.png", png))])
        assert (wrong_field.status_code, wrong_field.json()["code"]) == (400, "no_file")

        text = upload(c, ("notes.txt", b"just some text, not an image"))
        assert (text.status_code, text.json()["code"]) == (415, "unsupported_image_type")
        assert "notes.txt" in text.json()["message"]

        truncated = upload(c, ("cut.png", png[: len(png) // 2]))
        assert (truncated.status_code, truncated.json()["code"]) == (422, "invalid_image")

        big = upload(c, ("big.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * MAX_UPLOAD))
        assert (big.status_code, big.json()["code"]) == (413, "file_too_large")

        too_many = upload(c, *[(f"{i}.png", png) for i in range(MAX_FILES + 1)])
        assert too_many.status_code == 400, too_many.text

        body_limit = MAX_UPLOAD * MAX_FILES + 1024 * 1024
        huge = c.post("/v1/uploads", content=b"0" * (body_limit + 10),
                      headers={"Content-Type": "multipart/form-data; boundary=abc"})
        assert (huge.status_code, huge.json()["code"]) == (413, "request_too_large")

        assert c.get("/v1/uploads/0").status_code == 422
        assert c.get("/v1/uploads/99999999999").status_code == 422
        assert c.get("/v1/nowhere").json()["code"] == "not_found"
    # Nothing was created by any of it.
    (n,) = sql(stack, "SELECT count(*) FROM uploads u JOIN users s USING (user_id) "
                      "WHERE s.username=:n", n=erin["name"])[0]
    assert n == 0


def test_every_request_leaves_a_usage_log_row(stack):
    frank = new_user(stack)
    (before,) = sql(stack, "SELECT coalesce(max(log_id), 0) FROM usage_logs")[0]
    with client(stack, frank["key"]) as c, client(stack) as anonymous:
        c.get("/v1/uploads")
        c.get("/v1/uploads/424242")
        anonymous.get("/v1/uploads", headers={"User-Agent": "probe/1.0"})
        anonymous.get("/no/such/path")
        anonymous.get("/healthz")
    found: list = []

    def all_five():
        # Each row is written once its answer was sent: the last may land just after.
        found[:] = sql(stack, "SELECT user_id, api_key_id, request_type, request_path, "
                              "response_code, processing_time, ip_address, user_agent "
                              "FROM usage_logs WHERE log_id > :b ORDER BY log_id", b=before)
        return len(found) >= 5

    wait_for(all_five, 10, "five usage rows")
    rows = found
    mine = [r for r in rows if r.api_key_id == frank["key_id"]]
    assert [(r.request_path, r.response_code) for r in mine] == [
        ("/v1/uploads", 200), ("/v1/uploads/424242", 404)]
    assert all(r.user_id is not None and r.request_type == "GET" and r.ip_address == "127.0.0.1"
               and r.processing_time is not None for r in mine)
    anon = {(r.request_path, r.response_code, r.user_agent) for r in rows if r.user_id is None}
    assert ("/v1/uploads", 401, "probe/1.0") in anon
    assert any(p == "/no/such/path" and code == 404 for p, code, _ in anon)
    assert any(p == "/healthz" and code == 200 for p, code, _ in anon)
    # The API's own log names requests, never the key that made them.
    assert frank["key"] not in stack["api_log"].read_text()


def test_login_with_password_issues_a_key_and_records_last_login(stack):
    grace = new_user(stack, password="correct horse battery")
    with client(stack) as c:
        bad = c.post("/v1/keys", json={}, auth=(grace["name"], "wrong password"))
        assert (bad.status_code, bad.json()["code"]) == (401, "invalid_credentials")
        good = c.post("/v1/keys", json={"name": "ci", "request_limit": 10},
                      auth=(grace["name"], "correct horse battery"))
        assert good.status_code == 201, good.text
        key = good.json()["api_key"]
    with client(stack, key) as c:
        assert c.get("/v1/uploads").status_code == 200
    (row,) = sql(stack, "SELECT last_login, password_hash FROM users WHERE username=:n",
                 n=grace["name"])
    assert row.last_login is not None and row.password_hash.startswith("$argon2")
    stored = [r[0] for r in sql(stack, "SELECT api_key FROM api_keys")]
    assert key not in stored and all(":" in s for s in stored)


def test_health_endpoints(stack):
    with client(stack) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert all(v["ok"] for v in ready.json()["checks"].values())


def test_schemathesis_finds_no_server_error(stack):
    """A bounded property-based run over the OpenAPI spec: no input gives a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    heidi = new_user(stack, limit=10_000_000)
    schema = schemathesis.openapi.from_url(f"{stack['base']}/openapi.json")
    failures, calls = [], []
    # Each operation on its own (a strategy over the whole schema may leave one out as
    # routes are added), valid and invalid inputs.
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=6, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                response = case.call(headers={"X-API-Key": heidi["key"]}, timeout=60)
                calls.append((case.method, case.path, response.status_code))
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} -> "
                                    f"{response.status_code}: {response.text[:300]}")

            try:
                fuzz()
            except Unsatisfiable:  # no input of this operation can be invalid (no parameters)
                assert mode == GenerationMode.NEGATIVE, operation.path
    assert not failures, "\n".join(failures[:10])
    assert {(m, p) for m, p, _ in calls} == {(o.method.upper(), o.path) for o in operations}
    # Every operation was exercised, uploads included.
    assert {(m, p) for m, p, _ in calls} >= {("POST", "/v1/uploads"), ("GET", "/v1/uploads"),
                                             ("DELETE", "/v1/uploads/{upload_id}"),
                                             ("POST", "/v1/keys")}
    assert len(calls) > 200
    assert "Traceback" not in stack["api_log"].read_text()


def test_a_down_broker_gives_503_and_the_same_bytes_later_finish_the_same_upload(
        stack, tmp_path):
    """A POST refused for a broker outage leaves the upload queued (not failed), its reason
    path-free; sending the same bytes once the broker is back queues that same upload."""
    ivan = new_user(stack)
    image = encode(noisy_photo(seed=51), fmt="JPEG")
    closed = f"redis://127.0.0.1:{free_port()}/0"
    port = free_port()
    env = {**stack["env"], "SKYGATE_BROKER_URL": closed, "SKYGATE_RESULT_BACKEND": closed}
    with (serve(["api", "--port", str(port)], env=env, log_path=tmp_path / "api.log",
                health_url=f"http://127.0.0.1:{port}/healthz"),
          httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                       headers={"X-API-Key": ivan["key"]}) as c):
            r = upload(c, ("stranded.jpg", image))
            assert (r.status_code, r.json()["code"]) == (503, "queue_unavailable")
            assert r.headers["Retry-After"]
            ready = c.get("/readyz")
            assert ready.status_code == 503 and not ready.json()["checks"]["broker"]["ok"]
    (row,) = sql(stack, "SELECT u.upload_id, u.status, u.error FROM uploads u "
                        "JOIN users s USING (user_id) WHERE s.username=:n", n=ivan["name"])
    assert row.status == "queued" and "queue was unavailable" in row.error
    assert "/" not in row.error and "Errno" not in row.error
    with httpx.Client(base_url=stack["base"], timeout=60,
                      headers={"X-API-Key": ivan["key"]}) as c:
        again = upload(c, ("stranded.jpg", image))
        assert again.status_code == 202, again.text
        (accepted,) = again.json()["uploads"]
        assert (accepted["upload_id"], accepted["status"]) == (row.upload_id, "queued")
        state = wait_done(c, row.upload_id)
        assert state["status"] == "done" and state["error"] is None, state


def test_wait_mode_answers_with_the_verdict_from_a_worker(stack):
    """``?wait=10`` through a real Celery worker: the POST's answer carries the verdict."""
    gil = new_user(stack)
    with client(stack, gil["key"]) as c:
        small = encode(smooth_scene(seed=61, rows=96, cols=96),
                       text={"parameters": SD_PARAMETERS})
        r = c.post("/v1/uploads", params={"wait": 10},
                   files=[("file", ("small.png", small))])
        assert r.status_code == 200, r.text
        (entry,) = r.json()["uploads"]
        assert entry["status"] == "done" and entry["verdict"] == "ai"
        assert 0.5 < entry["ai_probability"] <= 1


def test_metrics_show_the_queues_of_the_broker(stack):
    """An operator's scrape of a cluster's API: the broker's queues, webhooks included."""
    from prometheus_client.parser import text_string_to_metric_families

    from service import accounts

    async def operator_key(engine):
        await accounts.create_user(engine, username="scraper", email="scraper@example.org",
                                   password=None, role="operator")
        key, _ = await accounts.create_key(engine, username="scraper", name="prometheus",
                                           limit=1000, expires_at=None)
        return key

    key = db(stack, operator_key)
    with client(stack) as c:
        r = c.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    queues = {s.labels["queue"]: s.value for f in text_string_to_metric_families(r.text)
              for s in f.samples if s.name == "skygate_queue_depth"}
    assert set(queues) == {"ingest", "detect", "model", "aggregate", "webhooks"}
    assert all(v >= 0 for v in queues.values())
    assert r.headers["ratelimit-limit"] == "1000"
