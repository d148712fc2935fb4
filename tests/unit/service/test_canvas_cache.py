"""Compute each thing once per canvas: the process that prepared a canvas hands its decode
and neutral view to the methods it runs next; another process decodes once for all of its."""

from __future__ import annotations

from tests.conftest import migrated, run
from tests.unit.service.test_storage_budget import camera_jpeg


def _counting(monkeypatch, module, name: str) -> list:
    calls: list = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_methods_after_prepare_in_the_same_process_decode_nothing(embedded, monkeypatch):
    from service import canvas, detection, ingest
    from storage.context import open_storage

    data = camera_jpeg(rows=900, cols=1200, seed=5)  # ~1 MP: methods decode the original

    async def go():
        async with open_storage(embedded) as storage:
            await migrated(storage)
            outcome = await ingest.ingest_bytes(storage, embedded, data=data,
                                               original_file_name="s.jpg", user_id=None)
            uid = outcome.upload_id
            canvas._recent.clear()
            decodes = _counting(monkeypatch, canvas, "decode_crop")
            neutrals = _counting(monkeypatch, canvas, "neutralise")
            neutrals_in_prepare = _counting(monkeypatch, detection, "neutralise")
            manifest_key, _ = await detection.prepare(storage, embedded, uid)
            same = {m: await detection.detect(storage, embedded, uid, m, manifest_key)
                    for m in ("ela", "prnu", "model")}
            seeded = (len(decodes), len(neutrals) + len(neutrals_in_prepare))
            canvas._recent.clear()  # another process: nothing decoded there yet
            decodes.clear(), neutrals.clear()
            other = {m: await detection.detect(storage, embedded, uid, m, manifest_key)
                     for m in ("ela", "prnu", "model")}
            return seeded, (len(decodes), len(neutrals)), same, other

    seeded, other_process, same, other = run(go())
    # Prepare's process decodes once (prepare's own) and makes the neutral view once (in
    # prepare when the shared features need it, else for the first method that reads it).
    assert seeded == (0, 1)
    assert other_process == (1, 1)  # once for all three methods of the other process
    for name in same:
        assert same[name].status == other[name].status == "ok", (same[name], other[name])
        assert same[name].ai_probability == other[name].ai_probability
