"""The request and response bodies of the ``/v1`` routes (their OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from schemas.clock import iso_z
from schemas.documents import DetectionMetadata
from schemas.records import VerdictWord

Verdict = Literal[tuple(word.value for word in VerdictWord)]  # "ai", "real", "uncertain"

UtcTime = Annotated[datetime, PlainSerializer(iso_z, return_type=str, when_used="json"),
                    WithJsonSchema({"type": "string", "format": "date-time",
                                    "examples": ["2026-12-06T08:19:20.123456Z"]},
                                   mode="serialization")]
"""A timestamp as ISO 8601 in UTC with ``Z`` (naive database values are UTC)."""

UploadStatus = Literal["queued", "processing", "done", "failed"]
MethodStatus = Literal["ok", "error", "skipped"]
_URL = "https://api.example.org/v1/uploads/42"


def example(**values) -> ConfigDict:
    """A model's OpenAPI example."""
    return ConfigDict(json_schema_extra={"examples": [values]})


# --- keys ---------------------------------------------------------------------------------


class NewKeyRequest(BaseModel):
    model_config = example(name="ingest", request_limit=5000,
                           expires_at="2027-12-31T00:00:00Z")

    name: str = Field(default="api", min_length=1, max_length=100)
    request_limit: int = Field(default=1000, ge=1, le=10_000_000)
    expires_at: datetime | None = None


class NewKey(BaseModel):
    model_config = example(key_id=3, api_key="sk_live_3_Zm9vYmFy…", name="ingest",
                           request_limit=5000, expires_at=None)

    key_id: int
    api_key: str = Field(description="shown once; only a hash is stored")
    name: str
    request_limit: int
    expires_at: UtcTime | None


# --- uploads ------------------------------------------------------------------------------


_UPLOAD = {"upload_id": 42, "file_name": "photo.jpg", "file_size": 182_044,
           "mime_type": "image/jpeg", "sha256": "9f86d081884c7d65…", "client_reference": "order-17",
           "status": "done", "is_processed": True, "upload_date": "2026-12-06T08:19:20.123456Z",
           "error": None, "verdict": "ai", "confidence": 0.9731, "status_url": _URL,
           "result_url": f"{_URL}/result"}


class UploadOut(BaseModel):
    model_config = example(**_UPLOAD)

    upload_id: int
    file_name: str
    file_size: int
    mime_type: str
    sha256: str | None
    client_reference: str | None = None
    status: UploadStatus
    is_processed: bool | None
    upload_date: UtcTime | None
    error: str | None = None
    verdict: Verdict | None = None
    confidence: float | None = None
    status_url: str
    result_url: str


PartStatus = Literal["queued", "duplicate", "done", "failed", "refused"]


class Accepted(BaseModel):
    """One part of a POST: taken (with its upload's id and URLs) or refused (with why)."""

    model_config = example(file_name="photo.jpg", status="queued", upload_id=42,
                           client_reference="order-17", status_url=_URL,
                           result_url=f"{_URL}/result")

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
    model_config = example(uploads=[
        {"file_name": "photo.jpg", "status": "queued", "upload_id": 42,
         "client_reference": "order-17", "status_url": _URL, "result_url": f"{_URL}/result"},
        {"file_name": "notes.txt", "status": "refused", "code": "unsupported_image_type",
         "message": "notes.txt: not a supported image (JPEG, PNG, …) by content"}],
        accepted=1, refused=1)

    uploads: list[Accepted]
    accepted: int = Field(description="parts taken (queued, duplicate, done or failed)")
    refused: int = Field(description="parts refused")


class UploadPage(BaseModel):
    model_config = example(items=[_UPLOAD], total=1, limit=50, offset=0, next=None)

    items: list[UploadOut]
    total: int
    limit: int
    offset: int
    next: str | None


# --- results ------------------------------------------------------------------------------


class MethodOut(BaseModel):
    model_config = example(verdict="ai", is_ai_generated=True, confidence=0.97, status="ok",
                           error=None)

    verdict: Verdict
    is_ai_generated: bool | None
    confidence: float
    status: MethodStatus
    error: str | None = None


class ResultMetadata(DetectionMetadata):
    """The ``detection_metadata`` document: file info, EXIF, pixel analysis (PRNU, ELA,
    texture), model results, visual anomalies, the aggregated verdict and the history."""

    created_at: UtcTime
    updated_at: UtcTime
    blob_keys: dict[str, str] = Field(default_factory=dict, exclude=True)


class ResultOut(BaseModel):
    model_config = example(
        upload_id=42, result_id=40, ai_probability=0.9731, verdict="ai", is_ai_generated=True,
        confidence=0.9731, summary="AI-generated (model 0.97)", algorithm_version="skygate-2.1",
        detection_date="2026-12-06T08:19:23.5Z", processing_time=2.41,
        methods={"model": {"verdict": "ai", "is_ai_generated": True, "confidence": 0.97,
                           "status": "ok", "error": None}},
        metadata=None, ela_url=f"{_URL}/ela.png", heatmap_url=f"{_URL}/heatmap.png")

    upload_id: int
    result_id: int
    ai_probability: float | None = Field(
        ge=0, le=1, description="P(AI) of the ensemble: the one number to threshold")
    verdict: Verdict
    is_ai_generated: bool | None
    confidence: float
    summary: str | None
    algorithm_version: str
    detection_date: UtcTime | None
    processing_time: float
    methods: dict[str, MethodOut]
    explanation: dict | None = Field(
        default=None, description="why: the methods that voted and their contribution, those "
        "that did not and why, declared provenance (C2PA, IPTC, generator chunks), the model "
        "and the algorithm version (pipeline/explanation.py)")
    metadata: ResultMetadata | None = Field(description="the detection_metadata document")
    ela_url: str | None
    heatmap_url: str | None
    forensic_heatmap_url: str | None = None


# --- feedback -----------------------------------------------------------------------------


class FeedbackIn(BaseModel):
    model_config = example(label="real", note="my own photo, taken in 2019")

    label: Literal["ai", "real"] = Field(description="what the image really is")
    note: str | None = Field(default=None, max_length=1000,
                             description="free text, stored as text (control characters "
                                         "removed), never interpreted")


class FeedbackOut(BaseModel):
    model_config = example(upload_id=42, label="real", note="my own photo", verdict="ai",
                           ai_probability=0.9731, created_at="2026-12-06T08:20:00Z",
                           updated_at="2026-12-06T08:20:00Z")

    upload_id: int
    label: Literal["ai", "real"]
    note: str | None
    verdict: Verdict | None = Field(
        description="the model's verdict when the feedback was given (null: not judged yet)")
    ai_probability: float | None = Field(
        description="the model's P(AI) when the feedback was given")
    created_at: UtcTime
    updated_at: UtcTime


# --- admin: users and the audit trail -----------------------------------------------------

Role = Literal["admin", "operator", "member"]


class UserOut(BaseModel):
    model_config = example(user_id=2, username="acme", email="ops@acme.example",
                           role="member", account_status="active",
                           created_at="2026-12-01T10:00:00Z", last_login=None)

    user_id: int
    username: str
    email: str
    role: Role
    account_status: str = Field(description="active or suspended")
    created_at: UtcTime | None
    last_login: UtcTime | None


class UserList(BaseModel):
    model_config = example(items=[{"user_id": 2, "username": "acme", "email": "ops@acme.example",
                                   "role": "member", "account_status": "active",
                                   "created_at": "2026-12-01T10:00:00Z", "last_login": None}])

    items: list[UserOut]


class NewUserRequest(BaseModel):
    model_config = example(username="acme", email="ops@acme.example", role="member")

    username: str = Field(min_length=1, max_length=50, pattern=r"^[^\x00-\x1f\x7f]+$")
    email: str = Field(min_length=3, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    role: Role = "member"
    password: str | None = Field(default=None, min_length=8, max_length=200,
                                 description="for POST /v1/keys; keys-only without it")


_AUDIT = {"audit_id": 7, "occurred_at": "2026-12-06T08:19:20Z", "actor": "user:acme",
          "user_id": 2, "key_id": 3, "action": "upload.delete", "target": "upload:42",
          "source": "203.0.113.5", "outcome": "ok", "detail": {"file_name": "photo.jpg"}}


class AuditEntry(BaseModel):
    model_config = example(**_AUDIT)

    audit_id: int
    occurred_at: UtcTime
    actor: str = Field(description="user:<name>, cli:<os user>, anonymous or system")
    user_id: int | None
    key_id: int | None
    action: str
    target: str | None
    source: str | None = Field(description="client IP (API) or host (CLI)")
    outcome: Literal["ok", "denied", "failed"]
    detail: dict | None


class AuditPage(BaseModel):
    model_config = example(items=[_AUDIT], total=1, limit=50, offset=0, next=None)

    items: list[AuditEntry]
    total: int
    limit: int
    offset: int
    next: str | None


# --- webhooks -----------------------------------------------------------------------------

WebhookEvent = Literal["upload.done", "upload.failed"]


class WebhookIn(BaseModel):
    model_config = example(url="https://hooks.example.org/skygate",
                           events=["upload.done", "upload.failed"], description="billing")

    url: str = Field(min_length=8, max_length=2000,
                     description="https:// URL that receives the events (POST, JSON)",
                     examples=["https://hooks.example.org/skygate"])
    events: list[WebhookEvent] = Field(default=["upload.done", "upload.failed"], min_length=1,
                                       max_length=2)
    description: str | None = Field(default=None, max_length=200)


_HOOK = {"webhook_id": 1, "url": "https://hooks.example.org/skygate",
         "events": ["upload.done", "upload.failed"], "description": "billing",
         "is_active": True, "created_at": "2026-12-06T08:00:00Z", "previous_secret_until": None,
         "deliveries_url": "https://api.example.org/v1/webhooks/1/deliveries"}


class WebhookOut(BaseModel):
    model_config = example(**_HOOK)

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
    model_config = example(**_HOOK, secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")  # noqa: S106

    secret: str = Field(description="shown once: the signing key (whsec_…) for the "
                                    "webhook-signature header",
                        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])


_DELIVERY = {"delivery_id": 9, "event_id": "evt_3f0c9a…", "event_type": "upload.done",
             "upload_id": 42, "status": "delivered", "attempts": 3, "next_attempt_at": None,
             "last_attempt_at": "2026-12-06T08:20:01Z", "last_status_code": 204,
             "last_error": None, "delivered_at": "2026-12-06T08:20:01Z",
             "created_at": "2026-12-06T08:19:23Z"}


class DeliveryOut(BaseModel):
    model_config = example(**_DELIVERY)

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
    model_config = example(items=[_DELIVERY], total=1, limit=50, offset=0)

    items: list[DeliveryOut]
    total: int
    limit: int
    offset: int


class Redelivery(BaseModel):
    model_config = example(delivery_id=9, status="pending")

    delivery_id: int
    status: Literal["pending"]
