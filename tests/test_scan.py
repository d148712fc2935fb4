"""``skygate scan`` on the embedded default: no servers, bad files reported, resumable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run
from tests.images import SD_PARAMETERS, encode, noisy_photo, smooth_scene


def scan(*args, data_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    env["SKYGATE_DATA_DIR"] = str(data_dir)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "skygate.cli", "scan", *map(str, args)],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return result, time.monotonic() - started


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
    first, first_time = scan(mixed_folder, "--out", out, "--csv", tmp_path / "r.csv",
                             "--workers", "2", "--report", report, data_dir=data_dir)
    assert first.returncode == 1, first.stderr
    records = {os.path.basename(r["path"]): r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == {"good.jpg", "render.png", "corrupt.jpg", "empty.png", "readme.txt",
                            "truncated.png"}
    assert records["good.jpg"]["status"] == "done"
    assert records["render.png"]["is_ai_generated"] is True
    assert records["render.png"]["confidence"] >= 0.95
    for bad, reason in [("empty.png", "empty file"), ("readme.txt", "not a supported image"),
                        ("corrupt.jpg", "jpeg"), ("truncated.png", "png")]:
        assert records[bad]["status"] == "failed" and reason in records[bad]["error"], bad
    assert "failed 4" in first.stdout
    assert (tmp_path / "r.csv").read_text().count("\n") == 7
    page = report.read_text()
    assert all(name in page for name in records)
    # Thumbnail, ELA image and heatmap for each judged image, inlined.
    assert page.count('alt="ELA"') == 2 and page.count('alt="heatmap"') == 2
    assert page.count("data:image/") == 6
    assert "<b>AI</b>" in page and "FAILED" in page

    second, second_time = scan(mixed_folder, "--out", out, data_dir=data_dir)
    again = {os.path.basename(r["path"]): r for r in map(json.loads, out.read_text().splitlines())}
    assert again["good.jpg"]["status"] == "duplicate"
    assert again["good.jpg"]["is_ai_generated"] == records["good.jpg"]["is_ai_generated"]
    assert again["corrupt.jpg"]["status"] == "failed"


def test_scan_usage_errors_exit_2(tmp_path):
    result, _ = scan(tmp_path / "missing", data_dir=tmp_path)
    assert result.returncode == 2 and "no such file" in result.stderr


def test_poison_image_is_failed_after_the_delivery_cap(tmp_path):
    """An upload whose prepare was delivered past the cap ends failed, not in a loop."""
    from schemas.settings import Settings
    from storage import migrate, repository
    from storage.context import open_storage
    from workers import steps

    settings = Settings(data_dir=tmp_path, max_deliveries=2)

    async def go():
        async with open_storage(settings) as storage:
            await migrate.upgrade(storage.engine)
            outcome = await steps.ingest_bytes(storage, settings, data=encode(noisy_photo()),
                                               original_file_name="p.png", user_id=None)
            # Two deliveries already started and never finished (the worker died).
            await repository.start_processing(storage.engine, outcome.upload_id)
            await repository.start_processing(storage.engine, outcome.upload_id)
            key, _ = await steps.prepare(storage, settings, outcome.upload_id)
            return key, await repository.get_upload(storage.engine, outcome.upload_id)

    key, upload = run(go())
    assert key is None
    assert upload["status"] == "failed" and "poison" in upload["error"]
