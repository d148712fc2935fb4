"""Queue message contracts: what upstream services send to ``skygate.ingest``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class IngestRequest(BaseModel):
    """Keyword arguments of the ``skygate.ingest`` task.

    The image itself never travels in the message: put it in the shared blob store first
    (``blob_key``) or on a volume the workers mount (``path``).
    """

    model_config = ConfigDict(extra="forbid")

    blob_key: str | None = Field(default=None, description="key in the shared blob store")
    path: str | None = Field(default=None, description="absolute path readable by the workers")
    original_file_name: str = Field(min_length=1, max_length=255)
    user_id: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self):
        if bool(self.blob_key) == bool(self.path):
            raise ValueError("give exactly one of blob_key or path")
        return self
