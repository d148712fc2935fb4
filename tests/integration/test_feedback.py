"""Feedback (``POST/GET /v1/uploads/{id}/feedback``, storage/feedback.py, migration 0011) and
``skygate feedback export`` read back by ``skygate eval --labels`` and the training corpus:
on real PostgreSQL + the Mongo wire server and on the embedded default (SQLite)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from testkit.images import SD_PARAMETERS, encode, noisy_photo, smooth_scene
from tests.conftest import ROOT, module_settings, run
from tests.inprocess import api, new_user

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module", params=["postgres", "embedded"])
def settings(request, tmp_path_factory):
    """A migrated database of this module: PostgreSQL with Mongo documents, or SQLite."""
    yield from module_settings(request, tmp_path_factory, "feedback", mongo=True)


def env_of(settings) -> dict:
    """The SKYGATE_* variables that point a ``skygate`` subprocess at these stores."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    env["SKYGATE_DATA_DIR"] = str(settings.data_dir)
    if settings.database_url:
        env["SKYGATE_DATABASE_URL"] = settings.database_url
    if settings.mongo_url:
        env["SKYGATE_MONGO_URL"] = settings.mongo_url
    return env


def skygate(*args, env, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "skygate.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600, check=False)


def photo(seed: int) -> bytes:
    return encode(noisy_photo(seed=seed, rows=96, cols=96), fmt="JPEG")


def render(seed: int) -> bytes:
    """Declared provenance (SD parameters): the model calls it AI."""
    return encode(smooth_scene(seed=seed, rows=96, cols=96), text={"parameters": SD_PARAMETERS})


async def stored_upload(storage, settings, user_id: int, data: bytes, *, name="p.jpg",
                        judged=True) -> int:
    """One upload, run through the embedded pipeline to done unless ``judged`` is false."""
    from service import detection, ingest

    outcome = await ingest.ingest_bytes(storage, settings, data=data, original_file_name=name,
                                        user_id=user_id)
    if judged:
        await detection.run_all(storage, settings, outcome.upload_id)
    return outcome.upload_id


async def feedback_rows(storage, upload_id: int) -> int:
    async with storage.engine.connect() as conn:
        return (await conn.execute(sa.text("SELECT count(*) FROM feedback WHERE upload_id = :u"),
                                   {"u": upload_id})).scalar_one()


def test_owner_gives_feedback_replaces_it_and_reads_it_back(settings):
    from storage import repository as repo

    async def go():
        async with api(settings) as (client, storage):
            alice = await new_user(storage)
            upload_id = await stored_upload(storage, settings, alice["user_id"], render(1))
            url = f"/v1/uploads/{upload_id}/feedback"
            assert (await client.get(url, headers=alice["headers"])).json()["code"] == \
                "feedback_not_found"

            first = await client.post(url, headers=alice["headers"],
                                      json={"label": "real", "note": "my own photo"})
            assert first.status_code == 201, first.text
            body = first.json()
            result = await repo.result_for_upload(storage.engine, upload_id)
            assert body["upload_id"] == upload_id and body["label"] == "real"
            assert body["note"] == "my own photo"
            # What the model said at that moment, kept with the feedback.
            assert body["verdict"] == "ai" and result["is_ai_generated"] is True
            assert 0.5 < body["ai_probability"] <= 1

            second = await client.post(url, headers=alice["headers"], json={"label": "ai"})
            assert second.status_code == 201, second.text
            replaced = second.json()
            assert replaced["label"] == "ai" and replaced["note"] is None
            assert replaced["created_at"] == body["created_at"]
            assert replaced["updated_at"] >= body["updated_at"]
            assert await feedback_rows(storage, upload_id) == 1

            read = await client.get(url, headers=alice["headers"])
            assert read.status_code == 200 and read.json() == replaced

            # Before detection: the feedback is kept, the model's side is empty.
            early = await stored_upload(storage, settings, alice["user_id"], photo(2),
                                        judged=False)
            r = await client.post(f"/v1/uploads/{early}/feedback", headers=alice["headers"],
                                  json={"label": "real"})
            assert r.status_code == 201, r.text
            assert r.json()["verdict"] is None and r.json()["ai_probability"] is None

    run(go())


def test_another_users_upload_and_unknown_ids_are_404_like_the_other_routes(settings):
    async def go():
        async with api(settings) as (client, storage):
            alice, bob = await new_user(storage), await new_user(storage)
            upload_id = await stored_upload(storage, settings, alice["user_id"], photo(3),
                                            judged=False)
            url = f"/v1/uploads/{upload_id}/feedback"
            like = await client.get(f"/v1/uploads/{upload_id}", headers=bob["headers"])
            assert like.status_code == 404
            for r in (await client.post(url, headers=bob["headers"], json={"label": "ai"}),
                      await client.get(url, headers=bob["headers"])):
                assert r.status_code == 404
                assert r.json() == {**like.json(), "message": r.json()["message"]}
            assert await feedback_rows(storage, upload_id) == 0
            for unknown in (999_999, 2_147_483_647):
                r = await client.post(f"/v1/uploads/{unknown}/feedback",
                                      headers=alice["headers"], json={"label": "ai"})
                assert r.status_code == 404, r.text
                assert r.json()["code"] == like.json()["code"]
            no_key = await client.post(url, json={"label": "ai"})
            assert no_key.status_code == 401

    run(go())


@pytest.mark.parametrize(("body", "where"), [
    ({"label": "maybe"}, "body.label"),
    ({"label": "AI "}, "body.label"),
    ({"note": "no label"}, "body.label"),
    ({"label": "ai", "note": "x" * 1001}, "body.note"),
    ({"label": "ai", "note": 5}, "body.note"),
])
def test_bad_bodies_get_422_with_the_standard_error_body(settings, body, where):
    async def go():
        async with api(settings) as (client, storage):
            alice = await new_user(storage)
            upload_id = await stored_upload(storage, settings, alice["user_id"], photo(4),
                                            judged=False)
            r = await client.post(f"/v1/uploads/{upload_id}/feedback",
                                  headers=alice["headers"], json=body)
            assert r.status_code == 422, r.text
            error = r.json()
            assert error["code"] == "invalid_request"
            assert error["message"].startswith(where)
            assert error["details"] and {"loc", "msg", "type"} <= set(error["details"][0])
            assert await feedback_rows(storage, upload_id) == 0

    run(go())


def test_a_note_is_stored_as_text_and_goes_with_its_upload(settings):
    async def go():
        async with api(settings) as (client, storage):
            alice = await new_user(storage)
            upload_id = await stored_upload(storage, settings, alice["user_id"], photo(5),
                                            judged=False)
            url = f"/v1/uploads/{upload_id}/feedback"
            note = "<script>alert(1)</script>\x00\x07 =HYPERLINK(\"x\") ünïcode\nline 2"
            r = await client.post(url, headers=alice["headers"],
                                  json={"label": "real", "note": note})
            assert r.status_code == 201, r.text
            assert r.headers["content-type"].startswith("application/json")
            assert r.json()["note"] == note.replace("\x00", "").replace("\x07", "")
            # A lone surrogate is valid JSON but no text: 422, never a 500 from the database.
            r = await client.post(url, headers={**alice["headers"],
                                                "content-type": "application/json"},
                                  content=b'{"label": "real", "note": "a\\ud800b"}')
            assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text
            gone = await client.delete(f"/v1/uploads/{upload_id}", headers=alice["headers"])
            assert gone.status_code == 204
            assert await feedback_rows(storage, upload_id) == 0

    run(go())


def test_openapi_documents_the_feedback_routes(settings):
    async def go():
        async with api(settings) as (client, _):
            return (await client.get("/openapi.json")).json()

    spec = run(go())
    path = spec["paths"]["/v1/uploads/{upload_id}/feedback"]
    assert set(path["post"]["responses"]) >= {"201", "401", "404", "422", "429"}
    assert set(path["get"]["responses"]) >= {"200", "401", "404", "429"}
    body = path["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][body.rsplit("/", 1)[1]]
    assert schema["properties"]["label"]["enum"] == ["ai", "real"]
    assert schema["properties"]["note"]["anyOf"][0]["maxLength"] == 1000


def test_export_is_a_labelled_set_that_eval_and_training_read(settings, tmp_path):
    """Feedback on five images (one the model got wrong, one labelled before detection, one
    image two users label differently), exported, then run by `skygate eval --labels`."""
    async def seed():
        async with api(settings) as (client, storage):
            alice, bob = await new_user(storage), await new_user(storage)

            async def label(who, upload_id, value, note=None):
                r = await client.post(f"/v1/uploads/{upload_id}/feedback",
                                      headers=who["headers"], json={"label": value,
                                                                    "note": note})
                assert r.status_code == 201, r.text

            ai_right = await stored_upload(storage, settings, alice["user_id"], render(10),
                                           name="r.png")
            ai_wrong = await stored_upload(storage, settings, alice["user_id"], render(11),
                                           name="w.png")
            real = await stored_upload(storage, settings, alice["user_id"], photo(12))
            early = await stored_upload(storage, settings, alice["user_id"], photo(13),
                                        judged=False)
            shared = photo(14)
            mine = await stored_upload(storage, settings, alice["user_id"], shared)
            theirs = await stored_upload(storage, settings, bob["user_id"], shared)
            await label(alice, ai_right, "ai")
            await label(alice, ai_wrong, "real", note="=cmd|' /C calc'!A0")
            await label(alice, real, "real")
            await label(alice, early, "ai")
            await label(alice, mine, "real")
            await label(bob, theirs, "ai")
            return {"ai_right": ai_right, "ai_wrong": ai_wrong, "real": real, "early": early}

    start = datetime.now(UTC).isoformat()  # the module's other tests gave feedback before
    ids = run(seed())
    env = env_of(settings)
    out = tmp_path / "set" / "feedback.csv"
    done = skygate("feedback", "export", "--out", str(out), "--since", start, env=env)
    assert done.returncode == 0, done.stderr
    assert "4 labelled image(s)" in done.stdout and "2 ai, 2 real" in done.stdout
    assert "1 not judged" in done.stdout
    assert "1 image(s) left out: users gave different labels" in done.stdout

    rows = list(csv.DictReader(out.read_text(encoding="utf-8").splitlines()))
    # The real detector judged the generated photo: decided (real) or uncertain, either way
    # the summary counts it as such, and only w.png is wrong.
    decided = sum(r["verdict"] in ("ai", "real") for r in rows)
    assert decided in (2, 3)
    assert f"wrong on 1 of the {decided} it decided" in done.stdout
    assert {int(r["upload_id"]) for r in rows} == set(ids.values())
    by_id = {int(r["upload_id"]): r for r in rows}
    assert by_id[ids["ai_wrong"]]["model_wrong"] == "true"
    assert by_id[ids["ai_wrong"]]["verdict"] == "ai"
    assert by_id[ids["ai_wrong"]]["note"].startswith("'=cmd")  # no formula in a spreadsheet
    assert by_id[ids["ai_right"]]["model_wrong"] == "false"
    assert by_id[ids["early"]]["verdict"] == "" and by_id[ids["early"]]["model_wrong"] == ""
    for r in rows:
        image = out.parent / r["path"]
        assert r["path"] == f"images/{r['sha256']}{image.suffix}" and image.is_file()
        assert r["group"] == r["label"] and r["source"] == "feedback"

    since = skygate("feedback", "export", "--out", str(tmp_path / "later" / "f.jsonl"),
                    "--since", "2999-01-01", env=env)
    assert since.returncode == 0, since.stderr
    assert "0 labelled image(s)" in since.stdout
    jsonl = tmp_path / "j" / "feedback.jsonl"
    assert skygate("feedback", "export", "--out", str(jsonl), "--since", start,
                   env=env).returncode == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted(line["upload_id"] for line in lines) == sorted(ids.values())
    assert {line["model_wrong"] for line in lines} == {True, False, None}

    # The training corpus reads both forms, paths resolved beside the file.
    sys.path.insert(0, str(ROOT))
    from scripts.training.corpus import load_labels

    for labels in (out, jsonl):
        corpus = load_labels(labels)
        assert len(corpus) == 4 and all(row.path.is_file() for row in corpus)
        assert sorted(row.label for row in corpus) == [0, 0, 1, 1]
        assert {row.source for row in corpus} == {"feedback"}

    # `skygate eval --labels` reads every row (on a database of its own).
    eval_env = {k: v for k, v in env.items() if not k.startswith("SKYGATE_")}
    eval_env["SKYGATE_DATA_DIR"] = str(tmp_path / "eval_data")
    judged = skygate("eval", "--labels", str(out), "--json", "--workers", "1", env=eval_env,
                     cwd=tmp_path)
    assert judged.returncode == 0, judged.stderr
    report = json.loads(judged.stdout)
    assert report["overall"]["files"] == 4 and report["overall"]["judged"] == 4
    assert report["overall"]["ai_files"] == 2 and report["overall"]["real_files"] == 2
    assert set(report["groups"]) == {"ai", "real"}
    assert {Path(f["path"]).name for f in report["files"]} == \
        {Path(r["path"]).name for r in rows}
