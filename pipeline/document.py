"""Build the seed's ``detection_metadata`` document from the methods' outputs.

Each registered method contributes its own section (``Method.document_section``); this module
adds what belongs to the whole result (file info, anomalies, the aggregated verdict).
"""

from __future__ import annotations

from pipeline.methods.base import ON_REQUEST
from pipeline.methods.registry import REGISTRY
from schemas.documents import (
    AggregatedResults,
    DetectedAnomaly,
    DetectionMetadata,
    Dimensions,
    FileInfo,
    VisualAnomalies,
)
from schemas.results import MethodResult


def waiting(details: dict | None) -> bool:
    """Whether a method result's ``details`` say its evidence is left for a request
    (``pipeline.methods.base.left_for_later``; service/evidence.py computes it)."""
    return bool(details) and details.get("evidence") == ON_REQUEST


def waiting_in(doc: DetectionMetadata | None) -> bool:
    """Whether some method of this document still waits for its evidence to be computed."""
    return doc is not None and waiting_in_dump(doc.model_dump(mode="json",
                                                              exclude={"blob_keys"}))


def waiting_in_dump(node) -> bool:
    """:func:`waiting_in` of a document already dumped to JSON types (or any part of one)."""
    if isinstance(node, dict):
        return waiting(node.get("details")) or any(waiting_in_dump(v) for v in node.values())
    if isinstance(node, list):
        return any(waiting_in_dump(v) for v in node)
    return False


def merge_sections(into: dict, section: dict) -> dict:
    """Merge a partial document into ``into``: dicts recursively, lists concatenated."""
    for key, value in section.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge_sections(into[key], value)
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = into[key] + value
        else:
            into[key] = dict(value) if isinstance(value, dict) else value
    return into


def build_metadata_document(*, result_id: int, upload_id: int, user_id: int | None,
                            file_info: dict, results: dict[str, MethodResult], verdict,
                            heatmap_path: str | None, anomalies: list[dict],
                            heatmap_source: str | None = None,
                            forensic_heatmap_path: str | None = None) -> DetectionMetadata:
    parts: dict = {"model_results": []}
    for name, method in REGISTRY.items():
        merge_sections(parts, method.document_section(results.get(name)))
    return DetectionMetadata(
        result_id=result_id, upload_id=upload_id, user_id=user_id,
        file_info=FileInfo(
            dimensions=Dimensions(width=file_info.get("width"), height=file_info.get("height")),
            color_space=file_info.get("color_space"), bit_depth=file_info.get("bit_depth"),
            compression=file_info.get("compression"),
            file_type=file_info.get("file_type"), jpeg_quality=file_info.get("jpeg_quality"),
        ),
        visual_anomalies=VisualAnomalies(
            detected_anomalies=[DetectedAnomaly(**a) for a in anomalies],
            heatmap_path=heatmap_path, heatmap_source=heatmap_source,
            forensic_heatmap_path=forensic_heatmap_path,
        ),
        aggregated_results=AggregatedResults(
            is_ai_generated=verdict.is_ai_generated, confidence_score=verdict.confidence,
            contributing_factors=verdict.contributing_factors,
            ai_probability=verdict.ai_probability, summary=verdict.summary,
            algorithm_version=verdict.algorithm_version,
        ),
        **parts,
    )
