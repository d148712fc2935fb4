"""The queue contract: the published JSON Schema of ``skygate.ingest``'s kwargs matches the
pydantic model the worker validates with, and both agree on real messages."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import ValidationError

from schemas.messages import SCHEMA_FILE, IngestRequest, ingest_json_schema
from tests.conftest import ROOT

PUBLISHED = ROOT / "schemas" / SCHEMA_FILE


def test_published_schema_is_current():
    assert json.loads(PUBLISHED.read_text()) == ingest_json_schema(), (
        "regenerate: python -m schemas.messages > schemas/ingest_request.schema.json")


@pytest.mark.parametrize(("message", "valid"), [
    ({"blob_key": "ab/cd/abcd.jpg", "original_file_name": "cat.jpg"}, True),
    ({"path": "/srv/in/cat.jpg", "original_file_name": "cat.jpg", "user_id": 7}, True),
    ({"path": "/srv/in/cat.jpg", "blob_key": None, "original_file_name": "cat.jpg"}, True),
    ({"original_file_name": "cat.jpg"}, False),
    ({"blob_key": "k", "path": "/p", "original_file_name": "cat.jpg"}, False),
    ({"blob_key": "k", "original_file_name": ""}, False),
    ({"blob_key": "k", "original_file_name": "c.jpg", "user_id": 0}, False),
    ({"blob_key": "k", "original_file_name": "c.jpg", "image_bytes": "AAAA"}, False),
    ({"blob_key": "", "path": "", "original_file_name": "c.jpg"}, False),
])
def test_model_and_schema_agree(message, valid):
    validator = jsonschema.Draft202012Validator(json.loads(PUBLISHED.read_text()))
    assert validator.is_valid(message) is valid
    try:
        IngestRequest.model_validate(message)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted is valid
