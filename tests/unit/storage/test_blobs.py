import hashlib

import pytest

from storage.blobs import BlobNotFound, LocalBlobStore


def test_put_is_content_addressed_and_idempotent(tmp_path):
    store = LocalBlobStore(tmp_path)
    data = b"\x89PNG fake but bytes"
    key = store.put(data, suffix=".png")
    digest = hashlib.sha256(data).hexdigest()
    assert key == f"{digest[:2]}/{digest[2:4]}/{digest}.png"
    assert store.put(data, suffix=".png") == key
    assert store.get(key) == data
    assert store.local_path(key).read_bytes() == data
    assert store.exists(key)
    assert store.delete(key) and not store.exists(key)
    with pytest.raises(BlobNotFound):
        store.get(key)


def test_keys_cannot_escape_the_root(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    (tmp_path / "secret").write_text("x")
    with pytest.raises(BlobNotFound):
        store.get("../secret")
