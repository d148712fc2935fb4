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


SCHEMA_FILE = "ingest_request.schema.json"


def ingest_json_schema() -> dict:
    """The JSON Schema of ``skygate.ingest``'s kwargs, as published in ``schemas/``."""
    schema = IngestRequest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://skygate.invalid/schemas/" + SCHEMA_FILE
    # "exactly one of blob_key or path", which the validator above enforces, for other tools.
    def source(given: str, other: str) -> dict:
        return {"required": [given],
                "properties": {given: {"type": "string", "minLength": 1}},
                "anyOf": [{"not": {"required": [other]}},
                          {"properties": {other: {"enum": [None, ""]}}}]}

    schema["oneOf"] = [source("blob_key", "path"), source("path", "blob_key")]
    return schema


if __name__ == "__main__":
    # Regenerate: python -m schemas.messages > schemas/ingest_request.schema.json
    import json

    print(json.dumps(ingest_json_schema(), indent=2, sort_keys=True))
