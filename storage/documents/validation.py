"""The documents' schema checked by the stores themselves, from the pydantic models.

- MongoDB: a ``$jsonSchema`` validator per collection (:data:`VALIDATORS`), generated from
  schemas/documents.py and applied where the indexes are ensured. MongoDB's dialect differs
  from JSON Schema: ``bsonType`` instead of ``type`` (dates are BSON dates, integers int or
  long), no ``$ref``/``format``/``default``/``title``; :func:`mongo_json_schema` translates.
- Embedded store: :func:`check_body` re-validates the JSON body with the same model before it
  is written (a model built with ``model_copy(update=...)`` or changed by assignment was
  never validated).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from schemas.documents import DetectionMetadata, SystemConfiguration
from storage.documents.base import CONFIGURATION, METADATA

MODELS: dict[str, type[BaseModel]] = {METADATA: DetectionMetadata,
                                      CONFIGURATION: SystemConfiguration}

# JSON Schema type -> BSON types a stored value of it may have.
_BSON_TYPES: dict[str, str | list[str]] = {
    "object": "object",
    "array": "array",
    "string": "string",
    "boolean": "bool",
    "null": "null",
    "integer": ["int", "long"],
    "number": ["double", "int", "long", "decimal"],
}
# Keywords MongoDB's $jsonSchema accepts (and we use) besides bsonType.
_KEEP = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
         "maxLength", "enum", "minItems", "maxItems", "description"}


def _translate(node: Any, defs: dict[str, Any]) -> Any:
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _translate(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    out: dict[str, Any] = {}
    kind = node.get("type")
    if kind == "string" and node.get("format") == "date-time":
        out["bsonType"] = "date"  # PyMongo stores datetimes as BSON dates
    elif kind is not None:
        out["bsonType"] = _BSON_TYPES[kind]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            out[key] = [_translate(n, defs) for n in node[key]]
    if "properties" in node:
        out["properties"] = {k: _translate(v, defs) for k, v in node["properties"].items()}
    if node.get("required"):
        out["required"] = list(node["required"])
    if "items" in node:
        out["items"] = _translate(node["items"], defs)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = _translate(extra, defs)
    elif extra is False:
        out["additionalProperties"] = False
    out.update({k: v for k, v in node.items() if k in _KEEP})
    return out


def mongo_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema in MongoDB's ``$jsonSchema`` dialect, for the stored form
    (``_id`` an ObjectId, the model's ``id`` field not stored)."""
    schema = model.model_json_schema(mode="validation")
    out = _translate(schema, schema.get("$defs", {}))
    out["properties"].pop("id", None)
    out["properties"]["_id"] = {"bsonType": "objectId"}
    out["required"] = [name for name in out.get("required", []) if name != "id"]
    return out


VALIDATORS: dict[str, dict[str, Any]] = {
    name: {"$jsonSchema": mongo_json_schema(model)} for name, model in MODELS.items()
}


def check_body(collection: str, body: dict[str, Any]) -> None:
    """Raise ``pydantic.ValidationError`` unless ``body`` (the JSON form about to be stored)
    is a valid document of ``collection``."""
    MODELS[collection].model_validate(body)
