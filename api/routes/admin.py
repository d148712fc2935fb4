"""Admin routes: ``/v1/users`` (list, create, suspend) and ``/v1/audit`` (the audit trail).

Every route needs the ``admin`` role (api/auth.py). Account changes write their audit row in
the same transaction as the change; the rules are service/accounts.py's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from api.auth import AUTH_ERRORS, FORBIDDEN, AdminDep, needs
from api.errors import ApiError, ErrorBody
from api.models import AuditEntry, AuditPage, NewUserRequest, UserList, UserOut
from schemas.clock import aware
from service import accounts
from storage import accounts as account_rows
from storage import audit

router = APIRouter(tags=["admin"])

_STATUS = {"no_such_user": 404, "user_exists": 409, "last_admin": 409, "bad_email": 422,
           "bad_role": 422, "bad_status": 422}
_ERRORS = {**AUTH_ERRORS, **FORBIDDEN}
UserName = Annotated[str, Path(min_length=1, max_length=50)]


def _account_error(exc: accounts.AccountError) -> ApiError:
    return ApiError(_STATUS.get(exc.code, 400), exc.code, str(exc))


@router.get("/users", response_model=UserList, summary="Every account with its role",
            responses=_ERRORS, **needs("admin"))
async def list_users(request: Request, who: AdminDep):
    rows = await account_rows.list_users(request.app.state.storage.engine)
    return UserList(items=[UserOut(**r) for r in rows])


@router.post("/users", status_code=201, response_model=UserOut, summary="Create an account",
             responses={**_ERRORS,
                        409: {"model": ErrorBody, "description": "the name or email is taken"}},
             **needs("admin", "Audited (`user.create`)."))
async def create_user(request: Request, who: AdminDep, body: NewUserRequest):
    engine = request.app.state.storage.engine
    try:
        await accounts.create_user(engine, username=body.username, email=body.email,
                                   password=body.password, role=body.role, actor=who.actor())
    except accounts.AccountError as exc:
        raise _account_error(exc) from None
    return UserOut(**await account_rows.get_user(engine, body.username))


@router.post("/users/{username}/suspend", response_model=UserOut,
             summary="Suspend an account: its keys get 401 until it is activated again",
             responses={**_ERRORS,
                        404: {"model": ErrorBody, "description": "no such user"},
                        409: {"model": ErrorBody,
                              "description": "the last active admin (`last_admin`)"}},
             **needs("admin", "The last active admin cannot be suspended. Audited "
                              "(`user.suspend`)."))
async def suspend_user(request: Request, who: AdminDep, username: UserName):
    try:
        user = await accounts.set_account_status(request.app.state.storage.engine, username,
                                                 "suspended", actor=who.actor())
    except accounts.AccountError as exc:
        raise _account_error(exc) from None
    return UserOut(**user)


@router.get("/audit", response_model=AuditPage, summary="The audit trail, newest first",
            responses=_ERRORS,
            **needs("admin", "Filters: `since`, `user` (a user name, or an actor such as "
                             "`cli:root`), `action` (exact, or a family: `user` for every "
                             "`user.*`)."))
async def read_audit(
        request: Request, who: AdminDep,
        since: Annotated[datetime | None, Query(description="on or after")] = None,
        user: Annotated[str | None, Query(max_length=150)] = None,
        action: Annotated[str | None, Query(max_length=50)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0):
    since = aware(since)
    rows, total = await audit.query(request.app.state.storage.engine, since=since, user=user,
                                    action=action, limit=limit, offset=offset)
    nxt = None
    if offset + limit < total:
        nxt = str(request.url.include_query_params(offset=offset + limit, limit=limit))
    return AuditPage(items=[AuditEntry(**r) for r in rows], total=total, limit=limit,
                     offset=offset, next=nxt)
