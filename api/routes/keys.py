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
from schemas.text import clean_text
from storage import accounts, audit, login_throttle

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
    # Count the attempt per (username, client IP) and per client IP before the password is
    # checked, with growing delays past the free failures; the counts live in the database,
    # so every API process sees them. Never per username alone: nobody can lock anyone out.
    subjects = login_throttle.subjects_for(
        clean_text(credentials.username, limit=150).lower(),
        client_ip(request.scope, settings.trust_forwarded_for) or "-",
        per_pair=settings.login_max_failures, per_client=settings.login_max_failures_per_ip)
    wait = await login_throttle.reserve(engine, subjects,
                                        window_seconds=settings.login_window_seconds,
                                        max_delay=settings.login_max_delay)
    if wait is not None:
        await audit.record_now(engine, audit.Actor("anonymous", source=request_ip(request)),
                               "login", target=f"user:{clean_text(credentials.username)[:100]}",
                               outcome="denied", detail={"reason": "too_many_failed_logins"})
        raise ApiError(429, "too_many_failed_logins",
                       f"too many failed logins; retry after {wait}s",
                       headers={"Retry-After": str(wait)})
    user = await accounts.login(engine, credentials.username, credentials.password,
                                source=request_ip(request))
    if user is None:
        # Same answer for an unknown user and a wrong password.
        raise unauthorized
    await login_throttle.forgive(engine, list(subjects))
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
