"""``skygate scan`` on the embedded default: no servers, bad files reported, resumable."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from testkit.images import SD_PARAMETERS, encode, noisy_photo, smooth_scene
from tests.conftest import ROOT, _chromium, run


def skygate(command, *args, data_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    env["SKYGATE_DATA_DIR"] = str(data_dir)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "skygate.cli", command, *map(str, args)],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            check=False)
    return result, time.monotonic() - started


def scan(*args, data_dir):
    return skygate("scan", *args, data_dir=data_dir)


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "in"
    (folder / "nested").mkdir(parents=True)
    (folder / "good.jpg").write_bytes(encode(noisy_photo(seed=1), fmt="JPEG"))
    (folder / "nested" / "render.png").write_bytes(
        encode(smooth_scene(seed=2), text={"parameters": SD_PARAMETERS}))
    corrupt = bytearray(encode(noisy_photo(seed=3), fmt="JPEG"))
    corrupt[300:] = b"\x00" * (len(corrupt) - 300)
    (folder / "corrupt.jpg").write_bytes(bytes(corrupt))
    (folder / "empty.png").write_bytes(b"")
    (folder / "readme.txt").write_text("just text")
    png = encode(noisy_photo(seed=4))
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    return folder


@pytest.mark.slow
def test_scan_judges_good_files_reports_bad_ones_and_resumes(mixed_folder, tmp_path):
    out = tmp_path / "results.jsonl"
    data_dir = tmp_path / "var"
    report = tmp_path / "report.html"
    first, _ = scan(mixed_folder, "--out", out, "--csv", tmp_path / "r.csv",
                    "--workers", "2", "--report", report, data_dir=data_dir)
    assert first.returncode == 1, first.stderr
    records = {os.path.basename(r["path"]): r
               for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == {"good.jpg", "render.png", "corrupt.jpg", "empty.png", "readme.txt",
                            "truncated.png"}
    assert records["good.jpg"]["status"] == "done"
    assert records["render.png"]["is_ai_generated"] is True
    assert records["render.png"]["confidence"] >= 0.95
    for bad, reason in [("empty.png", "empty file"), ("corrupt.jpg", "jpeg"),
                        ("truncated.png", "png")]:
        assert records[bad]["status"] == "failed" and reason in records[bad]["error"], bad
    assert records["readme.txt"] == {**records["readme.txt"], "status": "skipped",
                                     "error": "text file, not an image"}
    assert "failed 3, skipped 1" in first.stdout
    assert (tmp_path / "r.csv").read_text().count("\n") == 7
    page = report.read_text()
    assert all(name in page for name in records)
    assert "data:image/" not in page  # pictures are files beside the page, not inlined
    rows = json.loads(re.search(r"<script type='application/json' id='data'>(.*?)</script>",
                                page, re.S).group(1))
    assert len(rows["rows"]) == 6
    # A thumbnail and a page for each judged image, in the folder beside the page.
    assert len(list((tmp_path / "report_files").glob("*_t.jpg"))) == 2
    assert len(list((tmp_path / "report_files").glob("*.html"))) == 2

    scan(mixed_folder, "--out", out, data_dir=data_dir)
    again = {os.path.basename(r["path"]): r for r in map(json.loads, out.read_text().splitlines())}
    assert again["good.jpg"]["status"] == "duplicate"
    assert again["good.jpg"]["is_ai_generated"] == records["good.jpg"]["is_ai_generated"]
    assert again["corrupt.jpg"]["status"] == "failed"

    # The stored verdicts read back, in each format.
    listed, _ = skygate("results", "--format", "json", data_dir=data_dir)
    stored = {r["path"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert set(stored) == set(records) - {"readme.txt"}  # skipped: never stored
    assert stored["render.png"]["is_ai_generated"] is True
    assert stored["empty.png"]["status"] == "failed" and stored["empty.png"]["error"]
    one, _ = skygate("results", records["good.jpg"]["upload_id"], "--format", "csv",
                     data_dir=data_dir)
    assert one.returncode == 0 and one.stdout.count("\n") == 2 and "good.jpg" in one.stdout
    table, _ = skygate("results", "--since", "2000-01-01", data_dir=data_dir)
    assert "5 upload(s)" in table.stdout and "render.png" in table.stdout
    why, _ = skygate("results", records["render.png"]["upload_id"], data_dir=data_dir)
    assert "verdict: AI  P(AI) 0.9" in why.stdout
    assert "decided by: declared provenance" in why.stdout
    assert "generator chunks: parameters" in why.stdout
    future, _ = skygate("results", "--since", "2999-01-01", "--format", "json",
                        data_dir=data_dir)
    assert future.returncode == 0 and future.stdout == ""
    missing, _ = skygate("results", "99999", data_dir=data_dir)
    assert missing.returncode == 1 and "no upload with id 99999" in missing.stderr


@pytest.fixture
def photo_folder(tmp_path):
    """A photo folder as people have them: pictures, their sidecars, notes, a RAW file and a
    link whose target was deleted."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "IMG_0001.JPG").write_bytes(encode(noisy_photo(seed=8), fmt="JPEG"))
    (folder / "render.png").write_bytes(
        encode(smooth_scene(seed=9), text={"parameters": SD_PARAMETERS}))
    (folder / "IMG_0001.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    (folder / "IMG_0001.AAE").write_text("<?xml version='1.0'?><plist/>")
    (folder / "notes.txt").write_text("holiday, day 2")
    (folder / "IMG_0002.CR2").write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02\x00" + b"\x00" * 64)
    (folder / "gone.jpg").symlink_to(folder / "deleted.jpg")
    return folder


SKIPS = {"IMG_0001.xmp": "XMP sidecar", "IMG_0001.AAE": "Apple Photos edit sidecar",
         "notes.txt": "text file", "IMG_0002.CR2": "camera RAW file",
         "gone.jpg": "dangling link"}


@pytest.mark.slow
def test_a_photo_folder_scans_clean_and_no_store_keeps_nothing(photo_folder, tmp_path):
    import csv

    out, table, report = tmp_path / "o" / "r.jsonl", tmp_path / "o" / "r.csv", \
        tmp_path / "o" / "r.html"
    out.parent.mkdir()
    unused = tmp_path / "unused-data"
    result, _ = scan(photo_folder, "--no-store", "--out", out, "--csv", table, "--report",
                     report, "--workers", "1", data_dir=unused)
    assert result.returncode == 0, result.stdout + result.stderr
    records = {os.path.basename(r["path"]): r for r in map(json.loads,
                                                          out.read_text().splitlines())}
    for name, reason in SKIPS.items():
        assert records[name]["status"] == "skipped", name
        assert records[name]["error"].startswith(reason), records[name]["error"]
        assert "SKIPPED" in next(line for line in result.stdout.splitlines() if name in line)
    assert records["render.png"]["is_ai_generated"] is True
    assert "skipped 5" in result.stdout and "failed 0" in result.stdout
    # The stdout line names the verdict and P(AI).
    line = next(line for line in result.stdout.splitlines() if line.endswith("render.png"))
    assert re.match(r"AI P\(AI\) 0\.\d\d ", line), line
    # The CSV: verdict, P(AI), confidence and summary first; booleans as in JSON.
    with table.open() as fh:
        rows = {os.path.basename(r["path"]): r for r in csv.DictReader(fh)}
    assert list(rows["render.png"])[:6] == ["path", "status", "verdict", "ai_probability",
                                            "confidence", "summary"]
    assert rows["render.png"]["verdict"] == "ai" and rows["render.png"]["is_ai_generated"] == "true"
    assert float(rows["render.png"]["ai_probability"]) >= 0.95
    assert "declared AI provenance" in rows["render.png"]["summary"]
    assert rows["notes.txt"]["verdict"] == "" and rows["notes.txt"]["is_ai_generated"] == ""
    assert "True" not in table.read_text() and "False" not in table.read_text()
    # --no-store: only the outputs asked for; no data folder, no leftover temporary store.
    assert not unused.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.csv", "r.html", "r.jsonl",
                                                            "r_files"]
    assert "nothing kept (--no-store)" in result.stderr


def test_data_dir_option_names_the_store(photo_folder, tmp_path):
    for name in ("IMG_0001.JPG", "render.png"):
        (photo_folder / name).unlink()
    chosen = tmp_path / "chosen"
    result, _ = scan(photo_folder, "--data-dir", chosen, data_dir=tmp_path / "env-data")
    assert result.returncode == 0, result.stderr
    assert f"store: {chosen}" in result.stderr and (chosen / "skygate.db").is_file()
    assert not (tmp_path / "env-data").exists()


def test_scan_usage_errors_exit_2(tmp_path):
    result, _ = scan(tmp_path / "missing", data_dir=tmp_path)
    assert result.returncode == 2 and "no such file" in result.stderr


def test_poison_image_is_failed_after_the_delivery_cap(tmp_path):
    """An upload whose prepare was delivered past the cap ends failed, not in a loop."""
    from schemas.settings import Settings
    from service import detection, ingest
    from storage import migrate, repository
    from storage.context import open_storage

    settings = Settings(data_dir=tmp_path, max_deliveries=2)

    async def go():
        async with open_storage(settings) as storage:
            await migrate.upgrade(storage.engine)
            outcome = await ingest.ingest_bytes(storage, settings, data=encode(noisy_photo()),
                                               original_file_name="p.png", user_id=None)
            # Two deliveries already started and never finished (the worker died).
            await repository.start_processing(storage.engine, outcome.upload_id)
            await repository.start_processing(storage.engine, outcome.upload_id)
            key, _ = await detection.prepare(storage, settings, outcome.upload_id)
            return key, await repository.get_upload(storage.engine, outcome.upload_id)

    key, upload = run(go())
    assert key is None
    assert upload["status"] == "failed" and "poison" in upload["error"]


def _rendered_dom(exe: str, url: str, profile) -> str:
    """The DOM after the page's scripts ran, as headless Chromium sees it."""
    result = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class _Cards:
    """Collects each report card: its name, verdict and whether it is displayed."""

    def __init__(self, dom: str):
        from html.parser import HTMLParser

        self.cards: list[dict] = []
        self.body: dict = {}
        outer = self

        class Parser(HTMLParser):
            def handle_starttag(self, tag, attrs):
                a = dict(attrs)
                if tag == "body":
                    outer.body = a
                if "card" in (a.get("class") or "").split():
                    outer.cards.append({"name": a["data-name"], "verdict": a["data-verdict"],
                                        "hidden": "none" in (a.get("style") or "")})

        Parser().feed(dom)


@pytest.mark.slow
def test_report_renders_every_image_and_verdict_in_headless_chromium(tmp_path):
    exe = _chromium()
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(encode(noisy_photo(seed=5), fmt="JPEG"))
    (folder / "render.png").write_bytes(
        encode(smooth_scene(seed=6), text={"parameters": SD_PARAMETERS}))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out, report = tmp_path / "r.jsonl", tmp_path / "report.html"
    result, _ = scan(folder, "--out", out, "--report", report, "--workers", "1",
                     data_dir=tmp_path / "var")
    assert result.returncode == 1, result.stderr
    records = {os.path.basename(r["path"]): r
               for r in map(json.loads, out.read_text().splitlines())}

    dom = _rendered_dom(exe, report.as_uri(), tmp_path / "profile")
    page = _Cards(dom)
    shown = {os.path.basename(c["name"]): c for c in page.cards}
    assert set(shown) == set(records)
    words = {True: "AI", False: "Real", None: "Uncertain"}
    for name, rec in records.items():
        expected = "failed" if rec["status"] == "failed" else words[rec["is_ai_generated"]]
        assert shown[name]["verdict"] == expected and not shown[name]["hidden"], name
    # Every thumbnail (one per judged image; the rest is on each image's page) decoded.
    assert page.body["data-pictures-total"] == "2"
    assert page.body["data-pictures-shown"] == "2"
    assert "3 of 3 shown" in dom

    # The filter, driven by the link's hash, hides everything but the AI verdicts.
    filtered = _Cards(_rendered_dom(exe, report.as_uri() + "#filter=AI", tmp_path / "profile"))
    visible = {os.path.basename(c["name"]) for c in filtered.cards if not c["hidden"]}
    assert visible == {n for n, r in records.items() if r["is_ai_generated"] is True}
    assert "render.png" in visible


@pytest.mark.slow
def test_ctrl_c_stops_the_scan_and_a_rerun_finishes_only_what_is_missing(tmp_path):
    import signal

    # Enough files that the scan is still running when the signal comes, even when this
    # process is kept off the CPU for a while between its poll and the signal (an image costs
    # ≈ 0.1 s of CPU since the evidence waits for a request: 24 files could all finish first).
    files = 64
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(files):
        (folder / f"p{i:02d}.jpg").write_bytes(
            encode(noisy_photo(rows=1024, cols=1024, seed=100 + i), fmt="JPEG"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    env["SKYGATE_DATA_DIR"] = str(tmp_path / "var")
    first_out = tmp_path / "first.jsonl"
    # A child inherits an ignored SIGINT (Python then installs no KeyboardInterrupt), and a
    # test runner's process may have one: the scan gets the handler a terminal's shell gives.
    launch = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
              " sys.argv[0] = 'skygate'; runpy.run_module('skygate.cli', run_name='__main__')")
    proc = subprocess.Popen(
        [sys.executable, "-c", launch, "scan", str(folder), "--out", str(first_out),
         "--workers", "2"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    from tests.conftest import wait_for

    wait_for(lambda: first_out.exists() and len(first_out.read_text().splitlines()) >= 2, 120,
             "first results written")
    # What a terminal's Ctrl-C does: SIGINT to the whole process group.
    finished_before = proc.poll() is not None
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (f"exit {proc.returncode}; scan had already ended before "
                                    f"the signal: {finished_before}; {err}")
    assert "run the same command again" in err
    first = [json.loads(line) for line in first_out.read_text().splitlines()]
    assert 2 <= len(first) < files

    second, _ = scan(folder, "--out", tmp_path / "second.jsonl", data_dir=tmp_path / "var")
    assert second.returncode == 0, second.stderr
    again = {os.path.basename(r["path"]): r for r in
             map(json.loads, (tmp_path / "second.jsonl").read_text().splitlines())}
    assert len(again) == files and all(r["status"] in ("done", "duplicate") for r in again.values())
    assert all(r["confidence"] is not None for r in again.values())
    for record in first:
        assert again[os.path.basename(record["path"])]["status"] == "duplicate"
    # Nothing was stored twice.
    assert len({r["upload_id"] for r in again.values()}) == files
