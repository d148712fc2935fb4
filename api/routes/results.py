"""``GET /v1/uploads/{upload_id}/result``: the verdict, per-method results and the
detection_metadata document of a done upload."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.auth import AUTH_ERRORS, CallerDep
from api.errors import ErrorBody
from api.models import MethodOut, ResultOut
from api.routes.common import NOT_FOUND, UploadId, finished_result
from schemas.records import verdict_word

router = APIRouter(tags=["uploads"])


@router.get("/uploads/{upload_id}/result", response_model=ResultOut,
            name="get_result", summary="The verdict, per-method results and metadata document",
            responses={**AUTH_ERRORS, **NOT_FOUND,
                       409: {"model": ErrorBody, "description": "not ready yet, or failed"}})
async def get_result(request: Request, who: CallerDep, upload_id: UploadId):
    _, result, doc = await finished_result(request, who, upload_id)
    methods = {name: MethodOut(verdict=verdict_word(m["is_ai_generated"]), **m)
               for name, m in result["methods"].items()}
    ela_key = doc.pixel_analysis.ela_results.ela_image_path if doc else None
    heatmap_key = doc.visual_anomalies.heatmap_path if doc else None
    return ResultOut(
        upload_id=upload_id, result_id=result["result_id"],
        verdict=verdict_word(result["is_ai_generated"]),
        is_ai_generated=result["is_ai_generated"],
        confidence=float(result["confidence_score"]), summary=result["result_summary"],
        algorithm_version=result["algorithm_version"],
        detection_date=result["detection_date"],
        processing_time=float(result["processing_time"]), methods=methods,
        metadata=doc.model_dump(mode="json", exclude={"blob_keys"}) if doc else None,
        ela_url=str(request.url_for("get_ela", upload_id=upload_id)) if ela_key else None,
        heatmap_url=(str(request.url_for("get_heatmap", upload_id=upload_id)) if heatmap_key
                     else None))
