"""``skygate db upgrade`` as a user runs it: a subprocess with SKYGATE_* variables."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from pymongo import MongoClient

from storage.migrate import head_revision
from tests.conftest import _pg_admin, run

HEAD = head_revision()

pytestmark = pytest.mark.integration


def skygate(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "skygate.cli", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False,
    )


def test_db_upgrade_creates_tables_and_mongo_indexes_idempotently(pg_url, mongo_url, tmp_path):
    name = pg_url.rsplit("/", 1)[1] + "_cli"
    run(_pg_admin(f'CREATE DATABASE "{name}"'))
    database = f"cli_{uuid.uuid4().hex[:8]}"
    env = {
        "SKYGATE_DATABASE_URL": pg_url.rsplit("/", 1)[0] + "/" + name,
        "SKYGATE_MONGO_URL": f"{mongo_url}/{database}",
        "SKYGATE_DATA_DIR": str(tmp_path),
    }
    try:
        first = skygate("db", "upgrade", env=env)
        assert first.returncode == 0, first.stderr
        assert f"revision none -> {HEAD}" in first.stdout
        second = skygate("db", "upgrade", env=env)
        assert second.returncode == 0, second.stderr
        assert f"revision {HEAD} -> {HEAD}" in second.stdout

        client = MongoClient(mongo_url)
        try:
            db = client[database]
            indexes = {
                (c, spec["key"][0][0])
                for c in ("detection_metadata", "system_configuration")
                for n, spec in db[c].index_information().items()
                if n != "_id_"
            }
            configs = list(db["system_configuration"].find({"config_type": "model"}))
        finally:
            client.close()
        assert len(indexes) == 8
        # the default (CLIP probe, active) and the forensic LR (inactive), not duplicated
        assert sorted((c["config_name"], c["is_active"]) for c in configs) == [
            ("default_model", True), ("forensic_lr", False)]

        down = skygate("db", "downgrade", env=env)
        assert down.returncode == 0, down.stderr
        assert "revision none" in down.stdout
    finally:
        run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_db_upgrade_on_the_embedded_default(tmp_path):
    env = {"SKYGATE_DATA_DIR": str(tmp_path)}
    env_clean = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    result = subprocess.run(
        [sys.executable, "-m", "skygate.cli", "db", "upgrade"],
        env={**env_clean, **env}, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "skygate.db").is_file()
    assert "embedded SQL" in result.stdout
