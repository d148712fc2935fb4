"""The request and response bodies of the ``/v1`` routes (their OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, PlainSerializer, WithJsonSchema

from schemas.clock import iso_z
from schemas.records import VerdictWord

Verdict = Literal[tuple(word.value for word in VerdictWord)]  # "ai", "real", "uncertain"

UtcTime = Annotated[datetime, PlainSerializer(iso_z, return_type=str, when_used="json"),
                    WithJsonSchema({"type": "string", "format": "date-time",
                                    "examples": ["2026-12-06T08:19:20.123456Z"]},
                                   mode="serialization")]
"""A timestamp as ISO 8601 in UTC with ``Z`` (naive database values are UTC)."""


# --- keys ---------------------------------------------------------------------------------


class NewKeyRequest(BaseModel):
    name: str = Field(default="api", min_length=1, max_length=100)
    request_limit: int = Field(default=1000, ge=1, le=10_000_000)
    expires_at: datetime | None = None


class NewKey(BaseModel):
    key_id: int
    api_key: str = Field(description="shown once; only a hash is stored")
    name: str
    request_limit: int
    expires_at: datetime | None


# --- uploads ------------------------------------------------------------------------------


class UploadOut(BaseModel):
    upload_id: int
    file_name: str
    file_size: int
    mime_type: str
    sha256: str | None
    client_reference: str | None = None
    status: str = Field(description="queued, processing, done or failed")
    is_processed: bool | None
    upload_date: datetime | None
    error: str | None = None
    verdict: Verdict | None = None
    confidence: float | None = None
    status_url: str
    result_url: str


PartStatus = Literal["queued", "duplicate", "done", "failed", "refused"]


class Accepted(BaseModel):
    """One part of a POST: taken (with its upload's id and URLs) or refused (with why)."""

    file_name: str
    status: PartStatus = Field(description=(
        "queued: taken, detection started; duplicate: you sent this content before (its "
        "earlier upload); done or failed: the verdict is ready (with ?wait=N, or a "
        "duplicate); refused: not taken, see code and message"))
    upload_id: int | None = None
    client_reference: str | None = None
    status_url: str | None = None
    result_url: str | None = None
    code: str | None = Field(default=None, description="refused: why (file_too_large, "
                                                       "unsupported_image_type, invalid_image)")
    message: str | None = None
    verdict: Verdict | None = None
    ai_probability: float | None = Field(default=None, ge=0, le=1)
    confidence: float | None = None
    error: str | None = Field(default=None, description="failed: the reason")


class AcceptedList(BaseModel):
    uploads: list[Accepted]
    accepted: int = Field(description="parts taken (queued, duplicate, done or failed)")
    refused: int = Field(description="parts refused")


class UploadPage(BaseModel):
    items: list[UploadOut]
    total: int
    limit: int
    offset: int
    next: str | None


# --- results ------------------------------------------------------------------------------


class MethodOut(BaseModel):
    verdict: Verdict
    is_ai_generated: bool | None
    confidence: float
    status: str
    error: str | None = None


class ResultOut(BaseModel):
    upload_id: int
    result_id: int
    verdict: Verdict
    is_ai_generated: bool | None
    confidence: float
    summary: str | None
    algorithm_version: str
    detection_date: datetime | None
    processing_time: float
    methods: dict[str, MethodOut]
    metadata: dict | None = Field(description="the detection_metadata document")
    ela_url: str | None
    heatmap_url: str | None


# --- feedback -----------------------------------------------------------------------------


class FeedbackIn(BaseModel):
    label: Literal["ai", "real"] = Field(description="what the image really is")
    note: str | None = Field(default=None, max_length=1000,
                             description="free text, stored as text (control characters "
                                         "removed), never interpreted")


class FeedbackOut(BaseModel):
    upload_id: int
    label: Literal["ai", "real"]
    note: str | None
    verdict: Verdict | None = Field(
        description="the model's verdict when the feedback was given (null: not judged yet)")
    ai_probability: float | None = Field(
        description="the model's P(AI) when the feedback was given")
    created_at: datetime
    updated_at: datetime


# --- admin: users and the audit trail -----------------------------------------------------

Role = Literal["admin", "operator", "member"]


class UserOut(BaseModel):
    user_id: int
    username: str
    email: str
    role: Role
    account_status: str = Field(description="active or suspended")
    created_at: datetime | None
    last_login: datetime | None


class UserList(BaseModel):
    items: list[UserOut]


class NewUserRequest(BaseModel):
    username: str = Field(min_length=1, max_length=50, pattern=r"^[^\x00-\x1f\x7f]+$")
    email: str = Field(min_length=3, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    role: Role = "member"
    password: str | None = Field(default=None, min_length=8, max_length=200,
                                 description="for POST /v1/keys; keys-only without it")


class AuditEntry(BaseModel):
    audit_id: int
    occurred_at: datetime
    actor: str = Field(description="user:<name>, cli:<os user>, anonymous or system")
    user_id: int | None
    key_id: int | None
    action: str
    target: str | None
    source: str | None = Field(description="client IP (API) or host (CLI)")
    outcome: Literal["ok", "denied", "failed"]
    detail: dict | None


class AuditPage(BaseModel):
    items: list[AuditEntry]
    total: int
    limit: int
    offset: int
    next: str | None


# --- webhooks -----------------------------------------------------------------------------

WebhookEvent = Literal["upload.done", "upload.failed"]


class WebhookIn(BaseModel):
    url: str = Field(min_length=8, max_length=2000,
                     description="https:// URL that receives the events (POST, JSON)",
                     examples=["https://hooks.example.org/skygate"])
    events: list[WebhookEvent] = Field(default=["upload.done", "upload.failed"], min_length=1,
                                       max_length=2)
    description: str | None = Field(default=None, max_length=200)


class WebhookOut(BaseModel):
    webhook_id: int
    url: str
    events: list[WebhookEvent]
    description: str | None
    is_active: bool
    created_at: UtcTime
    previous_secret_until: UtcTime | None = Field(
        description="after a rotation: the previous secret also signs until then")
    deliveries_url: str


class NewWebhook(WebhookOut):
    secret: str = Field(description="shown once: the signing key (whsec_…) for the "
                                    "webhook-signature header",
                        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])


class DeliveryOut(BaseModel):
    delivery_id: int
    event_id: str = Field(description="the webhook-id header: the same on every retry")
    event_type: WebhookEvent
    upload_id: int
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: UtcTime | None
    last_attempt_at: UtcTime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: UtcTime | None
    created_at: UtcTime


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    total: int
    limit: int
    offset: int
