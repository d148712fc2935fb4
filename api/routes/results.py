"""``GET /v1/uploads/{upload_id}/result``: the verdict, per-method results and the
detection_metadata document of a done upload, through the results cache
(service/results.py) when one is configured."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.auth import AUTH_ERRORS, CallerDep, needs
from api.errors import ErrorBody
from api.models import ResultOut
from api.routes.common import NOT_FOUND, UploadId, finished_result, own_upload
from api.waiting import FINISHED, Wait, until_finished
from service import results

router = APIRouter(tags=["uploads"])


@router.get("/uploads/{upload_id}/result", response_model=ResultOut,
            name="get_result", operation_id="results_get",
            summary="The verdict, per-method results and metadata document "
                    "(`?wait=N`: long-poll up to N ≤ 30 s)",
            **needs("member", "Members read their own uploads; operators and admins any."),
            responses={**AUTH_ERRORS, **NOT_FOUND,
                       409: {"model": ErrorBody, "description": "not ready yet, or failed"}})
async def get_result(request: Request, who: CallerDep, upload_id: UploadId, wait: Wait = 0):
    # The owner check reads the upload row from SQL on every request, before any cache.
    upload = await own_upload(request, who, upload_id, any_owner=True)
    if wait and upload["status"] not in FINISHED:  # long-poll: the verdict, or 409 later
        await until_finished(request, [upload_id], wait)
        upload = await own_upload(request, who, upload_id, any_owner=True)
    storage = request.app.state.storage
    found = await results.read_result(storage, upload)
    if found is None:  # not done or failed (409), or it finished meanwhile
        _, result, doc = await finished_result(request, who, upload_id, any_owner=True)
        found = results.result_body(upload_id, result, doc)
    return ResultOut(
        **found.body,
        ela_url=(str(request.url_for("get_ela", upload_id=upload_id)) if found.has_ela
                 else None),
        heatmap_url=(str(request.url_for("get_heatmap", upload_id=upload_id))
                     if found.has_heatmap else None),
        forensic_heatmap_url=(
            str(request.url_for("get_forensic_heatmap", upload_id=upload_id))
            if found.has_forensic_heatmap else None))
