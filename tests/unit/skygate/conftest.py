"""Helpers of the report modules: the storage settings of a data dir, ``asyncio.run`` beside
Playwright, the page's data blob, and headless Chromium with the network cut."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from pathlib import Path

import pytest


def _settings(data_dir: Path):
    from schemas.settings import Settings

    return Settings(data_dir=data_dir)


def run_async(coro):
    """``asyncio.run`` in a thread of its own (Playwright's sync API holds this thread's loop)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def page_data(page: str) -> dict:
    m = re.search(r"<script type='application/json' id='data'>(.*?)</script>", page, re.S)
    assert m, "no data blob"
    return json.loads(m.group(1))


# --- headless Chromium ---------------------------------------------------------------------


def _chromium_path() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("no chromium binary (apt-get install chromium; .ci/apt-packages lists it)")
    return exe


@pytest.fixture
def browser():
    exe = _chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e '.[test]')")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe,
                               args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _open(browser, url: str):
    """A page with the network cut (only file: URLs load) that records errors and dialogs."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.route(re.compile(r"^(?!file:).*"), lambda route: route.abort())
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda e: page.problems.append(f"error: {e}"))
    page.on("dialog", lambda d: (page.problems.append(f"dialog: {d.message}"), d.dismiss()))
    started = time.monotonic()
    page.goto(url, wait_until="load")
    page.load_seconds = time.monotonic() - started
    return page


def _cards(page) -> list[dict]:
    return page.evaluate("""[...document.querySelectorAll('#list .card')].map(c=>({
        name:c.dataset.name,verdict:c.dataset.verdict,title:c.querySelector('h3').textContent}))""")
