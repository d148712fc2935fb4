"""The request and response bodies of the ``/v1`` routes (their OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from schemas.records import VerdictWord

Verdict = Literal[tuple(word.value for word in VerdictWord)]  # "ai", "real", "uncertain"


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
    status: str = Field(description="queued, processing, done or failed")
    is_processed: bool | None
    upload_date: datetime | None
    error: str | None = None
    verdict: Verdict | None = None
    confidence: float | None = None
    status_url: str
    result_url: str


class Accepted(BaseModel):
    upload_id: int
    file_name: str
    status: str = Field(description="queued, or duplicate when you sent this content before")
    status_url: str
    result_url: str


class AcceptedList(BaseModel):
    uploads: list[Accepted]


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
    ai_probability: float | None = Field(default=None, description="P(AI) of the verdict")
    explanation: dict | None = Field(
        default=None, description="why: the methods that voted and their contribution, those "
        "that did not and why, declared provenance (C2PA, IPTC, generator chunks), the model "
        "and the algorithm version (pipeline/explanation.py)")
    metadata: dict | None = Field(description="the detection_metadata document")
    ela_url: str | None
    heatmap_url: str | None
    forensic_heatmap_url: str | None = None


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
