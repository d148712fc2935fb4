"""``POST /v1/keys``: log in with username and password (HTTP Basic), get a new API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPBasicCredentials

from api.auth import basic, needs, request_ip
from api.errors import ApiError, ErrorBody
from api.models import NewKey, NewKeyRequest
from api.usage import client_ip
from schemas.clock import aware
from service import accounts
from storage import audit

router = APIRouter()


@router.post("/keys", tags=["keys"], status_code=201, response_model=NewKey,
             summary="Log in with username and password (HTTP Basic) and get a new API key",
             **needs("member", "Any active account; the key carries the account's role. "
                               "Logins, failed ones too, are audited."),
             responses={401: {"model": ErrorBody, "description": "wrong username or password"},
                        429: {"model": ErrorBody,
                              "description": "too many failed logins from this client: "
                                             "retry after the delay (Retry-After)"}})
async def create_key(request: Request, body: NewKeyRequest,
                     credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)] = None):
    engine = request.app.state.storage.engine
    settings = request.app.state.settings
    unauthorized = ApiError(401, "invalid_credentials", "wrong username or password",
                            headers={"WWW-Authenticate": 'Basic realm="skygate"'})
    if credentials is None:
        raise unauthorized
    try:
        user = await accounts.throttled_login(
            engine, settings, credentials.username, credentials.password,
            client=client_ip(request.scope, settings.trust_forwarded_for) or "-",
            source=request_ip(request))
    except accounts.LoginThrottled as exc:
        raise ApiError(429, "too_many_failed_logins", str(exc),
                       headers={"Retry-After": str(exc.retry_after)}) from None
    if user is None:
        # Same answer for an unknown user and a wrong password.
        raise unauthorized
    request.state.user_id = user["user_id"]
    expires = body.expires_at
    expires = aware(expires)
    actor = audit.Actor.user(user["username"], user_id=user["user_id"],
                             source=request_ip(request))
    key, key_id = await accounts.create_key(engine, username=user["username"], name=body.name,
                                            limit=body.request_limit, expires_at=expires,
                                            actor=actor)
    request.state.key_id = key_id
    return NewKey(key_id=key_id, api_key=key, name=body.name, request_limit=body.request_limit,
                  expires_at=expires)
