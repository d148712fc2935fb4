"""Who is calling: the ``X-API-Key`` dependency every ``/v1`` route but login uses, and the
HTTP Basic credentials the login route (``POST /v1/keys``) reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPBasic
from pydantic import BaseModel

from api.errors import ApiError, ErrorBody
from storage import accounts

_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                           description="an API key from `skygate keys create`")
basic = HTTPBasic(auto_error=False)

AUTH_ERRORS = {401: {"model": ErrorBody, "description": "missing, unknown, expired or revoked key"},
               429: {"model": ErrorBody, "description": "request limit reached (see Retry-After)"}}
"""The answers of ``caller`` for the ``responses`` of every route that depends on it."""


class Caller(BaseModel):
    user_id: int
    key_id: int


async def caller(request: Request,
                 api_key: Annotated[str | None, Depends(_key_header)] = None) -> Caller:
    """Authenticate the X-API-Key header and count the request against the key's quota."""
    if not api_key:
        raise ApiError(401, "missing_api_key", "send your API key in the X-API-Key header",
                       headers={"WWW-Authenticate": "ApiKey"})
    settings = request.app.state.settings
    check = await accounts.check_key(request.app.state.storage.engine, api_key,
                                     period_seconds=settings.quota_period_seconds)
    request.state.user_id, request.state.key_id = check.user_id, check.key_id
    if check.code == "rate_limited":
        raise ApiError(429, check.code, check.message,
                       headers={"Retry-After": str(check.retry_after),
                                "X-RateLimit-Limit": str(check.limit),
                                "X-RateLimit-Remaining": "0"})
    if check.code:
        raise ApiError(401, check.code, check.message, headers={"WWW-Authenticate": "ApiKey"})
    return Caller(user_id=check.user_id, key_id=check.key_id)


CallerDep = Annotated[Caller, Depends(caller)]
