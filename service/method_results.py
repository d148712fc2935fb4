"""Small facts about method results shared by detection and aggregate: the result of a row
with no registered method, of a method that raised, and where each method's pictures are."""

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
