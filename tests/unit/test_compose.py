"""compose.yaml: valid against the Compose Specification (no Docker engine runs here, so the
schema check and the interpolation below stand in for ``docker compose config``), the stack it
describes is whole and hardened; the Dockerfile builds a locked, checked, unprivileged image."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SECRETS = {"POSTGRES_PASSWORD", "MONGO_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_USER",
           "MINIO_ROOT_PASSWORD", "SKYGATE_FLOWER_BASIC_AUTH"}
ONE_SHOTS = {"migrate", "minio-init"}


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
        assert env["SKYGATE_MONGO_URL"].startswith("mongodb://")
        assert "@mongo:27017/skygate" in env["SKYGATE_MONGO_URL"]
        assert env["SKYGATE_BLOB_URL"].startswith("s3://")
        assert env["SKYGATE_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert all(k.startswith(("SKYGATE_", "AWS_")) for k in env), name
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env), name
    assert services["postgres"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert services["api"]["command"][:2] == ["skygate", "api"]
    assert services["flower"]["command"][:2] == ["skygate", "flower"]
    assert "SKYGATE_FLOWER_BASIC_AUTH" in services["flower"]["environment"]


_VARIABLE = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


class MissingVariables(Exception):
    pass


def _interpolate(doc, env: dict[str, str]):
    """Compose's interpolation of ${VAR}, ${VAR:-default} and ${VAR:?error} in every value of
    the parsed file ($$ is a dollar). Every missing required variable is named, as
    ``docker compose config`` does."""
    missing = []

    def value(match):
        name, kind, arg = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            missing.append(f"{name}: {arg}")
            return ""
        return arg if kind == "-" else ""

    def walk(node):
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return _VARIABLE.sub(value, node.replace("$$", "\0")).replace("\0", "$")
        return node

    rendered = walk(doc)
    if missing:
        raise MissingVariables(sorted(set(missing)))
    return rendered


def _example_env() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def test_without_env_the_file_does_not_render_and_names_every_missing_secret():
    with pytest.raises(MissingVariables) as error:
        _interpolate(_compose(), {})
    named = {entry.split(":")[0] for entry in error.value.args[0]}
    assert named == SECRETS
    assert all(".env.example" in entry for entry in error.value.args[0])


def test_with_the_example_env_it_renders_and_every_secret_is_documented():
    example = _example_env()
    assert set(example) >= SECRETS
    paragraphs = ENV_EXAMPLE.read_text().split("\n\n")
    for name in SECRETS:  # each one explained by a comment in its paragraph
        paragraph = next(p for p in paragraphs if f"\n{name}=" in f"\n{p}")
        assert any(line.startswith("#") for line in paragraph.splitlines()), name
    rendered = _interpolate(_compose(), example)
    env = rendered["services"]["api"]["environment"]
    assert env["SKYGATE_DATABASE_URL"] == (
        f"postgresql://skygate:{example['POSTGRES_PASSWORD']}@postgres:5432/skygate")
    assert f":{example['REDIS_PASSWORD']}@redis:6379/0" in env["SKYGATE_BROKER_URL"]
    assert f"skygate:{example['MONGO_PASSWORD']}@mongo:27017/" in env["SKYGATE_MONGO_URL"]
    assert env["AWS_SECRET_ACCESS_KEY"] == example["MINIO_ROOT_PASSWORD"]
    assert rendered["services"]["api"]["ports"] == ["127.0.0.1:8000:8000"]
    opened = _interpolate(_compose(), example | {"SKYGATE_PUBLISH_ADDRESS": "0.0.0.0"})
    assert opened["services"]["flower"]["ports"] == ["0.0.0.0:5555:5555"]


def test_no_secret_has_a_default_value():
    text = COMPOSE.read_text()
    for name in SECRETS:
        assert f"${{{name}:-" not in text and f"${{{name}}}" not in text, name
    assert "change-me" not in text


def test_every_image_is_pinned_to_a_version():
    for name, svc in _compose()["services"].items():
        if "build" in svc:
            continue
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", (name, image)
        # A version, not a moving major (postgres:16): major.minor at least, or a dated release.
        assert re.match(r"^(\d+\.\d+(\.\d+)?|RELEASE\.\d{4}-\d\d-\d\dT[\d-]+Z)", tag), (name, image)


def test_published_ports_listen_on_loopback_unless_one_variable_opens_them():
    for name, svc in _compose()["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("${SKYGATE_PUBLISH_ADDRESS:-127.0.0.1}:"), (name, port)
    rendered = _interpolate(_compose(), _example_env())
    assert all(p.startswith("127.0.0.1:")
               for svc in rendered["services"].values() for p in svc.get("ports", []))


def test_every_service_has_a_memory_limit_a_restart_policy_and_a_health_check():
    services = _compose()["services"]
    for name, svc in services.items():
        assert re.match(r"^\d+[mg]$", str(svc.get("mem_limit", ""))), name
        if name in ONE_SHOTS:
            assert svc.get("restart") == "no", name  # they run once, then exit 0
        else:
            assert svc.get("restart") == "unless-stopped", name
            assert svc["healthcheck"]["test"], name
    # 2 detection processes at ≤ 0.9 GB each fit their container.
    detect = services["worker-detect"]["command"]
    assert detect[detect.index("-c") + 1] == "2" and services["worker-detect"]["mem_limit"] == "2g"


def test_redis_and_mongo_require_authentication():
    services = _compose()["services"]
    assert "--requirepass" in services["redis"]["command"]
    assert "REDISCLI_AUTH" in services["redis"]["environment"]  # the health check logs in
    mongo_env = services["mongo"]["environment"]
    assert {"MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"} <= set(mongo_env)
    env = services["worker-detect"]["environment"]
    assert "@" in env["SKYGATE_MONGO_URL"] and "authSource=admin" in env["SKYGATE_MONGO_URL"]
    assert env["SKYGATE_BROKER_URL"].startswith("redis://:${REDIS_PASSWORD:?")


def test_dockerfile_is_multi_stage_locked_checked_and_unprivileged():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.M)
    assert len(stages) >= 2 and stages[-1][1] == "runtime"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", text, re.M)
    assert "COPY . ." not in text
    assert "--require-hashes" in text and "requirements.lock" in text
    assert "sha256sum --check --strict SHA256SUMS" in text
    runtime = text[text.index("AS runtime"):]
    assert re.search(r"^USER (?!root)\w+", runtime, re.M)
    assert "COPY --from=build" in runtime and "pip install" not in runtime
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".venv", "var", ".git", ".env"} <= set(ignored)


def test_the_model_files_match_their_sums_and_the_seeded_hash():
    """The image build checks pipeline/assets/SHA256SUMS; keep it in step with the files
    (after retraining: cd pipeline/assets && sha256sum *.onnx *.kat.npz > SHA256SUMS)."""
    import hashlib

    from storage.seed import CLIP_ENCODER_PATH, CLIP_ENCODER_SHA256

    assets = ROOT / "pipeline" / "assets"
    sums = dict(reversed(line.split(maxsplit=1)) for line in
                (assets / "SHA256SUMS").read_text().splitlines())
    shipped = {p.name for p in assets.iterdir() if p.name.endswith((".onnx", ".kat.npz"))}
    assert set(sums) == shipped
    for name, digest in sums.items():
        assert hashlib.sha256((assets / name).read_bytes()).hexdigest() == digest, name
    assert sums[CLIP_ENCODER_PATH.removeprefix("builtin:")] == CLIP_ENCODER_SHA256
