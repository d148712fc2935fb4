"""Backup and restore on PostgreSQL + MongoDB + a blob folder: a populated store backed up,
wiped, restored and compared; an occupied target refused, then replaced with force, and a
forced restore that fails half-way leaving the target as it was."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from schemas.settings import Settings
from storage.backup import (
    BackupError,
    TargetNotEmpty,
    create_backup,
    restore_backup,
)
from storage.migrate import head_revision
from tests.conftest import _pg_admin, run
from tests.integration.conftest import (
    _check_populated,
    _images,
    _populate,
    _settings,
    _state,
)

# --- PostgreSQL + MongoDB + a blob folder --------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_postgres_mongo_round_trip(pg_url, mongo_url, tmp_path):
    name = pg_url.rsplit("/", 1)[1] + "_backup"
    db_url = pg_url.rsplit("/", 1)[0] + "/" + name
    run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        env = {"SKYGATE_DATABASE_URL": db_url,
               "SKYGATE_MONGO_URL": f"{mongo_url}/backup_{uuid.uuid4().hex[:8]}",
               "SKYGATE_DATA_DIR": str(tmp_path / "var")}
        settings = _settings(env)
        run(_populate(settings, _images(tmp_path / "in")))
        before = run(_state(settings))
        _check_populated(before)
        assert len(before["detection_metadata"]) == 3
        assert before["sequences"]

        backup = run(create_backup(settings, tmp_path / "backups"))
        files = {p.relative_to(backup).as_posix() for p in backup.rglob("*") if p.is_file()}
        assert {"manifest.json", "SHA256SUMS", "database/postgres.dump",
                "documents/collections.json", "documents/detection_metadata.jsonl",
                "documents/system_configuration.jsonl"} <= files
        assert sum(f.startswith("blobs/") for f in files) == len(before["blobs"])
        manifest = json.loads((backup / "manifest.json").read_text())
        assert manifest["schema_revision"] == head_revision()
        assert manifest["database"]["tables"]["uploads"] == 3
        assert manifest["documents"]["counts"]["detection_metadata"] == 3
        assert "secret" not in json.dumps(manifest)

        # Disaster: the database, the collections and the blobs are gone.
        run(_pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))
        run(_pg_admin(f'CREATE DATABASE "{name}"'))
        _drop_mongo(settings)
        shutil.rmtree(settings.blob_dir)

        result = run(restore_backup(settings, backup))
        assert result["tables"]["uploads"] == 3 and result["blobs"]["restored"]
        assert run(_state(settings)) == before

        # Over a populated target: refused, then replaced with force.
        with pytest.raises(TargetNotEmpty, match=r"database: \d+ tables"):
            run(restore_backup(settings, backup))
        run(restore_backup(settings, backup, force=True))
        assert run(_state(settings)) == before

        # A --force restore whose SQL fails half-way leaves the target as it was: the drops
        # and the dump run in one transaction.
        from storage.backup import sql as backup_sql

        real_run = backup_sql._run

        def failing_run(args, env):
            out = real_run(args, env)
            files = [a[len("--file="):] for a in args if a.startswith("--file=")]
            if Path(args[0]).name == "pg_restore" and files:  # the dump as SQL: break its end
                script = Path(files[0])
                script.write_text(script.read_text() + "\nSELECT 1/0;\n")
            return out

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(backup_sql, "_run", failing_run)
            with pytest.raises(BackupError, match="division by zero"):
                run(restore_backup(settings, backup, force=True))
        assert run(_state(settings)) == before
    finally:
        run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _drop_mongo(settings: Settings) -> None:
    from pymongo import MongoClient

    with MongoClient(settings.mongo_url) as client:
        db = client[settings.mongo_database]
        for name in db.list_collection_names():
            db.drop_collection(name)
        assert db.list_collection_names() == []
