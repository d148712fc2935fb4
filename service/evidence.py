"""Evidence on request: the statistics and pictures of the methods that cannot decide.

A method with no usable calibration (prnu, texture and ela today: ``evidence_only``) votes
nothing, so a canvas does not pay for it: its task records the abstention its full run would
give, with ``details.evidence`` = ``"on_request"`` (``Settings.evidence``). The first time a
person asks for what it shows (an ELA or heatmap picture from the API, a report), this module
decodes the original again, runs those methods as the canvas would have, stores their
pictures and the forensic heatmap, and rewrites their rows and document sections. The
verdict, its factors and every other method's output stay as they were.
"""

from __future__ import annotations

import asyncio
import io
import logging

import numpy as np
from PIL import Image

from pipeline.decode import decode_views
from pipeline.document import merge_sections, waiting
from pipeline.features import shared_features
from pipeline.heatmap import combine_block_maps, render_heatmap
from pipeline.imaging import MAX_SIDE, neutralise
from pipeline.methods.registry import (
    NATIVE_PIXELS,
    NEUTRAL_FEATURES,
    NEUTRAL_PIXELS,
    REGISTRY,
    SETTINGS,
    feature_groups_of,
    needs_of,
)
from schemas.documents import DetectionMetadata
from schemas.results import MethodResult
from schemas.settings import Settings
from service.method_results import heatmap_block_maps, method_row, picture_keys
from storage import blobrefs, method_rows
from storage import repository as repo
from storage.cache import forget_result
from storage.context import Storage

log = logging.getLogger("skygate.pipeline")

# One computation per upload in this process at a time: a second request waits and finds it
# done (another process computing the same upload writes the same pictures and rows).
# Each entry: (its lock, how many callers hold or wait for it); dropped by the last one.
_locks: dict[int, tuple[asyncio.Lock, int]] = {}


async def complete(storage: Storage, settings: Settings, upload_id: int) -> list[str]:
    """Compute the evidence a finished upload's canvas left for later; returns the methods
    computed (none when nothing waits). Raises LookupError when the upload is gone or was
    judged again meanwhile; an image that cannot be decoded any more raises its error."""
    lock, users = _locks.get(upload_id, (None, 0))
    lock = lock or asyncio.Lock()
    _locks[upload_id] = (lock, users + 1)
    try:
        async with lock:
            return await _complete(storage, settings, upload_id)
    finally:
        lock, users = _locks[upload_id]
        if users == 1:
            del _locks[upload_id]
        else:
            _locks[upload_id] = (lock, users - 1)


async def _complete(storage: Storage, settings: Settings, upload_id: int) -> list[str]:
    upload = await repo.get_upload(storage.engine, upload_id)
    stored = await repo.result_for_upload(storage.engine, upload_id)
    if upload is None or upload["status"] != "done" or stored is None:
        return []
    result_id = stored["result_id"]
    rows = await method_rows.details(storage.engine, result_id)
    names = [n for n, row in rows.items() if n in REGISTRY and waiting(row["result_details"])]
    if not names:
        return []
    # The combined map reads every forensic method's block map, computed or not.
    mapped = [n for n in rows if n in REGISTRY and REGISTRY[n].in_heatmap]
    run = sorted(set(names) | set(mapped), key=list(REGISTRY).index)
    original = await storage.blobs.aget(upload["file_path"])
    findings = await asyncio.to_thread(_run_methods, original, settings, run)
    owner = (upload["file_path"], upload["user_id"])
    results: dict[str, MethodResult] = {}
    for name in names:
        finding = findings[name]
        for kind, picture in finding.pictures.items():
            key = await blobrefs.store(storage, upload_id, picture.data, suffix=picture.suffix,
                                       kind=kind, owner=owner)
            finding.result.details[REGISTRY[name].pictures.get(kind, f"{kind}_path")] = key
        results[name] = finding.result
    forensic = await _forensic_heatmap(storage, upload, {n: findings[n].result for n in run},
                                       owner)
    written = await method_rows.replace(
        storage.engine, upload_id=upload_id, result_id=result_id,
        methods=[method_row(rows[n]["method_id"], r) for n, r in results.items()])
    if not written:
        raise LookupError(f"upload {upload_id} was judged again or deleted meanwhile")
    doc = await storage.documents.get_detection_metadata(result_id)
    if doc is not None:
        await storage.documents.upsert_detection_metadata(
            _with_evidence(doc, results, forensic))
    await forget_result(storage.cache, upload_id)
    log.info("evidence computed on request: %s", ", ".join(names),
             extra={"upload_id": upload_id})
    return names


def _run_methods(original: bytes, settings: Settings, names: list[str]) -> dict:
    """Each named method's finding on the image, with the inputs prepare would give it."""
    views = decode_views(original, max_pixels=settings.max_image_pixels, side=MAX_SIDE)
    needs = needs_of(names)
    groups = feature_groups_of(names, {})
    neutral = neutralise(views.crop) if groups or NEUTRAL_PIXELS in needs else None
    inputs = {NATIVE_PIXELS: views.crop, NEUTRAL_PIXELS: neutral, SETTINGS: settings,
              NEUTRAL_FEATURES: shared_features(neutral if groups else None, groups)}
    return {name: REGISTRY[name].execute(inputs) for name in names}


async def _forensic_heatmap(storage: Storage, upload: dict, results: dict[str, MethodResult],
                            owner: tuple) -> str | None:
    combined = combine_block_maps(heatmap_block_maps(results))
    thumbnail = upload.get("thumbnail_path")
    if combined is None or not thumbnail:
        return None
    thumb = np.asarray(Image.open(io.BytesIO(await storage.blobs.aget(thumbnail)))
                       .convert("RGB"))
    png = await asyncio.to_thread(render_heatmap, combined, thumb)
    return await blobrefs.store(storage, upload["upload_id"], png, suffix=".png",
                                kind="forensic_heatmap", owner=owner)


def _with_evidence(doc: DetectionMetadata, results: dict[str, MethodResult],
                   forensic: str | None) -> DetectionMetadata:
    """The document with the computed methods' sections and the forensic heatmap in."""
    body = doc.model_dump()
    for name, result in results.items():
        merge_sections(body, REGISTRY[name].document_section(result))
    keys = {k: v for k, v in picture_keys({n: r.details for n, r in results.items()}).items()
            if v}
    anomalies = body["visual_anomalies"]
    if forensic is not None:
        anomalies["forensic_heatmap_path"] = forensic
        keys = {**keys, "forensic_heatmap": forensic}
        if not anomalies.get("heatmap_path"):  # no model map: the forensic one, labelled
            anomalies["heatmap_path"], anomalies["heatmap_source"] = forensic, "forensic"
            keys["heatmap"] = forensic
    body["blob_keys"] = {**(body.get("blob_keys") or {}), **keys}
    return DetectionMetadata.model_validate(body)
