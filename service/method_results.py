"""Small facts about method results shared by detection, aggregate and evidence: the result
of a row with no registered method, of a method that raised, where each method's pictures
are, the row a result is stored as, and the block maps the forensic heatmap combines."""

from __future__ import annotations

from pipeline.methods.registry import REGISTRY
from schemas.results import MethodResult
from schemas.text import public_reason


def picture_keys(by_method: dict[str, dict]) -> dict[str, str | None]:
    """Picture kind → blob key, from each method's result details."""
    return {kind: (by_method.get(name) or {}).get(detail_key)
            for name, method in REGISTRY.items()
            for kind, detail_key in method.pictures.items()}


def unimplemented(name: str) -> MethodResult:
    """The result of an active ``detection_methods`` row with no registered method."""
    return MethodResult(method=name, status="skipped",
                        details={"abstain_reason": f"no implementation for method {name!r}"})


def error_result(method: str, exc: BaseException) -> MethodResult:
    # Stored and shown to API users: no server path, no errno tag (schemas.text).
    return MethodResult(method=method, status="error", error=public_reason(exc)[:1000])


def method_row(method_id: int, result: MethodResult) -> dict:
    """The ``method_results`` row (storage.method_rows) a method's result is stored as."""
    return {"method_id": method_id, "is_ai_generated": result.is_ai_generated,
            "confidence": result.confidence, "processing_time": result.processing_time,
            "result_details": {"status": result.status, "error": result.error,
                               "ai_probability": result.ai_probability, **result.details}}


def heatmap_block_maps(results: dict[str, MethodResult]) -> dict:
    """The block maps of the methods that feed the combined (forensic) heatmap."""
    return {name: r.block_map for name, r in results.items()
            if r.block_map and name in REGISTRY and REGISTRY[name].in_heatmap}
