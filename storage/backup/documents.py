"""MongoDB in a backup: every collection ``listCollections`` reports — its options (validator,
validation level and action, collation…), its indexes and its documents as canonical Extended
JSON, one per line (types survive: ObjectId, dates, int vs long vs double).

The embedded document store needs nothing here: its rows are in the SQL database's
``embedded_documents`` table and travel with the SQL backup.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from pymongo import MongoClient

from storage.backup.manifest import BackupError

COLLECTIONS_FILE = "collections.json"
_BATCH = 1000
# Written by the server, refused (or meaningless) when creating the index again.
_INDEX_SERVER_FIELDS = {"v", "ns"}


def _dumps(value) -> str:
    return json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS)


def _loads(text: str):
    return json_util.loads(text, json_options=CANONICAL_JSON_OPTIONS)


def _client(settings) -> MongoClient:
    # Synchronous PyMongo: these functions are bulk file work, run in a thread.
    return MongoClient(settings.mongo_url, tz_aware=True, tzinfo=UTC)


def _collections(db) -> list[dict]:
    found = list(db.list_collections())
    return sorted((c for c in found if not c["name"].startswith("system.")),
                  key=lambda c: c["name"])


def export(settings, folder: Path) -> dict:
    """Write every collection into ``folder``; returns per-collection counts for the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    described = []
    counts: dict[str, int] = {}
    with _client(settings) as client:
        db = client[settings.mongo_database]
        for info in _collections(db):
            name = info["name"]
            spec = {"name": name, "type": info.get("type", "collection"),
                    "options": dict(info.get("options") or {}), "indexes": []}
            if spec["type"] == "collection":
                spec["indexes"] = [dict(ix) for ix in db[name].list_indexes()]
                n = 0
                with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as out:
                    for doc in db[name].find({}):
                        out.write(_dumps(doc) + "\n")
                        n += 1
                counts[name] = n
            described.append(spec)
    (folder / COLLECTIONS_FILE).write_text(_dumps(described), encoding="utf-8")
    return {"backend": "mongodb", "database": settings.mongo_database, "counts": counts}


def counts(settings) -> dict[str, int]:
    """Documents per collection in the target."""
    with _client(settings) as client:
        db = client[settings.mongo_database]
        return {info["name"]: db[info["name"]].count_documents({})
                for info in _collections(db)
                if info.get("type", "collection") == "collection"}


def occupied(settings) -> list[str]:
    """The target's collections that hold documents (restoring into them needs --force)."""
    return [f"mongo collection {name}: {n} documents"
            for name, n in counts(settings).items() if n]


def _restore_collection(db, spec: dict, folder: Path) -> None:
    name = spec["name"]
    db.drop_collection(name)  # an empty one, or --force
    db.create_collection(name, **spec["options"])
    if spec["type"] != "collection":
        return
    batch: list[dict] = []
    with open(folder / f"{name}.jsonl", encoding="utf-8") as lines:
        for line in lines:
            batch.append(_loads(line))
            if len(batch) >= _BATCH:
                db[name].insert_many(batch, bypass_document_validation=True)
                batch = []
    if batch:
        db[name].insert_many(batch, bypass_document_validation=True)
    indexes = [{k: v for k, v in ix.items() if k not in _INDEX_SERVER_FIELDS}
               for ix in spec["indexes"] if ix.get("name") != "_id_"]
    if indexes:
        db.command({"createIndexes": name, "indexes": indexes})


def restore(settings, folder: Path) -> None:
    """Create each collection with its options, insert its documents (validators bypassed:
    they are the documents the store held), then build its indexes."""
    specs = _loads((folder / COLLECTIONS_FILE).read_text(encoding="utf-8"))
    with _client(settings) as client:
        db = client[settings.mongo_database]
        # Collections first, views (which name them) after.
        for spec in sorted(specs, key=lambda s: s["type"] != "collection"):
            try:
                _restore_collection(db, spec, folder)
            except Exception as exc:
                raise BackupError(f"mongo collection {spec['name']}: {exc}") from exc
