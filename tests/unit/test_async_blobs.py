"""Async code reaches the blob store only through its async path (``BlobStore.aget``, ``aput``,
``adelete``, ``aexists``, ``acommit``, ``akeys``: each call in a thread). The store is
synchronous — a folder, or boto3 whose GET may wait 60 s times 5 attempts — so one blocking call
in an ``async def`` stalls every request its event loop serves. A lambda or nested ``def``
inside an async function is handed to a thread (``blobrefs.attach``'s write) and is exempt."""

from __future__ import annotations

import ast
import asyncio
import textwrap
import threading

from storage.blobs.local import LocalBlobStore
from tests.conftest import ROOT

PRODUCT = ("schemas", "pipeline", "storage", "service", "workers", "api", "skygate")
# The BlobStore methods that may go to the network (an S3 request); the staging area (stage,
# the StagedBlob's writes) is a local temporary file.
BLOCKING = {"get", "put", "delete", "exists", "commit", "keys", "probe", "local_path"}


def _blob_object(node: ast.expr) -> bool:
    """Is ``node`` a blob store by its name (``storage.blobs``, ``blobs``, ``blob_store``)?"""
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return "blob" in name.lower()


def blocking_blob_uses(source: str, filename: str = "<source>") -> list[str]:
    """Every ``<blob store>.<blocking method>`` an ``async def`` runs on its event loop,
    called or handed to ``asyncio.to_thread`` (the async methods are the one way)."""
    found = []
    for fn in ast.walk(ast.parse(source, filename=filename)):
        if not isinstance(fn, ast.AsyncFunctionDef):
            continue
        stack = list(fn.body)
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                 ast.ClassDef)):
                continue  # run elsewhere (a thread), or checked on its own
            if (isinstance(node, ast.Attribute) and node.attr in BLOCKING
                    and _blob_object(node.value)):
                found.append(f"{filename}:{node.lineno} {ast.unparse(node)} in {fn.name}()")
            stack.extend(ast.iter_child_nodes(node))
    return found


def test_no_async_function_calls_the_blob_store_synchronously():
    wrong = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            wrong += blocking_blob_uses(path.read_text(encoding="utf-8"),
                                        str(path.relative_to(ROOT)))
    assert not wrong, "blocking blob store calls in async code (use the a... methods):\n" + \
        "\n".join(wrong)


def test_the_check_sees_a_blocking_call_and_spares_the_async_path():
    source = textwrap.dedent("""
        async def picture(request, key):
            data = request.app.state.storage.blobs.get(key)
            also = await asyncio.to_thread(storage.blobs.get, key)
            fine = await request.app.state.storage.blobs.aget(key)
            await attach(storage, 1, key, "original", lambda: storage.blobs.commit(s, key))

        def in_a_thread(blobs, key):
            return blobs.get(key)
    """)
    found = blocking_blob_uses(source)
    assert sorted(line.split(" ")[1] for line in found) == [
        "request.app.state.storage.blobs.get", "storage.blobs.get"]


def test_the_async_path_runs_each_call_off_the_event_loop(tmp_path):
    threads = []

    class Recording(LocalBlobStore):
        def get(self, key):
            threads.append(threading.get_ident())
            return super().get(key)

        def delete(self, key):
            threads.append(threading.get_ident())
            return super().delete(key)

    store = Recording(tmp_path)

    async def main():
        key = await store.aput(b"bytes", suffix=".bin")
        assert await store.aexists(key)
        assert await store.aget(key) == b"bytes"
        assert [k for k, _, _ in await store.akeys()] == [key]
        assert await store.adelete(key)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(threads) == 2 and loop_thread not in threads
