"""``GET /v1/uploads/{upload_id}/ela.png``, ``.../heatmap.png`` (the voting model's map) and
``.../forensic-heatmap.png`` (the forensic methods' map, evidence only): the pictures of a
done upload, read from the blob store."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.auth import AUTH_ERRORS, Caller, CallerDep, needs
from api.errors import ApiError
from api.routes.common import NOT_FOUND, UploadId, finished_result
from pipeline.decode import InvalidImage
from pipeline.document import waiting_in
from schemas.text import public_reason
from service import evidence
from storage.blobs import BlobNotFound

router = APIRouter(tags=["uploads"])

_READ = "Members read their own uploads; operators and admins any."
_PNG = {200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
              "description": "a PNG image"}}


def _key(doc, which: str) -> str | None:
    if doc is None:
        return None
    return {"ela": doc.pixel_analysis.ela_results.ela_image_path,
            "heatmap": doc.visual_anomalies.heatmap_path,
            "forensic_heatmap": doc.visual_anomalies.forensic_heatmap_path}[which]


async def _picture(request: Request, who: Caller, upload_id: int, which: str) -> Response:
    _, _, doc = await finished_result(request, who, upload_id, any_owner=True)
    key = _key(doc, which)
    if not key and waiting_in(doc):
        # The evidence-only methods left their pictures for this first request.
        storage, settings = request.app.state.storage, request.app.state.settings
        try:
            await evidence.complete(storage, settings, upload_id)
        except (LookupError, InvalidImage) as exc:
            # Deleted or judged again meanwhile, or its original gone or unreadable now.
            raise ApiError(404, f"{which}_not_available",
                           f"the {which} image of upload {upload_id} cannot be made: "
                           f"{public_reason(exc)}") from None
        _, _, doc = await finished_result(request, who, upload_id, any_owner=True)
        key = _key(doc, which)
    if not key:
        raise ApiError(404, f"{which}_not_available", f"upload {upload_id} has no {which} image")
    try:
        # The async path: an S3 GET (its timeouts and retries) never holds the event loop.
        data = await request.app.state.storage.blobs.aget(key)
    except BlobNotFound:
        raise ApiError(404, f"{which}_not_available",
                       f"the {which} image of upload {upload_id} is gone") from None
    return Response(data, media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/uploads/{upload_id}/ela.png", name="get_ela",
            response_class=Response, summary="The error-level-analysis image",
            **needs("member", _READ),
            responses={**_PNG, **AUTH_ERRORS, **NOT_FOUND})
async def get_ela(request: Request, who: CallerDep, upload_id: UploadId):
    return await _picture(request, who, upload_id, "ela")


@router.get("/uploads/{upload_id}/heatmap.png", name="get_heatmap",
            response_class=Response,
            summary="Where the voting model saw AI (red) or a photograph (blue), with a legend",
            **needs("member", _READ),
            responses={**_PNG, **AUTH_ERRORS, **NOT_FOUND})
async def get_heatmap(request: Request, who: CallerDep, upload_id: UploadId):
    return await _picture(request, who, upload_id, "heatmap")


@router.get("/uploads/{upload_id}/forensic-heatmap.png", name="get_forensic_heatmap",
            response_class=Response,
            summary="The forensic methods' block map (evidence only: they do not vote)",
            **needs("member", _READ),
            responses={**_PNG, **AUTH_ERRORS, **NOT_FOUND})
async def get_forensic_heatmap(request: Request, who: CallerDep, upload_id: UploadId):
    return await _picture(request, who, upload_id, "forensic_heatmap")
