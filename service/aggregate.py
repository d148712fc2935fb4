"""Aggregate: the weighted verdict of one upload's method results, its heatmap, the rows in
one SQL transaction and the document; safe to repeat (a redelivered aggregate answers with
the stored outcome), and clean when the upload was deleted while it was in flight."""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image

from pipeline import ensemble
from pipeline.attribution import view_box
from pipeline.calibration import calibration_usable
from pipeline.document import build_metadata_document
from pipeline.heatmap import (
    anomalies_from_map,
    combine_block_maps,
    render_attribution,
    render_heatmap,
)
from pipeline.imaging import NEUTRAL_SIDE
from pipeline.methods.registry import REGISTRY
from schemas.clock import aware, utcnow
from schemas.records import verdict_word
from schemas.results import MethodResult
from schemas.settings import Settings
from service import canvas, webhooks
from service.manifest import Manifest
from service.method_results import (
    heatmap_block_maps,
    method_row,
    picture_keys,
    unimplemented,
)
from storage import blobrefs
from storage import repository as repo
from storage.blobs import BlobNotFound
from storage.cache import forget_result
from storage.context import Storage
from storage.documents.base import DuplicateDocumentError

log = logging.getLogger("skygate.pipeline")


async def aggregate(storage: Storage, settings: Settings, upload_id: int, manifest_key: str,
                    raw_results: list, *, manifest: Manifest | None = None,
                    upload: dict | None = None) -> dict:
    """Weighted verdict, heatmap, one SQL transaction, the document; safe to repeat.

    An upload deleted while it was in flight is abandoned cleanly: nothing is written, and
    the blobs and the document this run made are removed again. ``manifest``: the embedded
    runner's, from the prepare it just ran (not read back from the blob store). ``upload``:
    its row, as the caller just read it (else read here).
    """
    try:
        upload = upload or await repo.get_upload(storage.engine, upload_id)
        if upload is None:
            raise blobrefs.UploadGone(upload_id)
        out, finished = await _aggregate(storage, settings, upload, manifest_key, raw_results,
                                         manifest=manifest)
        # finish found the upload once all was written: a delete from then on removes the
        # document and the blobs itself (storage.removal), so no need to look again.
        if finished or await blobrefs.upload_exists(storage, upload_id):
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
    keys |= set(picture_keys(details).values())
    try:
        manifest = Manifest.from_json(await storage.blobs.aget(manifest_key))
        keys |= {manifest.native_key, manifest.thumbnail_key}
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
                               ) -> tuple[Manifest | None, dict | None]:
    """(the manifest, None), or (None, the stored outcome) for an aggregate redelivered after
    the first one finished and released the manifest; a manifest missing otherwise raises."""
    try:
        return Manifest.from_json(await storage.blobs.aget(manifest_key)), None
    except BlobNotFound:
        finished = await _finished(storage, upload_id)
        if finished is None:
            # Superseded: the upload was deleted (its id maybe given to a newer upload) or
            # another run of it released this canvas. Writing nothing is safe: an unfinished
            # upload is re-sent by the recovery sweep, never marked failed by a stale run.
            log.warning("manifest %s of upload %s is gone: this canvas was superseded, "
                        "nothing written", manifest_key, upload_id,
                        extra={"upload_id": upload_id})
            return None, {"upload_id": upload_id, "status": "superseded"}
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


async def _aggregate(storage: Storage, settings: Settings, upload: dict, manifest_key: str,
                     raw_results: list, *, manifest: Manifest | None) -> tuple[dict, bool]:
    """(the outcome, whether this run's finish found the upload)."""
    upload_id = upload["upload_id"]
    if manifest is None:
        manifest, finished = await _manifest_or_outcome(storage, upload_id, manifest_key)
        if finished is not None:
            return finished, False
    if not canvas.same_upload(upload, manifest):
        # Deleted in flight and its id given to a newer upload: write nothing on it.
        log.info("upload %s was deleted during detection; its id names another upload now",
                 upload_id, extra={"upload_id": upload_id})
        return {"upload_id": upload_id, "status": "deleted"}, False
    active = (manifest.methods if manifest.methods is not None
              else await repo.active_methods(storage.engine))
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

    pictures = await _heatmaps(storage, upload_id, manifest, by_method, weights)

    # A deletion from here on fails save_results (the row is gone) or the check after it.
    started = aware(upload["processing_started_at"]) or utcnow()
    elapsed = max(0.0, (utcnow() - started).total_seconds())
    rows = [method_row(active[name]["method_id"], r)
            for name, r in by_method.items() if name in active]
    previous = await repo.result_for_upload(storage.engine, upload_id)
    result_id = await repo.save_results(
        storage.engine, upload_id=upload_id, is_ai_generated=verdict.is_ai_generated,
        confidence=verdict.confidence, processing_time=elapsed,
        algorithm_version=verdict.algorithm_version, summary=verdict.summary, methods=rows)
    doc = build_metadata_document(
        result_id=result_id, upload_id=upload_id, user_id=upload["user_id"],
        file_info=manifest.file_info, results=by_method, verdict=verdict,
        heatmap_path=pictures["heatmap"], anomalies=pictures["anomalies"],
        heatmap_source=pictures["source"], forensic_heatmap_path=pictures["forensic_heatmap"])
    # Only what stays: the intermediates (crop, manifest) are released below.
    doc.blob_keys = {k: v for k, v in {
        "original": manifest.original_key, "thumbnail": manifest.thumbnail_key,
        "heatmap": pictures["heatmap"], "forensic_heatmap": pictures["forensic_heatmap"],
        **picture_keys({m: r.details for m, r in by_method.items()}),
    }.items() if v}
    metadata_id = await _write_document(storage, doc, previous, started)
    found = await repo.finish(storage.engine, upload_id=upload_id, result_id=result_id,
                      metadata_id=metadata_id, event=_event(result_id, verdict),
                      anonymous=upload["user_id"] is None)
    if upload["user_id"] is not None:  # no owner, no webhook events (webhooks.record_event)
        await webhooks.announce(storage, settings, upload_id)  # after the verdict committed
    await forget_result(storage.cache, upload_id)  # a new result: drop the cached one
    await canvas.release(storage, upload_id, settings=settings, manifest=manifest)
    return {"upload_id": upload_id, "result_id": result_id,
            "is_ai_generated": verdict.is_ai_generated, "confidence": verdict.confidence}, found


async def _write_document(storage: Storage, doc, previous: dict | None, started) -> str:
    """Write the result's document: a new one for a first verdict (no read before: a new
    result id has none), else over the earlier one, keeping its creation time and history."""
    if previous is None:
        try:
            return await storage.documents.insert_detection_metadata(doc)
        except DuplicateDocumentError:
            pass  # a document a deleted upload left under a reused result id: as below
    earlier = await storage.documents.get_detection_metadata(doc.result_id)
    if earlier is not None:
        doc.created_at = earlier.created_at
        doc.history = list(earlier.history)
    if previous is not None and (aware(previous["detection_date"]) or started) < started:
        # A new run (rescore or retry), not a redelivered aggregate: keep what it replaces.
        doc.history.append(_history_entry(previous, earlier))
    return await storage.documents.upsert_detection_metadata(doc)


def _event(result_id: int, verdict: ensemble.Verdict) -> dict:
    """The verdict summary of the upload's ``upload.done`` webhook event."""
    return {"result_id": result_id, "verdict": verdict_word(verdict.is_ai_generated).value,
            "ai_probability": round(float(verdict.ai_probability), 4),
            "confidence": round(float(verdict.confidence), 4),
            "algorithm_version": verdict.algorithm_version}


async def _heatmaps(storage: Storage, upload_id: int, manifest: Manifest,
                    by_method: dict[str, MethodResult], weights: dict[str, float]) -> dict:
    """The pictures of why: the voting model's map as ``heatmap`` (when the model voted and
    drew one), the forensic methods' combined map as ``forensic_heatmap`` (evidence only:
    their weight may be 0), and ``anomalies`` from the forensic methods that vote with a
    usable calibration only, at the confidence that calibration gives."""
    info = manifest.file_info
    owner = (manifest.original_key, manifest.user_id)  # written only while still this upload
    out: dict = {"heatmap": None, "forensic_heatmap": None, "source": None, "anomalies": []}
    thumb = None
    model = by_method.get("model")
    attribution = (model.details.get("attribution") if model is not None else None) or {}
    if (model is not None and not model.abstained and weights.get("model", 0) > 0
            and attribution.get("delta_log_odds")):
        thumb = _thumbnail(storage, manifest)
        scale = thumb.shape[1] / max(1, int(info["width"]))
        box = {k: round(v * scale)
               for k, v in view_box((info["height"], info["width"]), NEUTRAL_SIDE).items()}
        png = render_attribution(np.asarray(attribution["delta_log_odds"]), thumb, box)
        out["heatmap"] = await blobrefs.store(storage, upload_id, png, suffix=".png",
                                              kind="heatmap", owner=owner)
        out["source"] = "model"
    maps = heatmap_block_maps(by_method)
    combined = combine_block_maps(maps)
    if combined is not None:
        thumb = _thumbnail(storage, manifest) if thumb is None else thumb
        out["forensic_heatmap"] = await blobrefs.store(
            storage, upload_id, render_heatmap(combined, thumb), suffix=".png",
            kind="forensic_heatmap", owner=owner)
        if out["heatmap"] is None:  # no model map: the forensic one, labelled as such
            out["heatmap"], out["source"] = out["forensic_heatmap"], "forensic"
    voting = {m: by_method[m] for m in maps
              if weights.get(m, 0) > 0 and not by_method[m].abstained and calibration_usable(m)}
    if voting:
        confidence = float(np.mean([r.ai_probability for r in voting.values()]))
        out["anomalies"] = anomalies_from_map(
            combine_block_maps({m: maps[m] for m in voting}), (info["height"], info["width"]),
            confidence=confidence)
    return out


def _thumbnail(storage: Storage, manifest: Manifest) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(storage.blobs.get(manifest.thumbnail_key)))
                      .convert("RGB"))


def _history_entry(previous: dict, doc) -> dict:
    """The verdict a new run replaces, as kept in the document's ``history``."""
    factors = doc.aggregated_results.contributing_factors if doc is not None else []
    return {
        "algorithm_version": previous["algorithm_version"],
        "is_ai_generated": previous["is_ai_generated"],
        "confidence_score": float(previous["confidence_score"]),
        "result_summary": previous["result_summary"],
        "detection_date": aware(previous["detection_date"]).isoformat(),
        "methods": previous["methods"],
        "contributing_factors": [f.model_dump(mode="json") for f in factors],
        "replaced_at": utcnow().isoformat(),
    }
