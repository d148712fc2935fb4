"""Fixtures of the unit tests (no servers)."""

from __future__ import annotations

import os

import pytest

from schemas.settings import Settings


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    """Settings for the embedded default (SQLite file, documents in SQL, a blob folder), with
    no SKYGATE_* variable of the caller's environment leaking in."""
    for name in [n for n in os.environ if n.startswith("SKYGATE_")]:
        monkeypatch.delenv(name)
    # The pixels shared between processes in a folder of the test's own, not /dev/shm.
    return Settings(data_dir=tmp_path, shared_pixels_dir=str(tmp_path / "shared-pixels"))
