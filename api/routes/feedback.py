"""``/v1/uploads/{upload_id}/feedback``: the owner says whether the image is really AI or
real. One feedback per (upload, user): a second POST replaces the first. Stored with the
model's verdict and P(AI) of that moment (storage/feedback.py); `skygate feedback export`
turns them into a labelled set for `skygate eval` and scripts/train_model.py."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.auth import AUTH_ERRORS, CallerDep, needs
from api.errors import ApiError, ErrorBody
from api.models import FeedbackIn, FeedbackOut
from api.routes.common import NOT_FOUND, UploadId, own_upload
from storage import feedback

router = APIRouter(tags=["feedback"])


def feedback_out(row: dict) -> FeedbackOut:
    return FeedbackOut(upload_id=row["upload_id"], label=row["label"], note=row["note"],
                       verdict=row["verdict"], ai_probability=row["ai_probability"],
                       created_at=row["created_at"], updated_at=row["updated_at"])


@router.post("/uploads/{upload_id}/feedback", status_code=201, response_model=FeedbackOut,
             summary="Say whether your upload is really AI-generated or real (replaces your "
                     "earlier feedback on it)",
             responses={**AUTH_ERRORS, **NOT_FOUND,
                        422: {"model": ErrorBody, "description": "label not ai or real, or "
                                                                 "note over 1000 characters"}},
             **needs("member", "Only the upload's owner, whatever their role."))
async def give_feedback(request: Request, who: CallerDep, upload_id: UploadId,
                        body: FeedbackIn):
    await own_upload(request, who, upload_id)
    storage = request.app.state.storage
    verdict, p = await feedback.model_said(storage, upload_id)
    row = await feedback.save(storage.engine, upload_id=upload_id, user_id=who.user_id,
                              label=body.label, note=body.note, verdict=verdict,
                              ai_probability=p)
    return feedback_out(row)


@router.get("/uploads/{upload_id}/feedback", response_model=FeedbackOut,
            summary="Your feedback on your upload",
            responses={**AUTH_ERRORS,
                       404: {"model": ErrorBody, "description": "no such upload (or not "
                                                                "yours), or no feedback yet"}},
            **needs("member", "Only the upload's owner, whatever their role."))
async def read_feedback(request: Request, who: CallerDep, upload_id: UploadId):
    await own_upload(request, who, upload_id)
    row = await feedback.get(request.app.state.storage.engine, upload_id=upload_id,
                             user_id=who.user_id)
    if row is None:
        raise ApiError(404, "feedback_not_found", f"no feedback on upload {upload_id} yet")
    return feedback_out(row)
