"""``skygate retry`` with a broker that does not answer: the CLI's answer to the dispatch's
one error (QueueUnavailable) is a message and exit 1, the upload is left queued with the
reason (the recovery sweep re-sends it), and the run is audited as failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from schemas.settings import Settings
from tests.conftest import ROOT, free_port, run


def test_retry_with_the_broker_down_says_so_and_leaves_the_upload_queued(tmp_path):
    from storage import audit, migrate
    from storage import repository as repo
    from storage.db import create_engine

    settings = Settings(data_dir=tmp_path, broker_url=None)

    async def failed_upload():
        engine = create_engine(settings.sqlalchemy_url)
        try:
            await migrate.upgrade(engine)
            uid, _ = await repo.create_upload(
                engine, user_id=None, file_name="a.png", original_file_name="a.png",
                file_path="k", file_size=1, file_type="png", mime_type="image/png",
                sha256="1" * 64)
            await repo.mark_failed(engine, uid, "test: failed before")
            return uid
        finally:
            await engine.dispose()

    async def state(uid):
        engine = create_engine(settings.sqlalchemy_url)
        try:
            rows, _ = await audit.query(engine, action="uploads.retry", limit=5)
            return await repo.get_upload(engine, uid), rows
        finally:
            await engine.dispose()

    uid = run(failed_upload())
    closed = f"redis://127.0.0.1:{free_port()}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    env.update(SKYGATE_DATA_DIR=str(tmp_path), SKYGATE_BROKER_URL=closed,
               SKYGATE_RESULT_BACKEND=closed)
    result = subprocess.run([sys.executable, "-m", "skygate.cli", "retry", "--failed"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 1, result.stderr
    assert f"upload {uid} could not be queued" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    # stderr is not a terminal: the error is a JSON log record like every other line there.
    errors = [e for e in map(json.loads, result.stderr.splitlines()) if e["level"] == "ERROR"]
    assert any(e["message"].startswith("error: retry: ") for e in errors), result.stderr
    upload, entries = run(state(uid))
    assert upload["status"] == "queued" and "queue was unavailable" in upload["error"]
    assert [e["outcome"] for e in entries] == ["failed"]
