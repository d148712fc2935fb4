"""``/v1/webhooks``: endpoints that are told when an upload is done or failed, instead of
polling. Each belongs to the user of the key that made it; its secret is shown once (at
creation and at each rotation) and signs every request (service/webhook_signing.py). The
delivery log shows every (event, endpoint) with its attempts; a delivery can be sent again.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from api.auth import AUTH_ERRORS, CallerDep, needs
from api.errors import ApiError, ErrorBody
from api.models import DeliveryOut, DeliveryPage, NewWebhook, Redelivery, WebhookIn, WebhookOut
from service import webhook_signing, webhook_targets
from service import webhooks as delivery
from storage import audit
from storage import webhooks as store

router = APIRouter(tags=["webhooks"])

MAX_PER_USER = 10
WebhookId = Annotated[int, Path(ge=1, le=2_147_483_647)]
NO_WEBHOOK = {404: {"model": ErrorBody, "description": "no such webhook (or not yours)"}}
ROLE = needs("member", "Your own webhooks only, whatever your role.")


def webhook_out(row: dict, request: Request, model=WebhookOut, **extra):
    return model(webhook_id=row["webhook_id"], url=row["url"], events=row["events"],
                 description=row["description"], is_active=row["is_active"],
                 created_at=row["created_at"],
                 previous_secret_until=row["previous_secret_until"],
                 deliveries_url=str(request.url_for("webhooks_deliveries_list",
                                                    webhook_id=row["webhook_id"])), **extra)


async def _own(request: Request, who, webhook_id: int) -> dict:
    row = await store.get(request.app.state.storage.engine, webhook_id, user_id=who.user_id)
    if row is None:
        raise ApiError(404, "webhook_not_found", f"no webhook {webhook_id}")
    return row


@router.post("/webhooks", status_code=201, response_model=NewWebhook,
             operation_id="webhooks_create", summary="Register an endpoint for upload events",
             responses={**AUTH_ERRORS, 409: {"model": ErrorBody, "description": "too many "
                                                                                "webhooks"},
                        422: {"model": ErrorBody, "description": "a URL the outbound policy "
                                                                 "refuses"}}, **ROLE)
async def create_webhook(request: Request, who: CallerDep, body: WebhookIn):
    settings = request.app.state.settings
    engine = request.app.state.storage.engine
    if len(await store.list_for(engine, who.user_id)) >= MAX_PER_USER:
        raise ApiError(409, "too_many_webhooks", f"at most {MAX_PER_USER} webhooks per user")
    try:
        await asyncio.to_thread(webhook_targets.resolve, body.url,
                                allow_http=settings.webhook_allow_http,
                                allow_private=settings.webhook_allow_private)
    except webhook_targets.UnsafeTarget as exc:
        raise ApiError(422, "webhook_url_refused", str(exc)) from None
    secret = webhook_signing.new_secret()
    row = await store.create(engine, user_id=who.user_id, url=body.url, events=body.events,
                             secret=secret, api_base=str(request.base_url).rstrip("/"),
                             description=body.description)
    await audit.record_now(engine, who.actor(), "webhook.create",
                           target=f"webhook:{row['webhook_id']}", detail={"url": body.url[:200]})
    return webhook_out(row, request, NewWebhook, secret=secret)


@router.get("/webhooks", response_model=list[WebhookOut], operation_id="webhooks_list",
            summary="Your webhooks", responses=AUTH_ERRORS, **ROLE)
async def list_webhooks(request: Request, who: CallerDep):
    rows = await store.list_for(request.app.state.storage.engine, who.user_id)
    return [webhook_out(r, request) for r in rows]


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut, operation_id="webhooks_get",
            summary="One of your webhooks", responses={**AUTH_ERRORS, **NO_WEBHOOK}, **ROLE)
async def get_webhook(request: Request, who: CallerDep, webhook_id: WebhookId):
    return webhook_out(await _own(request, who, webhook_id), request)


@router.delete("/webhooks/{webhook_id}", status_code=204, response_class=Response,
               operation_id="webhooks_delete", summary="Remove a webhook and its delivery log",
               responses={**AUTH_ERRORS, **NO_WEBHOOK}, **ROLE)
async def delete_webhook(request: Request, who: CallerDep, webhook_id: WebhookId):
    engine = request.app.state.storage.engine
    if not await store.delete(engine, webhook_id, user_id=who.user_id):
        raise ApiError(404, "webhook_not_found", f"no webhook {webhook_id}")
    await audit.record_now(engine, who.actor(), "webhook.delete", target=f"webhook:{webhook_id}")
    return Response(status_code=204)


@router.post("/webhooks/{webhook_id}/rotate-secret", response_model=NewWebhook,
             operation_id="webhooks_rotate_secret",
             summary="A new signing secret; the old one keeps signing for a while",
             responses={**AUTH_ERRORS, **NO_WEBHOOK},
             **needs("member", "Both secrets sign each request (two `v1,` signatures in "
                               "`webhook-signature`) until `previous_secret_until`, so a "
                               "receiver can switch without missing an event."))
async def rotate_secret(request: Request, who: CallerDep, webhook_id: WebhookId,
                        overlap_seconds: Annotated[int | None, Query(
                            ge=0, le=7 * 86400,
                            description="how long the old secret keeps signing (default "
                                        "SKYGATE_WEBHOOK_SECRET_OVERLAP, 24 h)")] = None):
    settings = request.app.state.settings
    engine = request.app.state.storage.engine
    secret = webhook_signing.new_secret()
    overlap = settings.webhook_secret_overlap if overlap_seconds is None else overlap_seconds
    row = await store.rotate_secret(engine, webhook_id, user_id=who.user_id, secret=secret,
                                    overlap=timedelta(seconds=overlap))
    if row is None:
        raise ApiError(404, "webhook_not_found", f"no webhook {webhook_id}")
    await audit.record_now(engine, who.actor(), "webhook.rotate",
                           target=f"webhook:{webhook_id}", detail={"overlap_seconds": overlap})
    return webhook_out(row, request, NewWebhook, secret=secret)


def delivery_out(row: dict) -> DeliveryOut:
    return DeliveryOut(**{k: row[k] for k in DeliveryOut.model_fields})


@router.get("/webhooks/{webhook_id}/deliveries", response_model=DeliveryPage,
            name="webhooks_deliveries_list", operation_id="webhooks_deliveries_list",
            summary="The delivery log of a webhook, newest first",
            responses={**AUTH_ERRORS, **NO_WEBHOOK}, **ROLE)
async def list_deliveries(
        request: Request, who: CallerDep, webhook_id: WebhookId,
        status: Literal["pending", "delivered", "failed"] | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0):
    await _own(request, who, webhook_id)
    rows, total = await store.deliveries(request.app.state.storage.engine, webhook_id,
                                         status=status, limit=limit, offset=offset)
    return DeliveryPage(items=[delivery_out(r) for r in rows], total=total, limit=limit,
                        offset=offset)


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=202,
             response_model=Redelivery,
             operation_id="webhooks_deliveries_redeliver",
             summary="Send a delivery again now (same event id)",
             responses={**AUTH_ERRORS, 404: {"model": ErrorBody,
                                             "description": "no such webhook or delivery"}},
             **ROLE)
async def redeliver(request: Request, who: CallerDep, webhook_id: WebhookId,
                    delivery_id: Annotated[int, Path(ge=1, le=2_147_483_647)]):
    await _own(request, who, webhook_id)
    storage = request.app.state.storage
    if not await store.redeliver(storage.engine, webhook_id, delivery_id):
        raise ApiError(404, "delivery_not_found", f"no delivery {delivery_id} of webhook "
                                                  f"{webhook_id}")
    await delivery.send_soon(request.app.state.settings, [delivery_id])
    return Redelivery(delivery_id=delivery_id, status="pending")
