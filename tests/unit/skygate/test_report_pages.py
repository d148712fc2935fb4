"""The report's per-image pages (issue 25): a real scan of a C2PA image, a declared-AI PNG, a
camera photo and a broken file; the pages and the folder stay within 150 KB per image, and
headless Chromium shows the overlay with its slider, the reasons and the provenance."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.images import SD_PARAMETERS, encode, noisy_photo, smooth_scene
from tests.conftest import ROOT, corpus_dir
from tests.unit.skygate.conftest import _open, page_data

BUDGET = 150 * 1024
C2PA = "c2pa-rs__cli_tests_fixtures_verify.jpg"  # 2882 × 1922, a valid Photoshop manifest


def _camera_photo() -> bytes:
    return encode(noisy_photo(rows=1200, cols=1600, seed=21, sigma=4.0), fmt="JPEG",
                  quality=90, exif={0x010F: "SkyGate Test Camera", 0x0110: "SG-12"})


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    source = corpus_dir("c2pa") / C2PA
    if not source.is_file():
        pytest.skip(f"{C2PA} not in the corpus")
    root = tmp_path_factory.mktemp("pages")
    folder = root / "in"
    folder.mkdir()
    shutil.copyfile(source, folder / "signed.jpg")
    (folder / "render.png").write_bytes(
        encode(smooth_scene(rows=512, cols=512, seed=2), text={"parameters": SD_PARAMETERS}))
    (folder / "camera.jpg").write_bytes(_camera_photo())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    env["SKYGATE_DATA_DIR"] = str(root / "var")
    report = root / "out" / "r.html"
    result = subprocess.run([sys.executable, "-m", "skygate.cli", "scan", str(folder),
                             "--report", str(report), "--out", str(root / "r.jsonl"),
                             "--workers", "1"],
                            check=False, env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert report.is_file(), result.stderr[-2000:]
    records = {Path(r["path"]).name: r
               for r in map(json.loads, (root / "r.jsonl").read_text().splitlines())}
    return report, records, folder


def _row(report: Path, name: str) -> dict:
    rows = page_data(report.read_text())["rows"]
    return next(r for r in rows if r["n"].endswith(name))


def _own_page(report: Path, name: str) -> str:
    return (report.with_name("r_files") / _row(report, name)["g"]).read_text()


def test_index_and_folder_weigh_at_most_150_kb_per_image(reported):
    report, records, _ = reported
    folder = report.with_name("r_files")
    total = report.stat().st_size + sum(f.stat().st_size for f in folder.iterdir())
    originals = sum(f.stat().st_size for f in (reported[2]).iterdir())
    print(f"\nreport {total:,} B for {len(records)} files ({total / len(records):,.0f} B each;"
          f" originals {originals:,} B)")
    assert total <= BUDGET * len(records)
    # No original is copied; the screen pictures are ≤ 1600 px.
    from PIL import Image

    for f in folder.glob("*_s.webp"):
        with Image.open(f) as img:
            assert max(img.size) <= 1600
    assert not list(folder.glob("*.jpg.*")) and len(list(folder.glob("*_s.webp"))) == 3


def test_the_c2pa_page_names_generator_signer_and_validity(reported):
    report, records, folder = reported
    page = _own_page(report, "signed.jpg")
    assert "Adobe Photoshop" in page and "C2PA validity" in page
    state = records["signed.jpg"]["explanation"]["provenance"]["c2pa"]["validation_state"]
    assert f"<td>{state}</td>" in page
    assert (folder / "signed.jpg").as_uri() in page  # the link to the original
    assert "C2PA: Adobe Photoshop" in _row(report, "signed.jpg")["m"]  # and in the index


def test_the_declared_png_page_says_provenance_decided(reported):
    report, records, _ = reported
    page = _own_page(report, "render.png")
    assert "Decided by: <b>declared provenance</b>" in page
    assert "<th>generator chunks</th><td>parameters</td>" in page
    assert records["render.png"]["is_ai_generated"] is True


@pytest.mark.slow
def test_pages_in_chromium(reported, browser, tmp_path):
    report, _, _ = reported
    index = _open(browser, report.as_uri())
    index.wait_for_function("document.body.dataset.picturesShown==='3'", timeout=10_000)
    index.screenshot(path=str(tmp_path / "index.png"), full_page=True)
    failed = index.evaluate("[...document.querySelectorAll('.card[data-verdict=failed]')]"
                            ".map(c=>c.textContent)")
    assert len(failed) == 1 and "broken.jpg" in failed[0]
    # From the index to the camera photo's page, by its link.
    index.click("#list .card[data-name$='camera.jpg'] h3 a")
    index.wait_for_load_state("load")
    page = index
    page.wait_for_function("document.getElementById('pic').complete && "
                           "document.getElementById('map').complete")
    sizes = page.evaluate("""(()=>{const p=document.getElementById('pic').getBoundingClientRect(),
        m=document.getElementById('map').getBoundingClientRect();
        return {pw:p.width,ph:p.height,mw:m.width,mh:m.height,mx:m.left-p.left,
                nat:document.getElementById('pic').naturalWidth}})()""")
    # The map covers the centre square the model saw (1024 px of the 1600 × 1200 photo).
    assert sizes["mw"] == pytest.approx(sizes["pw"] * 1024 / 1600, rel=0.02)
    assert sizes["mx"] == pytest.approx(sizes["pw"] * 288 / 1600, rel=0.05)
    assert sizes["nat"] <= 1600
    page.fill("#op", "20")
    page.dispatch_event("#op", "input")
    assert page.evaluate("getComputedStyle(document.getElementById('map')).opacity") == "0.2"
    votes = page.inner_text("#votes")
    assert "model" in votes and "not voting" in votes and "prnu" in votes
    assert "SkyGate Test Camera SG-12" in page.inner_text("#provenance")
    page.screenshot(path=str(tmp_path / "camera.png"), full_page=True)
    # The C2PA page shows its manifest in the provenance table.
    page.goto((report.with_name("r_files") / _row(report, "signed.jpg")["g"]).as_uri())
    table = page.inner_text("#provenance")
    assert "C2PA claim generator" in table and "Adobe Photoshop" in table
    page.screenshot(path=str(tmp_path / "c2pa.png"), full_page=True)
    assert page.problems == [] and index.problems == []
    for shot in ("index.png", "camera.png", "c2pa.png"):
        assert (tmp_path / shot).stat().st_size > 10_000
