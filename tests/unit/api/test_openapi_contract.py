"""The OpenAPI document as a client generator reads it: stable operation ids, enums for
error codes and statuses, an example on every schema of a request or response body, and
every timestamp ISO 8601 UTC with ``Z``. (tests/integration/test_generated_client.py runs a
client generated from it.)"""

from __future__ import annotations

import ast
import re
from datetime import datetime

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def spec():
    from api.app import create_app

    return create_app().openapi()


def operations(spec):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def test_operation_ids_are_stable_snake_case_names(spec):
    ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)+", i) for i in ids), ids
    assert {"uploads_create", "uploads_list", "uploads_get", "uploads_delete", "results_get",
            "webhooks_create", "webhooks_deliveries_list", "keys_create"} <= set(ids)


def _codes_in_source() -> set[str]:
    """Every error code a literal in the code base hands to ApiError, AccountError,
    ImageRejected or the error helpers, plus the API key checks' codes."""
    codes = set()
    for folder in ("api", "storage", "service"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                position = {"ApiError": 1, "_json": 1, "AccountError": 0, "ImageRejected": 0,
                            "KeyCheck": 0}.get(name)
                if position is None or len(node.args) <= position:
                    continue
                arg = node.args[position]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    codes.add(arg.value)
                elif isinstance(arg, ast.JoinedStr):  # f"{which}_not_available"
                    codes |= {"ela_not_available", "heatmap_not_available"}
    return codes


def test_error_codes_are_an_enum_that_names_every_code_the_api_uses(spec):
    from api.errors import _HTTP_CODES, ErrorCode

    enum = spec["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]
    assert set(enum) == set(ErrorCode.__args__)
    used = _codes_in_source() | set(_HTTP_CODES.values())
    assert used - set(enum) == set(), "codes missing from api.errors.ErrorCode"
    assert len(used) > 40


def test_statuses_are_enums_and_a_result_has_ai_probability_at_the_top(spec):
    schemas = spec["components"]["schemas"]
    assert schemas["UploadOut"]["properties"]["status"]["enum"] == ["queued", "processing",
                                                                    "done", "failed"]
    assert set(schemas["Accepted"]["properties"]["status"]["enum"]) == {
        "queued", "duplicate", "done", "failed", "refused"}
    assert schemas["MethodOut"]["properties"]["status"]["enum"] == ["ok", "error", "skipped"]
    assert list(schemas["ResultOut"]["properties"])[:3] == ["upload_id", "result_id",
                                                            "ai_probability"]
    metadata = schemas["ResultOut"]["properties"]["metadata"]["anyOf"][0]["$ref"]
    assert metadata.endswith("/ResultMetadata")
    assert {"exif_data", "pixel_analysis", "aggregated_results"} <= set(
        schemas["ResultMetadata"]["properties"])


def _body_schemas(spec):
    for method, path, op in operations(spec):
        bodies = [("request", op.get("requestBody", {}).get("content", {}))]
        bodies += [(code, r.get("content", {})) for code, r in op["responses"].items()]
        for where, content in bodies:
            schema = content.get("application/json", {}).get("schema")
            if schema:
                yield f"{method} {path} {where}", schema


def test_every_json_body_schema_has_an_example(spec):
    schemas = spec["components"]["schemas"]
    missing = []
    for where, schema in _body_schemas(spec):
        target = schema.get("items", schema)
        ref = target.get("$ref")
        if ref is None:
            continue
        if not schemas[ref.rsplit("/", 1)[1]].get("examples"):
            missing.append(f"{where}: {ref}")
    assert not missing, "\n".join(missing)


def test_timestamps_are_iso_utc_with_z_whether_stored_naive_or_aware():
    from api.models import DeliveryOut, UploadOut

    naive = datetime(2026, 12, 6, 8, 19, 20)  # as SQLite hands it back
    row = UploadOut(upload_id=1, file_name="a", file_size=1, mime_type="image/png",
                    sha256=None, status="done", is_processed=True, upload_date=naive,
                    status_url="u", result_url="r")
    assert row.model_dump(mode="json")["upload_date"] == "2026-12-06T08:19:20Z"
    from datetime import UTC, timedelta, timezone

    aware = datetime(2026, 12, 6, 9, 19, 20, tzinfo=timezone(timedelta(hours=1)))
    d = DeliveryOut(delivery_id=1, event_id="e", event_type="upload.done", upload_id=1,
                    status="pending", attempts=0, next_attempt_at=aware, last_attempt_at=None,
                    last_status_code=None, last_error=None, delivered_at=None,
                    created_at=datetime(2026, 12, 6, tzinfo=UTC))
    dumped = d.model_dump(mode="json")
    assert dumped["next_attempt_at"] == "2026-12-06T08:19:20Z"
    assert dumped["created_at"] == "2026-12-06T00:00:00Z" and dumped["last_attempt_at"] is None
