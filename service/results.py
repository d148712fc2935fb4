"""Finished results, read through the Redis cache when there is one (``Storage.cache``).

``read_result``: a done upload's verdict, per-method results and metadata document, from the
cache, else from SQL + the document store (and then cached). ``storage.cache.forget_result``
forgets an upload's entry; the aggregate calls it after saving a new result (rescore, retry, a
redelivery), and ``storage.removal.delete_upload`` after removing an upload.

Keys (``storage.cache.result_key``). One entry per upload, ``skygate:result:{upload_id}``,
holding the body and its fingerprint: the upload id, result id, the result's algorithm
version, the running code's algorithm version, the detection date, the metadata document id
and the entry format. The caller passes the upload row it has just read from SQL (the owner
check, which always runs first): an entry whose fingerprint differs from that row's is a
miss. Every new aggregate writes a new detection date, so an entry can never outlive the
result it was made from, even when an invalidation was lost (Redis down at that moment).

Races. ``skygate:result-gen:{upload_id}`` (``result_generation_key``) counts invalidations.
A reader notes it before reading the database and its write is undone if it moved meanwhile
(``Cache.set_if``): a read that began before an aggregate finished never leaves its older
document in the cache.

Redis failures never fail a read: ``storage/cache.py`` answers "not cached", logs once, and
the database answers. Without a cache (the embedded default) every read is the database's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from pipeline.document import waiting, waiting_in_dump
from pipeline.ensemble import ALGORITHM_VERSION
from pipeline.explanation import explain
from schemas.records import verdict_word
from storage import repository as repo
from storage.cache import result_generation_key, result_key
from storage.context import Storage

# Bump when the cached body's shape changes: older entries then miss.
CACHE_FORMAT = 4  # 2: ai_probability at the top; 3: the explanation; 4: evidence on request


@dataclass
class FinishedResult:
    """A result body (``api.models.ResultOut`` without the per-request picture URLs) and
    which pictures it has (or makes on their first request: service.evidence)."""

    body: dict
    has_ela: bool
    has_heatmap: bool
    has_forensic_heatmap: bool = False
    cached: bool = False


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def fingerprint(row: dict) -> str:
    """What identifies one stored result of an upload (a row of ``listing.list_uploads`` or of
    ``repo.result_for_upload``: both carry these columns)."""
    return "|".join(str(part) for part in (
        CACHE_FORMAT, row["upload_id"], row["result_id"], row["algorithm_version"],
        ALGORITHM_VERSION, _iso(row["detection_date"]), row["metadata_id"]))


def ai_probability(result: dict, doc) -> float | None:
    """The ensemble's P(AI), from the document; without one, a decided verdict's confidence
    is P(its side) (an undecided one has none)."""
    p = getattr(doc.aggregated_results, "ai_probability", None) if doc is not None else None
    if p is None and result["is_ai_generated"] is not None:
        c = float(result["confidence_score"])
        p = c if result["is_ai_generated"] else 1.0 - c
    return None if p is None else round(min(1.0, max(0.0, float(p))), 4)


def result_body(upload_id: int, result: dict, doc) -> FinishedResult:
    """The JSON body of ``repo.result_for_upload``'s row and its metadata document."""
    methods = {name: {"verdict": verdict_word(m["is_ai_generated"]), **m}
               for name, m in result["methods"].items()}
    body = {
        "upload_id": upload_id, "result_id": result["result_id"],
        "verdict": verdict_word(result["is_ai_generated"]),
        "is_ai_generated": result["is_ai_generated"],
        "confidence": float(result["confidence_score"]), "summary": result["result_summary"],
        "ai_probability": (p := ai_probability(result, doc)),
        "algorithm_version": result["algorithm_version"],
        "detection_date": _iso(result["detection_date"]),
        "processing_time": float(result["processing_time"]), "methods": methods,
        "explanation": explain(doc, is_ai_generated=result["is_ai_generated"], ai_probability=p,
                               algorithm_version=result["algorithm_version"]),
        "metadata": doc.model_dump(mode="json", exclude={"blob_keys"}) if doc else None,
    }
    # The forensic pictures are made when first asked for (read off the dump just made).
    later = waiting_in_dump(body["metadata"])
    return FinishedResult(
        body=body,
        has_ela=bool(doc and (doc.pixel_analysis.ela_results.ela_image_path
                              or waiting(doc.pixel_analysis.ela_results.details))),
        has_heatmap=bool(doc and (doc.visual_anomalies.heatmap_path or later)),
        has_forensic_heatmap=bool(doc and (doc.visual_anomalies.forensic_heatmap_path
                                           or later)))


async def read_result(storage: Storage, upload: dict) -> FinishedResult | None:
    """The finished result of ``upload`` (a row the caller has just read, owner-checked,
    from ``listing.list_uploads``); None while it is not done (or failed)."""
    if upload["status"] != "done" or upload.get("result_id") is None:
        return None
    upload_id = upload["upload_id"]
    expected = fingerprint(upload)
    cache, generation = storage.cache, None
    if cache is not None:
        raw, generation = await cache.get(result_key(upload_id),
                                          result_generation_key(upload_id))
        if raw is not None:
            entry = json.loads(raw)
            if entry.get("fingerprint") == expected:
                return FinishedResult(body=entry["body"], has_ela=entry["has_ela"],
                                      has_heatmap=entry["has_heatmap"],
                                      has_forensic_heatmap=entry["has_forensic_heatmap"],
                                      cached=True)
    result = await repo.result_for_upload(storage.engine, upload_id)
    if result is None:
        return None  # deleted or reset meanwhile: the caller's not-ready answer
    doc = await storage.documents.get_detection_metadata(result["result_id"])
    found = result_body(upload_id, result, doc)
    # Cache only what matches the row the caller checked: a result saved between the two
    # reads is served once, not kept.
    if cache is not None and generation is not None and fingerprint(result) == expected:
        entry = {"fingerprint": expected, "body": found.body, "has_ela": found.has_ela,
                 "has_heatmap": found.has_heatmap,
                 "has_forensic_heatmap": found.has_forensic_heatmap}
        await cache.set_if(result_key(upload_id), json.dumps(entry).encode(),
                           guard=result_generation_key(upload_id), expected=generation)
    return found

