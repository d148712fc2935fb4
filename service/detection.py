"""Detection of one upload: prepare (decode once, cache what the methods share), one
method, aggregate (weighted verdict, heatmap, rows, document). Celery tasks call these one
step at a time; the embedded runner (``run_all``) calls them in one process.

What the methods share lives only as long as the canvas (``storage.blobrefs``'s
intermediate kinds): the decoded image's central crop as a lossless PNG, the neutral view's
features (computed once, in the manifest) and the manifest itself. Aggregate releases them
once the verdict is stored; the recovery sweep releases those of abandoned canvases. What
stays: the original, the thumbnail, the pictures, the heatmap, the rows and the document."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict
from datetime import UTC, datetime

import numpy as np
from PIL import Image

from pipeline import ensemble
from pipeline.decode import InvalidImage, decode_views, pixels_from_bytes, pixels_to_bytes
from pipeline.document import build_metadata_document
from pipeline.features import shared_features
from pipeline.heatmap import anomalies_from_map, combine_block_maps, render_heatmap
from pipeline.imaging import MAX_SIDE, neutralise
from pipeline.methods.registry import (
    CONFIG,
    NATIVE_PIXELS,
    NEUTRAL_FEATURES,
    NEUTRAL_PIXELS,
    ORIGINAL_BYTES,
    REGISTRY,
    SETTINGS,
    Method,
    feature_groups_of,
    needs_of,
)
from schemas.results import MethodResult
from schemas.settings import Settings
from service import results
from storage import blobrefs
from storage import repository as repo
from storage.blobs import BlobNotFound
from storage.context import Storage

log = logging.getLogger("skygate.pipeline")


async def prepare(storage: Storage, settings: Settings, upload_id: int, *,
                  may_count: bool = True, recovered: bool = False
                  ) -> tuple[str | None, list[str]]:
    """Decode once; cache the pixels the active methods read and a thumbnail (blob store).

    Returns (manifest blob key, active method names), or (None, []) when the upload failed.
    ``may_count``: False for a retry or a recovery re-dispatch (no worker died on it).
    ``recovered``: sent by the recovery sweep; an upload finished meanwhile is left alone.
    """
    try:
        deliveries = await repo.start_processing(storage.engine, upload_id,
                                                 may_count=may_count and not recovered,
                                                 only_unfinished=recovered)
    except LookupError:
        log.info("upload %s was deleted before it was prepared", upload_id)
        return None, []
    if deliveries == 0:
        log.info("upload %s finished before its recovery ran: nothing to do", upload_id)
        return None, []
    if deliveries > settings.max_deliveries:
        # It was delivered again and again: the image most likely kills its worker.
        reason = (f"gave up after {deliveries - 1} deliveries: processing this image "
                  "repeatedly killed its worker (poison image)")
        await repo.mark_failed(storage.engine, upload_id, reason)
        return None, []
    upload = await repo.get_upload(storage.engine, upload_id)
    try:
        if upload is None:
            raise blobrefs.UploadGone(upload_id)
        # The pixel limit is checked on the header, before anything is allocated.
        views = decode_views(storage.blobs.get(upload["file_path"]),
                             max_pixels=settings.max_image_pixels, side=MAX_SIDE)
        return await _prepare_decoded(storage, upload_id, upload, views)
    except (blobrefs.UploadGone, BlobNotFound):
        if await blobrefs.upload_exists(storage, upload_id):
            raise
        log.info("upload %s was deleted while it was prepared", upload_id)
        return None, []
    except InvalidImage as exc:
        await repo.mark_failed(storage.engine, upload_id, str(exc))
        log.warning("cannot decode", extra={"upload_id": upload_id, "reason": str(exc)})
        return None, []


# Every pixel input derives from the central crop (its neutral view is a JPEG round trip of
# it, cheaper to redo than to store and read back). A small image is decoded again by each
# method that reads it: measured on a 1 MP JPEG, a decode costs 4 ms where writing the crop as
# PNG costs 54 ms and reading it back 21 ms; above this many pixels the crop is cached.
_PIXEL_NEEDS = frozenset({NATIVE_PIXELS, NEUTRAL_PIXELS, NEUTRAL_FEATURES})
DECODE_AGAIN_PIXELS = 2 * MAX_SIDE * MAX_SIDE
_SLOW_DECODERS = frozenset({"heif", "avif"})  # HEVC/AV1: always cache their crop


async def _prepare_decoded(storage: Storage, upload_id: int, upload: dict, views
                           ) -> tuple[str, list[str]]:
    methods = list(await repo.active_methods(storage.engine))
    needs = needs_of(methods)
    caches: dict = {}
    # Only what an active method reads is made and cached.
    if needs & {NATIVE_PIXELS, NEUTRAL_PIXELS}:
        if (views.info.width * views.info.height <= DECODE_AGAIN_PIXELS
                and views.info.file_type not in _SLOW_DECODERS):
            caches["native_from_original"] = True
        else:
            caches["native_key"] = await blobrefs.store(
                storage, upload_id, pixels_to_bytes(views.crop), suffix=".png",
                kind=NATIVE_PIXELS)
    if NEUTRAL_FEATURES in needs:
        # Once per canvas, for every method that reads them (not once per method).
        caches["neutral_features"] = shared_features(neutralise(views.crop),
                                                     feature_groups_of(methods))
    thumb_key = await blobrefs.store(storage, upload_id, views.thumbnail, suffix=".jpg",
                                     kind="thumbnail")
    await repo.set_thumbnail(storage.engine, upload_id, thumb_key)
    manifest = {
        "upload_id": upload_id, "user_id": upload["user_id"],
        "file_name": upload["original_file_name"],
        "original_key": upload["file_path"], **caches, "thumbnail_key": thumb_key,
        "file_info": asdict(views.info),
    }
    manifest_key = await blobrefs.store(storage, upload_id,
                                        json.dumps(manifest, sort_keys=True).encode(),
                                        suffix=".json", kind="manifest")
    await repo.touch(storage.engine, upload_id, "detecting")
    return manifest_key, methods


# The last crop read and its neutral view, by content-addressed key (same key, same bytes):
# the methods of one canvas that run in the same process decode the PNG once.
_recent: dict[str, tuple[str, np.ndarray]] = {}


def _cached(kind: str, key: str, make) -> np.ndarray:
    hit = _recent.get(kind)
    if hit is not None and hit[0] == key:
        return hit[1]
    value = make()
    value.setflags(write=False)  # shared between methods: nobody writes into it
    _recent[kind] = (key, value)
    return value


def _native(storage: Storage, settings: Settings, manifest: dict) -> np.ndarray | None:
    """The central crop: the cached PNG, or (a small image) the original decoded again."""
    if manifest.get("native_key"):
        key = manifest["native_key"]
        try:
            return _cached(NATIVE_PIXELS, key,
                           lambda: pixels_from_bytes(storage.blobs.get(key)))
        except BlobNotFound:
            # Released by an earlier run's aggregate (a recovered canvas racing the one it
            # replaced): the original still has the pixels.
            log.info("crop %s is gone: decoding the original again", key)
    if manifest.get("native_key") or manifest.get("native_from_original"):
        key = manifest["original_key"]
        return _cached(NATIVE_PIXELS, key, lambda: decode_views(
            storage.blobs.get(key), max_pixels=settings.max_image_pixels, side=MAX_SIDE).crop)
    return None


def _neutral(storage: Storage, settings: Settings, manifest: dict) -> np.ndarray | None:
    crop = _native(storage, settings, manifest)
    if crop is None:
        return None
    key = manifest.get("native_key") or manifest["original_key"]
    return _cached(NEUTRAL_PIXELS, key, lambda: neutralise(crop))


async def detect(storage: Storage, settings: Settings, upload_id: int, method: str,
                 manifest_key: str) -> MethodResult:
    """Run one method; a failure is logged with the method, the file and the reason."""
    manifest = json.loads(storage.blobs.get(manifest_key))
    try:
        result = await _run_method(storage, settings, method, manifest)
    except Exception as exc:
        log.error("method %s failed on %s: %s: %s", method, manifest.get("file_name"),
                  type(exc).__name__, exc, exc_info=True,
                  extra={"upload_id": upload_id, "method": method,
                         "file": manifest.get("file_name"), "reason": str(exc)[:500]})
        raise
    if result.status == "error":
        log.warning("method %s failed on %s: %s", method, manifest.get("file_name"),
                    result.error, extra={"upload_id": upload_id, "method": method,
                                         "file": manifest.get("file_name"),
                                         "reason": result.error})
    return result


async def _run_method(storage: Storage, settings: Settings, name: str,
                      manifest: dict) -> MethodResult:
    method = REGISTRY.get(name)
    if method is None:
        return unimplemented(name)
    inputs: dict = {}
    config_name = None
    if CONFIG in method.needs:
        configs = await storage.documents.active_configurations(method.config_type)
        if not configs:
            return MethodResult(method=name, status="skipped", details={
                "abstain_reason": f"no active {method.config_type} configuration"})
        inputs[CONFIG] = configs[0].parameters.model_dump()
        config_name = configs[0].config_name
    for need in method.needs - {CONFIG}:
        inputs[need] = _load_input(storage, settings, need, manifest, name)
    finding = method.execute(inputs)
    result = finding.result
    if config_name is not None:
        result.details["config_name"] = config_name
    await _store_pictures(storage, manifest["upload_id"], method, finding, result)
    return result


def _load_input(storage: Storage, settings: Settings, need: str, manifest: dict, name: str):
    if need == ORIGINAL_BYTES:
        return storage.blobs.get(manifest["original_key"])
    if need == SETTINGS:
        return settings
    if need not in _PIXEL_NEEDS:
        raise LookupError(f"method {name!r} needs {need}, which the service cannot provide")
    if need == NEUTRAL_FEATURES and manifest.get(NEUTRAL_FEATURES) is not None:
        return manifest[NEUTRAL_FEATURES]
    pixels = (_native if need == NATIVE_PIXELS else _neutral)(storage, settings, manifest)
    if pixels is None:
        raise LookupError(f"method {name!r} needs {need}, which prepare did not cache "
                          "(was the method activated while this upload was in flight?)")
    if need == NEUTRAL_FEATURES:
        # A method activated while this upload was in flight: its own groups, computed here.
        return shared_features(pixels, REGISTRY[name].feature_groups)
    return pixels


async def _store_pictures(storage: Storage, upload_id: int, method: Method, finding,
                          result: MethodResult) -> None:
    """Store the pictures a method made; their blob keys go into the result's details."""
    for kind, picture in finding.pictures.items():
        key = await blobrefs.store(storage, upload_id, picture.data, suffix=picture.suffix,
                                   kind=kind)
        result.details[method.pictures.get(kind, f"{kind}_path")] = key


def _picture_keys(by_method: dict[str, dict]) -> dict[str, str | None]:
    """Picture kind → blob key, from each method's result details."""
    return {kind: (by_method.get(name) or {}).get(detail_key)
            for name, method in REGISTRY.items()
            for kind, detail_key in method.pictures.items()}


def unimplemented(name: str) -> MethodResult:
    """The result of an active ``detection_methods`` row with no registered method."""
    return MethodResult(method=name, status="skipped",
                        details={"abstain_reason": f"no implementation for method {name!r}"})


def error_result(method: str, exc: BaseException) -> MethodResult:
    return MethodResult(method=method, status="error",
                        error=f"{type(exc).__name__}: {exc}"[:1000])


async def aggregate(storage: Storage, settings: Settings, upload_id: int, manifest_key: str,
                    raw_results: list) -> dict:
    """Weighted verdict, heatmap, one SQL transaction, the document; safe to repeat.

    An upload deleted while it was in flight is abandoned cleanly: nothing is written, and
    the blobs and the document this run made are removed again.
    """
    try:
        if not await blobrefs.upload_exists(storage, upload_id):
            raise blobrefs.UploadGone(upload_id)
        out = await _aggregate(storage, settings, upload_id, manifest_key, raw_results)
        if await blobrefs.upload_exists(storage, upload_id):
            return out
        raise blobrefs.UploadGone(upload_id)
    except Exception:
        if await blobrefs.upload_exists(storage, upload_id):
            raise
        await _abandon(storage, upload_id, manifest_key, raw_results)
        return {"upload_id": upload_id, "status": "deleted"}


async def _abandon(storage: Storage, upload_id: int, manifest_key: str, raw_results: list
                   ) -> None:
    """The upload is gone: remove its document and any blob of this run nothing references."""
    keys = {manifest_key}
    details = {raw.get("method"): raw.get("details") or {}
               for raw in raw_results if isinstance(raw, dict)}
    keys |= set(_picture_keys(details).values())
    try:
        manifest = json.loads(storage.blobs.get(manifest_key))
        keys |= {manifest.get(k) for k in ("native_key", "neutral_key", "thumbnail_key")}
    except (BlobNotFound, ValueError):
        pass
    for doc in await storage.documents.find_detection_metadata(upload_id=upload_id):
        keys |= set(doc.blob_keys.values())
        await storage.documents.delete_detection_metadata(doc.result_id)
    removed = await blobrefs.release(storage, {k for k in keys if k})
    removed += await blobrefs.release_intermediates(storage, upload_id)
    log.info("upload %s was deleted during detection; removed %d leftover blob(s)",
             upload_id, len(removed), extra={"upload_id": upload_id})


async def _manifest_or_outcome(storage: Storage, upload_id: int, manifest_key: str
                               ) -> tuple[dict | None, dict | None]:
    """(the manifest, None), or (None, the stored outcome) for an aggregate redelivered after
    the first one finished and released the manifest; a manifest missing otherwise raises."""
    try:
        return json.loads(storage.blobs.get(manifest_key)), None
    except BlobNotFound:
        finished = await _finished(storage, upload_id)
        if finished is None:
            raise
        return None, finished


async def _finished(storage: Storage, upload_id: int) -> dict | None:
    """The stored outcome of an upload whose canvas already finished, else None."""
    upload = await repo.get_upload(storage.engine, upload_id)
    if upload is None or upload["status"] != "done":
        return None
    result = await repo.result_for_upload(storage.engine, upload_id)
    if result is None:
        return None
    return {"upload_id": upload_id, "result_id": result["result_id"],
            "is_ai_generated": result["is_ai_generated"],
            "confidence": float(result["confidence_score"])}


async def _aggregate(storage: Storage, settings: Settings, upload_id: int, manifest_key: str,
                     raw_results: list) -> dict:
    manifest, finished = await _manifest_or_outcome(storage, upload_id, manifest_key)
    if finished is not None:
        return finished
    active = await repo.active_methods(storage.engine)
    by_method: dict[str, MethodResult] = {}
    for raw in raw_results:
        if not raw:
            continue
        r = MethodResult.model_validate(raw)
        # A redelivered header task may report twice: keep an ok result over an error.
        if r.method not in by_method or by_method[r.method].status != "ok":
            by_method[r.method] = r
    for name in active:
        # A row with no registry entry has no task either (workers/tasks.py): skipped, as in
        # the embedded runner; a registered method whose result is missing is an error.
        by_method.setdefault(name, MethodResult(method=name, status="error",
                                                error="no result reached aggregate")
                             if name in REGISTRY else unimplemented(name))
    weights = {name: info["weight"] for name, info in active.items()}
    verdict = ensemble.aggregate(list(by_method.values()), weights)

    maps = {m: r.block_map for m, r in by_method.items()
            if r.block_map and m in REGISTRY and REGISTRY[m].in_heatmap}
    # The heatmap shows where the forensic maps see structure, whatever weight their vote
    # has in the verdict (a weight of 0 keeps them as pictures and evidence).
    combined = combine_block_maps(maps)
    heatmap_key, anomalies = None, []
    if combined is not None:
        thumb = np.asarray(Image.open(io.BytesIO(storage.blobs.get(manifest["thumbnail_key"])))
                           .convert("RGB"))
        heatmap_key = await blobrefs.store(storage, upload_id, render_heatmap(combined, thumb),
                                           suffix=".png", kind="heatmap")
        info = manifest["file_info"]
        anomalies = anomalies_from_map(combined, (info["height"], info["width"]))

    upload = await repo.get_upload(storage.engine, upload_id)
    if upload is None:
        raise blobrefs.UploadGone(upload_id)
    started = upload["processing_started_at"] or datetime.now(UTC)
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    elapsed = max(0.0, (datetime.now(UTC) - started).total_seconds())
    rows = []
    for name, r in by_method.items():
        if name not in active:
            continue
        rows.append({
            "method_id": active[name]["method_id"], "is_ai_generated": r.is_ai_generated,
            "confidence": r.confidence, "processing_time": r.processing_time,
            "result_details": {"status": r.status, "error": r.error,
                               "ai_probability": r.ai_probability, **r.details},
        })
    previous = await repo.result_for_upload(storage.engine, upload_id)
    result_id = await repo.save_results(
        storage.engine, upload_id=upload_id, is_ai_generated=verdict.is_ai_generated,
        confidence=verdict.confidence, processing_time=elapsed,
        algorithm_version=verdict.algorithm_version, summary=verdict.summary, methods=rows)
    doc = build_metadata_document(
        result_id=result_id, upload_id=upload_id, user_id=upload["user_id"],
        file_info=manifest["file_info"], results=by_method, verdict=verdict,
        heatmap_path=heatmap_key, anomalies=anomalies)
    # Only what stays: the intermediates (crop, manifest) are released below.
    doc.blob_keys = {k: v for k, v in {
        "original": manifest["original_key"], "thumbnail": manifest["thumbnail_key"],
        "heatmap": heatmap_key, **_picture_keys({m: r.details for m, r in by_method.items()}),
    }.items() if v}
    earlier = await storage.documents.get_detection_metadata(result_id)
    if earlier is not None:
        doc.created_at = earlier.created_at
        doc.history = list(earlier.history)
    if previous is not None and _aware(previous["detection_date"]) < started:
        # A new run (rescore or retry), not a redelivered aggregate: keep what it replaces.
        doc.history.append(_history_entry(previous, earlier))
    metadata_id = await storage.documents.upsert_detection_metadata(doc)
    await repo.finish(storage.engine, upload_id=upload_id, result_id=result_id,
                      metadata_id=metadata_id)
    await results.invalidate(storage, upload_id)  # a new result: drop the cached one
    await _release_intermediates(storage, upload_id)
    return {"upload_id": upload_id, "result_id": result_id,
            "is_ai_generated": verdict.is_ai_generated, "confidence": verdict.confidence}


async def _release_intermediates(storage: Storage, upload_id: int) -> None:
    """The canvas is over: its intermediates go (a failure leaves them to the sweep)."""
    try:
        await blobrefs.release_intermediates(storage, upload_id)
    except Exception as exc:  # noqa: BLE001 - the verdict is stored; the sweep retries this
        log.warning("could not release the intermediates of upload %s: %s: %s", upload_id,
                    type(exc).__name__, exc, extra={"upload_id": upload_id})


def _aware(when: datetime | None) -> datetime:
    if when is None:
        return datetime.min.replace(tzinfo=UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _history_entry(previous: dict, doc) -> dict:
    """The verdict a new run replaces, as kept in the document's ``history``."""
    factors = doc.aggregated_results.contributing_factors if doc is not None else []
    return {
        "algorithm_version": previous["algorithm_version"],
        "is_ai_generated": previous["is_ai_generated"],
        "confidence_score": float(previous["confidence_score"]),
        "result_summary": previous["result_summary"],
        "detection_date": _aware(previous["detection_date"]).isoformat(),
        "methods": previous["methods"],
        "contributing_factors": [f.model_dump(mode="json") for f in factors],
        "replaced_at": datetime.now(UTC).isoformat(),
    }


async def run_all(storage: Storage, settings: Settings, upload_id: int) -> None:
    """The whole canvas in one process, for the embedded default."""
    manifest_key, methods = await prepare(storage, settings, upload_id)
    if manifest_key is None:
        return
    results = []
    for method in methods:
        try:
            results.append((await detect(storage, settings, upload_id, method, manifest_key))
                           .model_dump(mode="json"))
        except Exception as exc:  # noqa: BLE001 - one broken method never loses the verdict
            results.append(error_result(method, exc).model_dump(mode="json"))
    await aggregate(storage, settings, upload_id, manifest_key, results)


async def run_all_or_fail(storage: Storage, settings: Settings, upload_id: int) -> None:
    """``run_all`` for in-process callers (scan, the embedded API, retry/rescore): a crash is
    recorded on the upload as its failure, never raised, so one file never loses a batch."""
    try:
        await run_all(storage, settings, upload_id)
    except Exception as exc:
        log.exception("detection failed", extra={"upload_id": upload_id})
        await repo.mark_failed(storage.engine, upload_id, f"{type(exc).__name__}: {exc}")
        await _release_intermediates(storage, upload_id)
