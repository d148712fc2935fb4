"""The HTML report (``skygate.report.write_report``): one small page plus a pictures folder.

Fast tests run a real scan on the embedded storage (SQLite, embedded documents, local blobs)
and check the page as text; the slow ones open it in headless Chromium (Debian's
``chromium``, driven by Playwright without its own browser download), one of them with
2,000 generated images.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from testkit.images import SD_PARAMETERS, encode, noisy_photo, smooth_scene
from tests.conftest import ROOT
from tests.unit.skygate.conftest import (
    _cards,
    _chromium_path,
    _open,
    _settings,
    page_data,
    run_async,
)

HOSTILE_DIR = "evil<"
HOSTILE_FILE = "script>alert(1)<img src=x onerror=alert(2)>.png"
HOSTILE_RECORD = {"path": "/x/</script><script>alert(3)</script>.jpg", "sha256": None,
                  "upload_id": None, "status": "failed", "is_ai_generated": None,
                  "confidence": None, "methods": {}, "error": "<b>bold</b> & </script>"}


def write(data_dir: Path, records: list[dict], path: Path) -> Path:
    from skygate.report import write_report
    from storage.context import open_storage

    async def go():
        async with open_storage(_settings(data_dir)) as storage:
            return await write_report(storage, records, path, settings=_settings(data_dir))

    return run_async(go())


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """A real ``skygate scan`` of four files (one hostile name, one broken file)."""
    root = tmp_path_factory.mktemp("scanned")
    folder = root / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / HOSTILE_DIR).mkdir()
    (folder / "photo.jpg").write_bytes(encode(noisy_photo(seed=1), fmt="JPEG"))
    (folder / "sub" / "render.png").write_bytes(
        encode(smooth_scene(seed=2), text={"parameters": SD_PARAMETERS}))
    (folder / HOSTILE_DIR / HOSTILE_FILE).write_bytes(encode(smooth_scene(seed=3)))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    env["SKYGATE_DATA_DIR"] = str(root / "var")
    out = root / "r.jsonl"
    result = subprocess.run([sys.executable, "-m", "skygate.cli", "scan", str(folder),
                             "--out", str(out), "--workers", "1"],
                            check=False, env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]  # broken.jpg failed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4
    return root / "var", records, folder


@pytest.fixture
def report(scanned, tmp_path):
    data_dir, records, folder = scanned
    path = write(data_dir, [*records, HOSTILE_RECORD], tmp_path / "report.html")
    return path, records, folder


def test_page_and_folder_structure(report):
    path, records, folder = report
    page = path.read_text()
    files = path.with_name("report_files")
    data = page_data(page)
    rows = {r["n"]: r for r in data["rows"]}
    assert set(rows) == {r["path"] for r in records} | {HOSTILE_RECORD["path"]}
    assert data["dir"] == "report_files/" and data["pageSize"] == 100
    words = {True: "AI", False: "Real", None: "Uncertain"}
    for rec in records:
        row = rows[rec["path"]]
        if rec["status"] == "failed":
            assert row["v"] == "failed" and row["e"] == rec["error"]
            continue
        assert row["v"] == words[rec["is_ai_generated"]]
        assert row["c"] == pytest.approx(rec["confidence"], abs=1e-4)
        assert [data["methods"][m[0]] for m in row["t2"]] == sorted(rec["methods"])
        # A small JPEG thumbnail linking to the image's own page, both in the folder.
        small, own_page, w, h = row["t"]
        assert small.endswith("_t.jpg") and max(w, h) <= 128 and own_page == row["g"]
        assert (files / small).read_bytes()[:2] == b"\xff\xd8"
        assert (files / own_page).read_text().startswith("<!doctype html>")
        assert "/" not in small + own_page and ".." not in small + own_page
    assert rows[str(folder / "sub" / "render.png")]["v"] == "AI"
    # The scan (no --report) left the ELA images for later: the report computed them.
    judged = [r for r in records if r["status"] != "failed"]
    assert len(list(files.glob("*_e.webp"))) == len(judged) == 3
    # Summary: counts per verdict; the script renders one page of rows, lazily loaded.
    # (The model's opinion of the synthetic scenes is the model's: count what the scan said.)
    said = [words[r["is_ai_generated"]] if r["status"] != "failed" else "failed"
            for r in [*records, HOSTILE_RECORD]]
    parts = [f"{w}: {said.count(w)}" for w in ("AI", "Real", "Uncertain", "failed")
             if said.count(w)]
    assert said.count("failed") == 2
    assert f"<p id='summary'>5 files — {', '.join(parts)}</p>" in page
    assert "loading:'lazy'" in page and "http://" not in page.replace(
        "http://www.w3.org/2000/svg", "") and "https://" not in page
    # No picture is inlined; the folder holds only the pictures and its marker.
    assert "data:image" not in page and "base64" not in page
    assert {p.suffix for p in files.iterdir()} <= {".jpg", ".png", ".webp", ".html", ""}


def test_hostile_names_are_escaped(report):
    path, _, folder = report
    page = path.read_text()
    # Exactly the page's own two scripts: no name or error opened a tag.
    assert len(re.findall(r"<script", page)) == 2
    assert page.count("</script>") == 2
    for raw in ("<img src=x", "alert(3)</script>", "<b>bold</b>", f"{HOSTILE_DIR}/"):
        assert raw not in page, raw
    # The per-folder table shows the hostile folder escaped; the data blob keeps it exact.
    assert f"<td>{folder}/evil&lt;</td>" in page
    names = {r["n"] for r in page_data(page)["rows"]}
    assert str(folder / HOSTILE_DIR / HOSTILE_FILE) in names
    assert HOSTILE_RECORD["path"] in names
    # The hostile file's own page: its name is text, never markup.
    row = next(r for r in page_data(page)["rows"] if r["n"].endswith(HOSTILE_FILE))
    own = (path.with_name("report_files") / row["g"]).read_text()
    assert "<img src=x" not in own and "script>alert" not in own
    assert len(re.findall(r"<script", own)) == 1 and "&lt;img src=x" in own


def test_histogram_and_per_folder_counts(report):
    path, records, folder = report
    page = path.read_text()
    counts = [int(n) for n in re.findall(r'<rect class="bin" data-count="(\d+)"', page)]
    judged = [r for r in records if r["status"] != "failed"]
    assert len(counts) == 10 and sum(counts) == len(judged)
    ai = next(r for r in records if r["path"].endswith("render.png"))
    assert counts[-1] >= 1 and ai["confidence"] >= 0.9  # the SD render sits in the top bin
    # Per folder: the parent folder of each path, with its verdict counts and total.
    table = page[page.index("<table id='folders'>"):]
    table = table[:table.index("</table>")]
    rows = {cells[0]: cells[1:] for cells in
            (re.findall(r"<td>(.*?)</td>", tr) for tr in table.split("<tr>")[2:])}
    header = re.findall(r"<th>(.*?)</th>", table)
    assert header[:5] == ["folder", "AI", "Real", "Uncertain", "failed"]
    col = {h: i - 1 for i, h in enumerate(header)}
    assert rows[str(folder)][col["failed"]] == "1" and rows[str(folder)][col["total"]] == "2"
    assert rows[f"{folder}/sub"][col["AI"]] == "1"
    # A hostile "folder" (the path's '/' make one of '</script>') is escaped like the rest.
    assert rows["/x/&lt;/script&gt;&lt;script&gt;alert(3)&lt;"][col["failed"]] == "1"


def test_histogram_bins_are_right():
    from skygate.report import _histogram_svg

    svg = _histogram_svg([0.0, 0.05, 0.5, 0.95, 1.0, 0.1])
    counts = [int(n) for n in re.findall(r'data-count="(\d+)"', svg)]
    assert counts == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]


def test_page_weight_per_image_stays_small(scanned, tmp_path):
    """500 rows (the scan's records repeated under other names): well under 50 KB each;
    repeated pictures are written once."""
    data_dir, records, _ = scanned
    many = [{**r, "path": f"/photos/batch{i % 7}/{i:04d}_{os.path.basename(r['path'])}"}
            for i in range(125) for r in records]
    path = write(data_dir, many, tmp_path / "big.html")
    per_image = path.stat().st_size / len(many)
    print(f"page: {path.stat().st_size} bytes for {len(many)} rows, {per_image:.0f} B/row")
    assert per_image < 2_000
    assert len(page_data(path.read_text())["rows"]) == 500
    assert len(list((tmp_path / "big_files").glob("*_t.jpg"))) == 3


def test_missing_picture_never_loses_the_report(scanned, tmp_path):
    data_dir, records, _ = scanned
    copy = tmp_path / "var"
    shutil.copytree(data_dir, copy)
    photo = next(r for r in records if r["path"].endswith("photo.jpg"))

    from storage import repository as repo
    from storage.context import open_storage

    async def thumb_key():
        async with open_storage(_settings(copy)) as storage:
            upload = await repo.get_upload(storage.engine, photo["upload_id"])
            storage.blobs.delete(upload["thumbnail_path"])
            storage.blobs.delete(upload["file_path"])

    run_async(thumb_key())
    path = write(copy, records, tmp_path / "report.html")
    page = path.read_text()
    row = next(r for r in page_data(page)["rows"] if r["n"] == photo["path"])
    assert row["x"] == ["image"] and "t" not in row and row["g"]
    assert "1 picture(s) could not be read" in page


def test_rewrites_its_own_folder_but_never_a_foreign_one(scanned, tmp_path):
    data_dir, records, _ = scanned
    path = tmp_path / "report.html"
    write(data_dir, records, path)
    stale = path.with_name("report_files") / "stale.jpg"
    stale.write_bytes(b"old")
    write(data_dir, records, path)  # its own folder: rewritten, stale files gone
    assert not stale.exists()
    foreign = tmp_path / "mine_files"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        write(data_dir, records, tmp_path / "mine.html")
    assert (foreign / "holiday.jpg").read_bytes() == b"precious"


def test_no_records_still_make_a_page(scanned, tmp_path):
    data_dir, _, _ = scanned
    page = write(data_dir, [], tmp_path / "empty.html").read_text()
    assert "<p id='summary'>0 files — </p>" in page and page_data(page)["rows"] == []


# --- headless Chromium ---------------------------------------------------------------------

class _Cards(HTMLParser):
    def __init__(self, dom: str):
        super().__init__()
        self.cards: list[dict] = []
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "card" in (a.get("class") or "").split():
            self.cards.append({"name": a["data-name"], "verdict": a["data-verdict"]})


@pytest.mark.slow
def test_small_report_in_chromium(report, browser, tmp_path):
    path, records, folder = report
    page = _open(browser, path.as_uri())
    judged = sum(r["status"] != "failed" for r in records)
    page.wait_for_function(f"document.body.dataset.picturesShown==='{judged}'", timeout=10_000)
    body = page.evaluate("({...document.body.dataset})")
    assert body["picturesTotal"] == str(judged) and body["picturesFailed"] == "0"
    assert page.evaluate("[...document.images].every(i=>i.loading==='lazy')")
    hostile = str(folder / HOSTILE_DIR / HOSTILE_FILE)
    cards = _cards(page)
    assert {c["name"] for c in cards} == {r["path"] for r in records} | {HOSTILE_RECORD["path"]}
    assert any(c["title"] == hostile for c in cards)  # shown as text, not markup
    assert page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    # The thumbnail links to the image's own page, in the folder beside the index.
    href = page.evaluate("document.querySelector('#list figure a').getAttribute('href')")
    assert href.startswith("report_files/") and (tmp_path / href).exists()
    # Filter by verdict through the link's hash; search by name.
    # (How many are AI is the model's opinion of the synthetic scenes: count the scan's.)
    ai = [r for r in records if r["is_ai_generated"] is True]
    page.evaluate("location.hash='#filter=AI&sort=conf'")
    page.wait_for_function(f"document.body.dataset.matching==='{len(ai)}'")
    assert [c["verdict"] for c in _cards(page)] == ["AI"] * len(ai) and len(ai) >= 1
    page.evaluate("location.hash='#q=EVIL'")
    page.wait_for_function("document.body.dataset.matching==='1'")
    assert [c["name"] for c in _cards(page)] == [hostile]
    assert page.problems == []

    # The same with a plain `chromium --dump-dom` (no Playwright): the hash filters the rows.
    dom = subprocess.run(
        [_chromium_path(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}",
         "--virtual-time-budget=5000", "--dump-dom", path.as_uri() + "#filter=failed"],
        check=False, capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shown = _Cards(dom.stdout).cards
    assert {c["name"] for c in shown} == {r["path"] for r in records if r["status"] == "failed"} \
        | {HOSTILE_RECORD["path"]}
    assert all(c["verdict"] == "failed" for c in shown)
