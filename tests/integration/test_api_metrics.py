"""``GET /metrics`` of the API (operator role; X-API-Key or a bearer token, as Prometheus
sends it) and the ``RateLimit-*`` headers on every answer to a key with a quota, in process
on the embedded default (SQLite)."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.images import SD_PARAMETERS, encode, smooth_scene
from tests.conftest import module_settings, run
from tests.inprocess import api, new_user

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module", params=["embedded"])
def settings(request, tmp_path_factory):
    yield from module_settings(request, tmp_path_factory, "metrics", mongo=False)


async def key_of(storage, role: str, limit: int = 10_000) -> str:
    from service import accounts

    name = f"{role}{uuid.uuid4().hex[:6]}"
    await accounts.create_user(storage.engine, username=name, email=f"{name}@example.org",
                               password=None, role=role)
    key, _ = await accounts.create_key(storage.engine, username=name, name="m", limit=limit,
                                       expires_at=None)
    return key


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_requests_uploads_verdicts_and_deliveries(settings):
    async def go():
        async with api(settings) as (client, storage):
            member = await new_user(storage)
            png = encode(smooth_scene(seed=81, rows=96, cols=96),
                         text={"parameters": SD_PARAMETERS})
            r = await client.post("/v1/uploads", params={"wait": 10}, headers=member["headers"],
                                  files=[("file", ("a.png", png)), ("file", ("b.txt", b"no"))])
            assert r.status_code == 207, r.text
            assert (await client.get("/v1/uploads/999999", headers=member["headers"])
                    ).status_code == 404

            assert (await client.get("/metrics")).status_code == 401
            denied = await client.get("/metrics", headers=member["headers"])
            assert (denied.status_code, denied.json()["code"]) == (403, "forbidden")
            operator = await key_of(storage, "operator")
            page = await client.get("/metrics", headers={"Authorization": f"Bearer {operator}"})
            assert page.status_code == 200 and page.headers["content-type"].startswith(
                "text/plain")
            found = samples(page.text)

            def value(name, **labels):
                return found.get((name, tuple(sorted(labels.items()))))

            assert value("skygate_http_requests_total", route="/v1/uploads", method="POST",
                         status="207") == 1
            assert value("skygate_http_requests_total", route="/v1/uploads/{upload_id}",
                         method="GET", status="404") == 1
            assert value("skygate_http_request_duration_seconds_count", route="/v1/uploads",
                         method="POST") == 1
            assert value("skygate_uploads_accepted_total", status="done") == 1
            assert value("skygate_uploads_accepted_total", status="refused") == 1
            assert value("skygate_verdicts", verdict="ai") == 1
            assert value("skygate_webhook_deliveries", status="pending") == 0
            with_key = await client.get("/metrics", headers={"X-API-Key": operator})
            assert with_key.status_code == 200

    run(go())


def test_rate_limit_headers_on_every_answer_of_a_key_with_a_quota(settings):
    async def go():
        async with api(settings) as (client, storage):
            key = await key_of(storage, "member", limit=3)
            head = {"X-API-Key": key}
            seen = []
            for _ in range(3):
                r = await client.get("/v1/uploads", headers=head)
                assert r.status_code == 200
                seen.append(r.headers)
            assert [h["ratelimit-remaining"] for h in seen] == ["2", "1", "0"]
            assert all(h["ratelimit-limit"] == "3" for h in seen)
            assert all(0 < int(h["ratelimit-reset"]) <= settings.quota_period_seconds
                       for h in seen)
            assert seen[0]["ratelimit-policy"] == f"3;w={settings.quota_period_seconds}"
            over = await client.get("/v1/uploads/1", headers=head)
            assert over.status_code == 429
            assert over.headers["ratelimit-remaining"] == "0"
            assert int(over.headers["ratelimit-reset"]) == int(over.headers["retry-after"])
            # Without a key there is no quota to show.
            assert "ratelimit-limit" not in (await client.get("/v1/uploads")).headers

    run(go())
