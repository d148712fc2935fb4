"""Who is calling: the ``X-API-Key`` dependency every ``/v1`` route but login uses, the
HTTP Basic credentials the login route (``POST /v1/keys``) reads, and the roles.

Roles, least to most powerful (service/accounts.py): ``member`` (own uploads only),
``operator`` (reads every upload), ``admin`` (also deletes any upload, manages users, reads
the audit trail). A route states the least role it needs with :func:`needs` (its OpenAPI
description, an ``x-required-role`` extension and the 403 answer) and enforces it with
``Depends(require_role(...))``; a caller below it gets 403 ``forbidden`` naming the role,
and the refusal is audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPBasic
from pydantic import BaseModel

from api.errors import ApiError, ErrorBody
from api.usage import client_ip
from storage import accounts, audit

_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                           description="an API key from `skygate keys create`")
basic = HTTPBasic(auto_error=False)

AUTH_ERRORS = {401: {"model": ErrorBody, "description": "missing, unknown, expired or revoked key"},
               429: {"model": ErrorBody, "description": "request limit reached (see Retry-After)"}}
"""The answers of ``caller`` for the ``responses`` of every route that depends on it."""

RANK = {"member": 0, "operator": 1, "admin": 2}


class Caller(BaseModel):
    user_id: int
    key_id: int
    username: str = ""
    role: str = "member"
    ip: str | None = None

    def at_least(self, role: str) -> bool:
        return RANK.get(self.role, -1) >= RANK[role]

    @property
    def reads_all(self) -> bool:
        """Operators and admins read every upload; members only their own."""
        return self.at_least("operator")

    @property
    def deletes_all(self) -> bool:
        return self.at_least("admin")

    def actor(self) -> audit.Actor:
        return audit.Actor.user(self.username, user_id=self.user_id, key_id=self.key_id,
                                source=self.ip)


def request_ip(request: Request) -> str | None:
    return client_ip(request.scope, request.app.state.settings.trust_forwarded_for)


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
    if check.limit is not None:  # RateLimit-* headers on the answer (api/usage.py)
        request.state.rate_limit = (check.limit, check.remaining, check.reset,
                                    settings.quota_period_seconds)
    if check.code == "rate_limited":
        raise ApiError(429, check.code, check.message,
                       headers={"Retry-After": str(check.retry_after),
                                "X-RateLimit-Limit": str(check.limit),
                                "X-RateLimit-Remaining": "0"})
    if check.code:
        raise ApiError(401, check.code, check.message, headers={"WWW-Authenticate": "ApiKey"})
    return Caller(user_id=check.user_id, key_id=check.key_id, username=check.username or "",
                  role=check.role or "member", ip=request_ip(request))


CallerDep = Annotated[Caller, Depends(caller)]


async def forbid(request: Request, who: Caller, role: str, what: str) -> ApiError:
    """The 403 for a caller below ``role``, after auditing the refusal (best effort)."""
    await audit.record_now(request.app.state.storage.engine, who.actor(), "access",
                           target=f"{request.method} {request.url.path}"[:255],
                           outcome="denied", detail={"needs": role, "role": who.role})
    return ApiError(403, "forbidden", f"{what} needs the {role} role (yours: {who.role})")


def require_role(role: str):
    """A dependency: the caller, if their role is ``role`` or above; else 403 ``forbidden``."""
    if role not in RANK:
        raise ValueError(f"unknown role {role!r}")

    async def dependency(request: Request, who: CallerDep) -> Caller:
        if not who.at_least(role):
            raise await forbid(request, who, role, f"{request.method} {request.url.path}")
        return who

    return dependency


AdminDep = Annotated[Caller, Depends(require_role("admin"))]
OperatorDep = Annotated[Caller, Depends(require_role("operator"))]

FORBIDDEN = {403: {"model": ErrorBody,
                   "description": "your role is below the one this call needs (`forbidden`)"}}


def needs(role: str, note: str = "", *, extra: dict | None = None) -> dict:
    """The route decorator's arguments that document the role a route needs."""
    text = f"**Role:** `{role}` or above." + (f" {note}" if note else "")
    return {"description": text, "openapi_extra": {**(extra or {}), "x-required-role": role}}
