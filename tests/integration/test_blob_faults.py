"""The blob folder read-only, then full, mid-batch — real faults of a real file system: the
folder is a small tmpfs of the test's own, remounted read-only (EROFS) and then filled to the
last byte (ENOSPC). Every task that meets them retries with backoff (storage.faults counts
those OSErrors as transient): afterwards every upload is done with no command typed, with no
method in error and no stored reason anywhere naming a server path."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time

import pytest

from testkit import faultrig as rig
from tests.conftest import worker_env

pytestmark = pytest.mark.slow

IMAGES = 30
# Each fault lasts this long (the measurement used 60 s: FAULTRIG_BLOB_FAULT_SECONDS).
FAULT_SECONDS = float(os.environ.get("FAULTRIG_BLOB_FAULT_SECONDS", "12"))


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def blob_mount(tmp_path):
    folder = tmp_path / "blobfs"
    folder.mkdir()
    # A privilege of the machine, not a service: skipped (even in CI) where it is missing.
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = _mount("-t", "tmpfs", "-o", "size=96m", "tmpfs", str(folder))
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        _mount("-o", "remount,rw", str(folder))
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _remount(folder, mode: str) -> None:
    # A remount read-only waits for files open for writing to close (EBUSY meanwhile).
    rig.wait_until(lambda: _mount("-o", f"remount,{mode}", str(folder)).returncode == 0, 30,
                   f"remount {mode}", interval=0.05)


def _fill(folder) -> None:
    """Fill the file system to its last byte: every write after this is ENOSPC."""
    with open(folder / "filler", "wb", buffering=0) as out:
        for size in (1 << 20, 4096, 1):  # unbuffered: each write reaches the file system
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)


def test_blob_folder_read_only_then_full_mid_batch_heals(tmp_path, pg_url, mongo_url,
                                                           blob_mount):
    with worker_env(pg_url, mongo_url, tmp_path, "blobfault",
                    SKYGATE_BLOB_URL=f"file://{blob_mount}/blobs") as env:
        rig.migrate(env)
        worker = rig.Worker(env, tmp_path / "worker.log")
        worker.start()
        rig.make_images(tmp_path / "images", IMAGES, seed=9)
        out = tmp_path / "records.jsonl"
        db = env["SKYGATE_DATABASE_URL"]
        submit = rig.start_submit(env, tmp_path / "images", out, 400)
        try:
            # Every file stored and ingested, a few judged: then the folder goes read-only.
            rig.wait_until(lambda: rig.sql(db, "SELECT count(*) FROM uploads")[0][0] == IMAGES
                           and rig.done_count(db) >= 3, 120, "batch ingested")
            _remount(blob_mount, "ro")
            time.sleep(FAULT_SECONDS)
            _remount(blob_mount, "rw")
            rig.wait_until(lambda: rig.done_count(db) >= IMAGES // 2, 240, "half done")
            _fill(blob_mount)
            time.sleep(FAULT_SECONDS)
            (blob_mount / "filler").unlink()
            stdout, stderr = submit.communicate(timeout=420)
        finally:
            if submit.poll() is None:
                submit.kill()
            worker.stop()
        log = (tmp_path / "worker.log").read_text()
        context = f"\nstdout:{stdout[-1500:]}\nstderr:{stderr[-1500:]}\nlog:{log[-5000:]}"
        assert submit.returncode == 0, context
        assert f"summary: done {IMAGES}, failed 0, still pending 0" in stdout, context
        audit = rig.audit(db, env["SKYGATE_MONGO_URL"])
        assert audit["status"] == {"done": IMAGES}, audit
        assert audit["dup_results"] == audit["dup_method_rows"] == audit["dup_documents"] == 0
        assert audit["results_without_5_methods"] == 0, audit
        # Both faults were met (and retried), not slept through.
        assert "Read-only file system" in log and "No space left on device" in log, context
        errors = rig.sql(db, "SELECT result_details->>'error' FROM method_results "
                             "WHERE result_details->>'status' = 'error'")
        assert errors == [], errors  # no method judged without its picture or its input
        reasons = rig.sql(db, "SELECT error FROM uploads WHERE error IS NOT NULL")
        assert reasons == [], reasons
