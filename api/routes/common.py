"""What the routes of one upload share: its id in the path, finding it among the caller's
own uploads (anyone else's are 404, exactly like ids that do not exist; ``any_owner=True``
lets operators and admins find every upload: the reading routes and delete), and its
finished result."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request

from api.auth import Caller
from api.errors import ApiError, ErrorBody
from storage import listing
from storage import repository as repo

NOT_FOUND = {404: {"model": ErrorBody, "description": "no such upload (or not yours)"}}

# Ids are PostgreSQL integers: anything outside is simply not found, never a server error.
UploadId = Annotated[int, Path(ge=1, le=2_147_483_647)]


async def own_upload(request: Request, who: Caller, upload_id: int, *,
                     any_owner: bool = False) -> dict:
    owner = ... if any_owner and who.reads_all else who.user_id
    rows, _ = await listing.list_uploads(request.app.state.storage.engine, owner=owner,
                                         upload_id=upload_id, limit=1)
    if not rows:
        raise ApiError(404, "upload_not_found", f"no upload {upload_id}")
    return rows[0]


async def finished_result(request: Request, who: Caller, upload_id: int, *,
                          any_owner: bool = False):
    """``(upload, result, document)`` of a done upload; 409 while it is not done."""
    upload = await own_upload(request, who, upload_id, any_owner=any_owner)
    storage = request.app.state.storage
    if upload["status"] == "failed":
        raise ApiError(409, "upload_failed", f"upload {upload_id} failed: {upload['error']}")
    result = await repo.result_for_upload(storage.engine, upload_id)
    if result is None or upload["status"] != "done":
        raise ApiError(409, "not_ready", f"upload {upload_id} is {upload['status']}; "
                                         "poll its status_url",
                       headers={"Retry-After": "2"})
    doc = await storage.documents.get_detection_metadata(result["result_id"])
    return upload, result, doc
