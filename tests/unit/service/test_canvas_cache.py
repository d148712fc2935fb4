"""Compute each thing once per canvas: the process that prepared a canvas hands its decode
and neutral view to the methods it runs next, and (service.shared_pixels) to the other
processes of its host; a process of another host decodes once for all of its methods."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.conftest import migrated, run
from tests.unit.service.test_storage_budget import camera_jpeg

METHODS = ("ela", "prnu", "model")


def _counting(monkeypatch, module, name: str) -> list:
    calls: list = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


async def _ingested(storage, settings, *, seed: int) -> int:
    """The upload id of a ~1 MP camera JPEG (its methods decode the original) ingested into
    freshly migrated storage."""
    from service import ingest

    await migrated(storage)
    outcome = await ingest.ingest_bytes(storage, settings,
                                       data=camera_jpeg(rows=900, cols=1200, seed=seed),
                                       original_file_name=f"{seed}.jpg", user_id=None)
    return outcome.upload_id


def _canvas_in_two_processes(settings, monkeypatch):
    """Prepare a ~1 MP JPEG (its methods decode the original), run three methods in the
    preparing process, then in "another process" (an empty per-process cache); returns the
    (decodes, neutral views) each made, both runs' results and the shared files left."""
    from service import canvas, detection
    from storage.context import open_storage

    async def go():
        async with open_storage(settings) as storage:
            uid = await _ingested(storage, settings, seed=5)
            canvas._recent.clear()
            decodes = _counting(monkeypatch, canvas, "decode_crop")
            neutrals = _counting(monkeypatch, canvas, "neutralise")
            neutrals_in_prepare = _counting(monkeypatch, detection, "neutralise")
            manifest_key, _ = await detection.prepare(storage, settings, uid)
            same = {m: await detection.detect(storage, settings, uid, m, manifest_key)
                    for m in METHODS}
            preparing = (len(decodes), len(neutrals) + len(neutrals_in_prepare))
            canvas._recent.clear()  # another process: nothing decoded there yet
            decodes.clear(), neutrals.clear()
            other = {m: await detection.detect(storage, settings, uid, m, manifest_key)
                     for m in METHODS}
            return preparing, (len(decodes), len(neutrals)), same, other

    return run(go())


def _files(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("*.npy"))


def _same_results(same, other) -> None:
    for name in METHODS:
        assert same[name].status == other[name].status == "ok", (same[name], other[name])
        assert same[name].ai_probability == other[name].ai_probability


def test_another_host_decodes_once_for_all_its_methods(embedded, monkeypatch):
    settings = embedded.model_copy(update={"shared_pixels_dir": ""})
    preparing, other_process, same, other = _canvas_in_two_processes(settings, monkeypatch)
    # The preparing process decodes once (prepare's own) and makes the neutral view once (in
    # prepare when the shared features need it, else for the first method that reads it).
    assert preparing == (0, 1)
    assert other_process == (1, 1)  # once for all three methods of the other process
    _same_results(same, other)


def test_another_process_of_the_host_reads_the_shared_pixels(embedded, monkeypatch):
    preparing, other_process, same, other = _canvas_in_two_processes(embedded, monkeypatch)
    assert preparing == (0, 1)
    assert other_process == (0, 0)  # read from service.shared_pixels, decoded by nobody
    _same_results(same, other)


def test_aggregate_drops_the_canvas_shared_pixels(embedded):
    from pathlib import Path

    from service import detection
    from service.aggregate import aggregate
    from storage.context import open_storage

    folder = Path(embedded.shared_pixels_dir)

    async def go():
        async with open_storage(embedded) as storage:
            uid = await _ingested(storage, embedded, seed=6)
            manifest_key, methods = await detection.prepare(storage, embedded, uid)
            shared = _files(folder)
            results = [(await detection.detect(storage, embedded, uid, m, manifest_key))
                       .model_dump(mode="json") for m in methods]
            await aggregate(storage, embedded, uid, manifest_key, results)
            return shared, _files(folder)

    during, after = run(go())
    assert len(during) >= 1  # the crop (and the neutral view when prepare made it)
    assert after == []


def test_shared_pixels_round_trip_and_stay_bounded(tmp_path):
    from service.shared_pixels import SharedPixels

    shared = SharedPixels(tmp_path / "px", keep=3)
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8) for _ in range(5)]
    for i, pixels in enumerate(arrays):
        shared.put("native_pixels", f"key{i}", pixels)
        os.utime(shared._path("native_pixels", f"key{i}"), ns=(i * 10**9, i * 10**9))
    assert len(list((tmp_path / "px").glob("*.npy"))) == 3  # the oldest two dropped
    assert shared.get("native_pixels", "key0") is None
    np.testing.assert_array_equal(shared.get("native_pixels", "key4"), arrays[4])
    assert shared.get("neutral_pixels", "key4") is None  # the kind is part of the key
    shared.discard([("native_pixels", "key4")])
    assert shared.get("native_pixels", "key4") is None


def test_unusable_or_damaged_shared_pixels_mean_decoding(tmp_path):
    from service.shared_pixels import SharedPixels

    shared = SharedPixels(tmp_path / "px")
    pixels = np.zeros((8, 8, 3), np.uint8)
    shared.put("native_pixels", "k", pixels)
    shared._path("native_pixels", "k").write_bytes(b"\x93NUMPY garbage")  # damaged
    assert shared.get("native_pixels", "k") is None
    np.save(shared._path("native_pixels", "j"), np.zeros((8, 8), np.float64))  # wrong kind
    assert shared.get("native_pixels", "j") is None

    open_folder = tmp_path / "open"
    open_folder.mkdir(mode=0o777)
    open_folder.chmod(0o777)  # others may write there: never trusted
    assert not SharedPixels(open_folder).usable
    assert SharedPixels(open_folder).get("native_pixels", "k") is None

    blocked = tmp_path / "file"
    blocked.write_bytes(b"")  # not a folder: off, and nothing raises
    off = SharedPixels(blocked / "px")
    assert not off.usable
    off.put("native_pixels", "k", pixels)
    assert off.get("native_pixels", "k") is None


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm on this host")
def test_the_default_folder_is_private_tmpfs():
    from service.shared_pixels import default_dir

    assert default_dir() == __import__("pathlib").Path(f"/dev/shm/skygate-{os.getuid()}")


def test_a_canvas_run_in_one_process_shares_nothing(embedded, monkeypatch):
    """The embedded default (scan, the in-process API) runs a canvas in one process: its
    methods read prepare's decode from the process's cache, and nothing is written for
    other processes."""
    from service import detection
    from service.shared_pixels import SharedPixels
    from storage import repository as repo
    from storage.context import open_storage

    puts = _counting(monkeypatch, SharedPixels, "put")

    async def go():
        async with open_storage(embedded) as storage:
            uid = await _ingested(storage, embedded, seed=7)
            await detection.run_all(storage, embedded, uid)
            return (await repo.get_upload(storage.engine, uid))["status"]

    assert run(go()) == "done"
    assert puts == []
