"""The blob store is synchronous (a local folder, or S3 with its timeouts and retries): the
API's async code reaches it only through a thread (``asyncio.to_thread(store.get, key)``),
never by calling it on the event loop. Staging a part (a local temporary file) and naming a
key (pure) are not I/O on the store."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

NOT_IO = {"stage", "key_for", "key_for_bytes"}


def blocking_blob_calls(root=ROOT) -> list[str]:
    found = []
    for path in sorted((root / "api").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            on_store = (isinstance(owner, ast.Attribute) and owner.attr == "blobs") or (
                isinstance(owner, ast.Name) and owner.id == "blobs")
            if on_store and node.func.attr not in NOT_IO:
                found.append(f"{path.relative_to(root)}:{node.lineno} calls "
                             f".blobs.{node.func.attr}() on the event loop")
    return found


def test_the_api_reads_blobs_only_through_a_thread():
    found = blocking_blob_calls()
    assert not found, "use asyncio.to_thread:\n" + "\n".join(found)


def test_the_check_sees_a_blocking_read(tmp_path):
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "x.py").write_text(
        "async def f(storage, key):\n"
        "    a = storage.blobs.get(key)\n"
        "    b = await asyncio.to_thread(storage.blobs.get, key)\n"
        "    return storage.blobs.stage()\n")
    assert blocking_blob_calls(tmp_path) == ["api/x.py:2 calls .blobs.get() on the event loop"]
