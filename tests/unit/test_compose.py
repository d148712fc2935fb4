"""compose.yaml: valid against the Compose Specification (no Docker engine runs here, so the
schema check stands in for ``docker compose config``), and the stack it describes is whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "compose.yaml"


def test_compose_file_is_valid_against_the_compose_spec():
    exe = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(exe), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_names_every_service_with_health_checks_and_start_order():
    services = _compose()["services"]
    assert set(services) == {"postgres", "mongo", "redis", "minio", "minio-init", "migrate",
                             "worker-ingest", "worker-detect", "api", "flower"}
    assert services["mongo"]["image"].startswith("mongo:")
    for name, svc in services.items():
        if name not in ("migrate", "minio-init"):
            assert "healthcheck" in svc and svc["healthcheck"]["test"], name
    assert services["migrate"]["command"] == ["skygate", "db", "upgrade"]
    assert services["migrate"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"}, "mongo": {"condition": "service_healthy"}}
    for name in ("worker-ingest", "worker-detect", "api", "flower"):
        deps = services[name]["depends_on"]
        assert deps["migrate"] == {"condition": "service_completed_successfully"}, name
        assert deps["minio-init"] == {"condition": "service_completed_successfully"}, name
        assert all(deps[d]["condition"] == "service_healthy"
                   for d in ("postgres", "mongo", "redis")), name


def test_workers_split_queues_and_share_blobs_through_minio_not_a_folder():
    doc = _compose()
    services = doc["services"]

    def queues(name):
        cmd = services[name]["command"]
        return set(cmd[cmd.index("-Q") + 1].split(","))

    assert queues("worker-ingest") == {"ingest", "aggregate", "webhooks"}
    assert queues("worker-detect") == {"detect", "model"}
    assert set(doc["volumes"]) >= {"pgdata", "mongodata", "miniodata"}
    assert "blobs" not in doc["volumes"]
    assert services["minio"]["volumes"] == ["miniodata:/data"]
    assert services["minio-init"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert "mc mb --ignore-existing" in " ".join(services["minio-init"]["command"])
    for name in ("migrate", "worker-ingest", "worker-detect", "api", "flower"):
        svc = services[name]
        assert not svc.get("volumes"), name  # no shared folder: the blobs are in MinIO
        env = svc["environment"]
        assert env["SKYGATE_DATA_DIR"] == "/data" and env["SKYGATE_BROKER_URL"].startswith("redis")
        assert env["SKYGATE_MONGO_URL"].startswith("mongodb://mongo")
        assert env["SKYGATE_BLOB_URL"].startswith("s3://")
        assert env["SKYGATE_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert all(k.startswith(("SKYGATE_", "AWS_")) for k in env), name
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env), name
    assert services["postgres"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert services["api"]["command"][:2] == ["skygate", "api"]
    assert services["flower"]["command"][:2] == ["skygate", "flower"]
    assert "SKYGATE_FLOWER_BASIC_AUTH" in services["flower"]["environment"]
