"""``skygate submit``'s client side: what it refuses before sending anything."""

from __future__ import annotations

import os

from schemas.settings import Settings
from testkit.images import encode, noisy_photo


def test_an_oversized_file_is_refused_before_it_is_read_or_uploaded(tmp_path, monkeypatch):
    from skygate.remote import submit_files

    for name in [n for n in os.environ if n.startswith("SKYGATE_")]:
        monkeypatch.delenv(name)
    big = tmp_path / "big.png"
    big.write_bytes(encode(noisy_photo(rows=256, cols=256, seed=3)))
    settings = Settings(data_dir=tmp_path / "var", max_upload_bytes=1000)

    record = next(submit_files(settings, [big], wait=False, timeout=5))

    assert record["status"] == "failed" and record["upload_id"] is None
    assert record["error"] == f"file is {big.stat().st_size:,} bytes, over the limit of 1,000"
    blobs = tmp_path / "var" / "blobs"
    assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]
