"""Issue 12, data loss and leaks: deletes of shared blobs and of uploads in flight, hostile
file names, NUL-padded camera tags, a failed insert or aggregate, the same bytes five times;
and ``skygate blobs gc`` removing only old unreferenced blobs. Each test asserts the status
code, the body's error code and what is (not) left in the database, the documents and the
blob store afterwards.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from testkit.images import encode, noisy_photo, smooth_scene
from tests.conftest import corpus_dir, run, wait_for
from tests.integration.api_hostile.conftest import blob_path, doc_for, orphans
from tests.integration.conftest import client, new_user, sql, upload, wait_done

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def with_text_chunk(png: bytes, key: bytes, value: bytes) -> bytes:
    """The same PNG with one more tEXt chunk before IEND: other bytes, same pixels."""
    import struct
    import zlib

    body = key + b"\x00" + value
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(
        ">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF)
    end = png.rindex(b"IEND") - 4
    return png[:end] + chunk + png[end:]


def multipart_body(parts: list[tuple[bytes, bytes]], boundary=b"b0undary") -> tuple[bytes, dict]:
    """A multipart body built by hand, so a filename can carry any byte."""
    out = b""
    for filename, data in parts:
        out += (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; "
                b"filename=\"" + filename + b"\"\r\nContent-Type: application/octet-stream"
                b"\r\n\r\n" + data + b"\r\n")
    out += b"--" + boundary + b"--\r\n"
    return out, {"Content-Type": "multipart/form-data; boundary=" + boundary.decode()}


# --- data loss and leaks -------------------------------------------------------------------


def test_delete_keeps_the_blobs_another_users_upload_shares(stack):
    """Bob's file has other bytes (one more tEXt chunk) but the same pixels as Alice's: the
    caches, thumbnail, ELA image and heatmap are the same blobs. Alice's DELETE leaves Bob's
    upload whole; Bob's DELETE then removes the rest."""
    alice, bob = new_user(stack), new_user(stack)
    png = encode(noisy_photo(seed=1201, rows=320, cols=320))
    bobs = with_text_chunk(png, b"Comment", b"mine now")
    assert bobs != png
    with client(stack, alice["key"]) as a, client(stack, bob["key"]) as b:
        a_id = upload(a, ("A.png", png)).json()["uploads"][0]["upload_id"]
        b_id = upload(b, ("A.png", bobs)).json()["uploads"][0]["upload_id"]
        assert wait_done(a, a_id)["status"] == "done"
        assert wait_done(b, b_id)["status"] == "done"
        # The ELA image and the forensic heatmap are made on their first request.
        for who, uid in ((a, a_id), (b, b_id)):
            assert "ela" not in doc_for(stack, uid)["blob_keys"]
            urls = who.get(f"/v1/uploads/{uid}/result").json()
            assert all(who.get(urls[f"{p}_url"]).status_code == 200 for p in ("ela", "heatmap"))
        a_keys = doc_for(stack, a_id)["blob_keys"]
        b_keys = doc_for(stack, b_id)["blob_keys"]
        shared = set(a_keys.values()) & set(b_keys.values())
        # The premise: the derived blobs really are shared.
        assert {a_keys[k] for k in ("thumbnail", "ela", "heatmap")} <= shared
        # The canvas's intermediates (pixels, manifest) were released by aggregate.
        assert not {"native_pixels", "neutral_pixels", "manifest"} & set(a_keys)

        assert a.delete(f"/v1/uploads/{a_id}").status_code == 204
        assert all(blob_path(stack, k).exists() for k in b_keys.values()), b_keys
        assert not blob_path(stack, a_keys["original"]).exists()
        result = b.get(f"/v1/uploads/{b_id}/result")
        assert result.status_code == 200
        for picture in ("ela", "heatmap"):
            r = b.get(result.json()[f"{picture}_url"])
            assert r.status_code == 200 and r.content.startswith(b"\x89PNG"), picture
        assert sql(stack, "SELECT count(*) FROM blob_refs WHERE upload_id=:u", u=a_id)[0][0] == 0
        assert sql(stack, "SELECT count(*) FROM blob_refs WHERE upload_id=:u",
                   u=b_id)[0][0] == len(set(b_keys.values()))

        assert b.delete(f"/v1/uploads/{b_id}").status_code == 204
        assert not any(blob_path(stack, k).exists() for k in {*a_keys.values(),
                                                               *b_keys.values()})
        assert doc_for(stack, b_id) is None
    assert orphans(stack) == []


def test_delete_while_processing_wins_and_leaves_nothing(stack):
    carol = new_user(stack)
    big = encode(noisy_photo(seed=1202, rows=1400, cols=1400))
    with client(stack, carol["key"]) as c:
        upload_id = upload(c, ("busy.png", big)).json()["uploads"][0]["upload_id"]
        wait_for(lambda: c.get(f"/v1/uploads/{upload_id}").json()["status"] == "processing",
                 60, "processing started")
        r = c.delete(f"/v1/uploads/{upload_id}")
        assert r.status_code == 204, r.text
        assert c.get(f"/v1/uploads/{upload_id}").json()["code"] == "upload_not_found"
        # The in-flight canvas notices, stops and cleans up after itself.
        # (prepare's or aggregate's last word on it: the task lines no longer log return values)
        settled = re.compile(rf"upload {upload_id} was deleted (before it was prepared|while "
                             rf"it was prepared|during detection; )")
        wait_for(lambda: settled.search(stack["log"].read_text()), 120,
                 "the canvas noticed the delete", log=stack["log"])
    for table in ("uploads", "blob_refs", "detection_results"):
        query = f"SELECT count(*) FROM {table} WHERE upload_id=:u"  # noqa: S608 - names above
        (n,) = sql(stack, query, u=upload_id)[0]
        assert n == 0, table
    assert doc_for(stack, upload_id) is None
    assert orphans(stack) == []


def test_nul_and_control_characters_in_file_names_are_removed(stack):
    dave = new_user(stack)
    png = encode(noisy_photo(seed=1203, rows=64, cols=64))
    long_name = b"x" * 400 + b".png"
    body, headers = multipart_body([(b"evil\x00name\x07.png", png),
                                    (b"../../etc/" + long_name, encode(smooth_scene(seed=1203)))])
    with client(stack, dave["key"]) as c:
        r = c.post("/v1/uploads", content=body, headers=headers)
        assert r.status_code == 202, r.text
        names = [u["file_name"] for u in r.json()["uploads"]]
        assert names[0] == "evilname.png"
        assert len(names[1]) == 255 and names[1].endswith(".png") and "/" not in names[1]
        for u in r.json()["uploads"]:
            wait_done(c, u["upload_id"])
    rows = sql(stack, "SELECT original_file_name FROM uploads u JOIN users s USING (user_id) "
                      "WHERE s.username=:n ORDER BY upload_id", n=dave["name"])
    assert [row[0] for row in rows] == names
    assert orphans(stack) == []


def test_a_failed_insert_leaves_no_blob(tmp_path, monkeypatch):
    """Whatever fails after a file was streamed in, no unreferenced file stays behind."""
    from schemas.settings import Settings
    from service import ingest
    from storage import migrate, repository
    from storage.context import open_storage

    settings = Settings(data_dir=tmp_path)

    async def boom(*args, **kwargs):
        raise RuntimeError("insert refused")

    async def go():
        async with open_storage(settings) as storage:
            await migrate.upgrade(storage.engine)
            monkeypatch.setattr(repository, "create_upload", boom)
            with pytest.raises(RuntimeError):
                await ingest.ingest_bytes(storage, settings, data=encode(noisy_photo(seed=3)),
                                         original_file_name="x.png", user_id=None)
            return list(storage.blobs.keys())

    assert run(go()) == []


def _real_nul_padded_files() -> list:
    folder = corpus_dir("real")
    names = ["drewnoakes__metadata-extractor-i__jpg_HTC_One.jpg",       # NUL-padded Make/Model
             "drewnoakes__metadata-extractor-i__jpg_Sony_Mavica.jpg",   # 'MAVICA\0' + garbage
             "drewnoakes__metadata-extractor-i__jpg_Trust_PowerCam_Zoom_LCD_710.jpg"]
    files = [folder / n for n in names if (folder / n).exists()]
    if not files:
        pytest.skip("no NUL-padded camera files in the corpus")
    return files


def test_nul_padded_camera_tags_get_a_verdict_on_postgresql(stack):
    """A GoPro HD2 writes Make 'GoPro\\0\\0…' and Model 'HD2\\0\\x04…'; real cameras in the
    corpus pad the same way. Each gets a verdict on PostgreSQL with the tags cut at the NUL."""
    erin = new_user(stack)
    gopro = encode(noisy_photo(seed=1204), fmt="JPEG",
                   exif={271: "GoPro\x00\x00\x05\x7fjunk", 272: "HD2\x00\x04\x01\x02xyz",
                         305: "HD2.08.12.198.47.00\x00\x00"})
    files = [("gopro.jpg", gopro)] + [(p.name, p.read_bytes()) for p in _real_nul_padded_files()]
    with client(stack, erin["key"]) as c:
        ids = {}
        for name, data in files:
            r = upload(c, (name, data))
            assert r.status_code == 202, r.text
            ids[name] = r.json()["uploads"][0]["upload_id"]
        for name, upload_id in ids.items():
            state = wait_done(c, upload_id)
            assert state["status"] == "done", (name, state)
            result = c.get(f"/v1/uploads/{upload_id}/result").json()
            assert result["methods"]["exif"]["status"] == "ok", name
            exif = result["metadata"]["exif_data"]
            for value in (exif["camera_make"], exif["camera_model"], exif["software"]):
                assert value is None or not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", value)
        gopro_exif = c.get(f"/v1/uploads/{ids['gopro.jpg']}/result").json()["metadata"][
            "exif_data"]
        assert (gopro_exif["camera_make"], gopro_exif["camera_model"]) == ("GoPro", "HD2")
    (details,) = sql(stack, "SELECT m.result_details FROM method_results m JOIN "
                            "detection_results r USING (result_id) JOIN detection_methods d "
                            "USING (method_id) WHERE r.upload_id=:u AND d.method_name='exif'",
                     u=ids["gopro.jpg"])[0]
    assert details["camera_make"] == "GoPro" and details["camera_model"] == "HD2"


def test_a_failed_aggregate_names_its_error_not_a_lost_task(stack, monkeypatch):
    """The upload's failure reason is the aggregate's own error; the chord's error path that
    runs after it does not replace it with a guess."""
    from service.runtime import process_loop
    from workers import tasks

    (user_id,) = sql(stack, "INSERT INTO users (username, email, password_hash) VALUES "
                            "('agg', 'agg@example.org', 'x') RETURNING user_id")[0]
    (upload_id,) = sql(stack, "INSERT INTO uploads (user_id, file_name, original_file_name, "
                              "file_path, file_size, file_type, mime_type, sha256, status) "
                              "VALUES (:u, 'a', 'a.png', 'aa/bb/a.png', 1, 'png', 'image/png', "
                              "'ab', 'processing') RETURNING upload_id", u=user_id)[0]
    for key, value in stack["env"].items():
        if key.startswith("SKYGATE_"):
            monkeypatch.setenv(key, value)
    from service import aggregate as aggregate_step

    async def unreadable(storage, upload_id, manifest_key):
        raise ValueError(f"manifest {manifest_key} is not JSON")

    # A manifest that cannot be read (a missing one means a superseded canvas: a no-op).
    monkeypatch.setattr(aggregate_step, "_manifest_or_outcome", unreadable)
    process_loop.shutdown()
    try:
        with pytest.raises(ValueError, match="no/such/manifest"):
            tasks.aggregate.run([], upload_id, "no/such/manifest.json")
        tasks.upload_failed.run(upload_id)
    finally:
        process_loop.shutdown()
    (status, error) = sql(stack, "SELECT status, error FROM uploads WHERE upload_id=:u",
                          u=upload_id)[0]
    assert status == "failed"
    assert error.startswith("aggregate failed: ValueError") and "no/such/manifest" in error


def test_the_same_bytes_five_times_in_one_post_run_once(stack):
    frank = new_user(stack)
    png = encode(noisy_photo(seed=1205, rows=128, cols=128))
    with client(stack, frank["key"]) as c:
        r = upload(c, *[(f"same{i}.png", png) for i in range(5)])
        assert r.status_code == 202, r.text
        uploads = r.json()["uploads"]
        assert len({u["upload_id"] for u in uploads}) == 1
        assert [u["status"] for u in uploads] == ["queued"] + ["duplicate"] * 4
        upload_id = uploads[0]["upload_id"]
        assert wait_done(c, upload_id)["status"] == "done"
        again = upload(c, ("later.png", png)).json()["uploads"][0]
        assert (again["upload_id"], again["status"]) == (upload_id, "duplicate")
    (count, status) = sql(stack, "SELECT delivery_count, status FROM uploads WHERE upload_id=:u",
                          u=upload_id)[0]
    assert (count, status) == (1, "done")
    assert orphans(stack) == []


# --- garbage collection ----------------------------------------------------------------------


def test_blobs_gc_removes_only_old_unreferenced_blobs(stack):
    import json
    import os
    import sys

    from tests.conftest import ROOT

    nina = new_user(stack)
    with client(stack, nina["key"]) as c:
        upload_id = upload(c, ("kept.png", encode(noisy_photo(seed=1210, rows=96, cols=96)))
                           ).json()["uploads"][0]["upload_id"]
        assert wait_done(c, upload_id)["status"] == "done"
    kept = set(doc_for(stack, upload_id)["blob_keys"].values())
    root = stack["data_dir"] / "blobs"
    old_orphan, young_orphan, old_staged = (root / "ee/ee/orphan.npy", root / "ee/ef/young.npy",
                                            root / ".staging/up-abandoned")
    for path, size in ((old_orphan, 3000), (young_orphan, 500), (old_staged, 700)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00" * size)
    hour_ago = time.time() - 7200
    for path in (old_orphan, old_staged, *(root / k for k in kept)):
        os.utime(path, (hour_ago, hour_ago))

    def gc(*args):
        out = subprocess.run([sys.executable, "-m", "skygate.cli", "blobs", "gc", "--json",
                              *args], env=stack["env"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    dry = gc("--dry-run")
    assert set(dry["keys"]) == {"ee/ee/orphan.npy", ".staging/up-abandoned"}
    assert dry["bytes"] == 3700 and old_orphan.exists()
    done = gc()
    assert done["bytes"] == 3700 and done["removed"] == 2
    assert not old_orphan.exists() and not old_staged.exists()
    assert young_orphan.exists()  # inside the grace period: maybe in flight
    assert all((root / k).exists() for k in kept)
    with client(stack, nina["key"]) as c:
        assert c.get(f"/v1/uploads/{upload_id}/ela.png").status_code == 200
    young_orphan.unlink()
    text = subprocess.run([sys.executable, "-m", "skygate.cli", "blobs", "gc", "--dry-run"],
                          env=stack["env"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False).stdout
    assert "would free 0 bytes" in text
