"""The canvas manifest is one type (service.manifest.Manifest): what prepare writes is what
the method tasks and aggregate read, through its fields, never a string key."""

from __future__ import annotations

import json

import pytest

from service.manifest import Manifest


def _manifest(**caches) -> Manifest:
    return Manifest(upload_id=7, user_id=3, file_name="a.jpg", original_key="ab/abcd.jpg",
                    thumbnail_key="cd/cdef.jpg", file_info={"width": 640, "height": 480},
                    **caches)


def test_a_manifest_round_trips_and_leaves_unset_caches_out():
    plain = _manifest()
    data = json.loads(plain.to_json())
    assert set(data) == {"upload_id", "user_id", "file_name", "original_key", "thumbnail_key",
                         "file_info"}
    assert Manifest.from_json(plain.to_json()) == plain
    cached = _manifest(native_key="ef/ef01.png", neutral_features={"groups": ["x"]},
                       shared_pixels=True)
    assert Manifest.from_json(cached.to_json()) == cached
    assert json.loads(cached.to_json())["native_key"] == "ef/ef01.png"


def test_the_pixels_key_is_the_cached_crop_or_the_original_or_none():
    assert _manifest(native_key="ef/ef01.png").pixels_key == "ef/ef01.png"
    assert _manifest(native_from_original=True).pixels_key == "ab/abcd.jpg"
    assert _manifest().pixels_key is None


def test_a_blob_that_is_not_a_manifest_is_a_value_error():
    with pytest.raises(ValueError, match="JSON object"):
        Manifest.from_json(b"[1, 2]")
    with pytest.raises(ValueError, match="not a canvas manifest"):
        Manifest.from_json(b'{"upload_id": 1}')
    with pytest.raises(json.JSONDecodeError):
        Manifest.from_json(b"not json")
