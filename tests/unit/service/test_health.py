"""``skygate doctor`` tells the truth: checks run in dependency order, a check whose
dependency failed is skipped naming it, and the failure reported is the cause."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from schemas.settings import Settings
from service.runtime.health import Check, _skipped, causes, needs
from tests.conftest import ROOT, free_port


def doctor(tmp_path, *args, **env):
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
            "SKYGATE_DATA_DIR": str(tmp_path / "var")}
    return subprocess.run([sys.executable, "-m", "skygate.cli", "doctor", *args],
                          env=base | env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=240, check=False)


@pytest.mark.slow
def test_embedded_default_passes_and_json_parses(tmp_path):
    subprocess.run([sys.executable, "-m", "skygate.cli", "db", "upgrade"], cwd=tmp_path,
                   env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                        "SKYGATE_DATA_DIR": str(tmp_path / "var")},
                   capture_output=True, timeout=240, check=True)
    result = doctor(tmp_path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["causes"] == []
    assert {c["name"] for c in report["checks"]} == set(needs(Settings()))
    assert all(c["status"] == "ok" for c in report["checks"]), report


@pytest.mark.slow
def test_postgresql_stopped_is_named_as_the_cause_and_nothing_else(tmp_path):
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/skygate"  # nothing listens
    result = doctor(tmp_path, "--json", SKYGATE_DATABASE_URL=closed)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["causes"] == ["database"]
    by_name = {c["name"]: c for c in report["checks"]}
    assert "PostgreSQL" in by_name["database"]["detail"]
    assert by_name["database"]["hint"] == "start PostgreSQL or fix SKYGATE_DATABASE_URL"
    for name in ("documents", "pools", "model", "model known-answer check"):
        assert by_name[name]["status"] == "skipped", by_name[name]
        assert by_name[name]["detail"] == "skipped: database unreachable"
    assert {c["status"] for n, c in by_name.items() if n not in (
        "database", "documents", "pools", "model", "model known-answer check")} == {"ok"}
    # No hint about things that are not the cause.
    assert "MongoDB" not in result.stdout and "model_path" not in result.stdout
    assert "failed: database" in result.stderr and "PostgreSQL" in result.stderr


def test_a_skip_names_the_root_cause_through_a_chain():
    db = Check("database", False, "PostgreSQL …: unreachable", "start PostgreSQL",
               reachable=False)
    done = {"database": db}
    done["documents"] = _skipped("documents", db, done)
    model = _skipped("model", done["documents"], done)
    assert model.detail == "skipped: database unreachable" and model.cause == "database"
    assert causes([db, done["documents"], model]) == [db]
    unmigrated = Check("database", False, "at revision none", "run `skygate db upgrade`")
    assert _skipped("pools", unmigrated, {}).detail == "skipped: database failing"


def test_the_embedded_document_store_depends_on_the_database_mongo_does_not():
    assert needs(Settings())["documents"] == ("database",)
    assert needs(Settings(mongo_url="mongodb://127.0.0.1/x"))["documents"] == ()
    assert needs(Settings())["model known-answer check"] == ("model",)
