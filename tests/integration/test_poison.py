"""A poison image past prepare: one method kills its own worker process (SIGKILL, as a
segfaulting native decoder or the OOM killer does) on one image, every time. On a real
``-c 2`` worker the method's deliveries are counted per (upload, stage): after
SKYGATE_MAX_DELIVERIES deaths it ends status=error and that upload still gets its verdict
from the other methods; the rest of the batch finishes; nothing is prepared twice.

The kill comes from tests/poison_hook.py, which only a worker started with
``-I tests.poison_hook`` imports (nothing in the pipeline knows of it)."""

from __future__ import annotations

import re
import time

import pytest

from testkit import faultrig as rig
from tests.conftest import worker_env

pytestmark = pytest.mark.slow

IMAGES = 24
# Two poisons of two methods (one image each): exif on image 5, the model on 12 (the methods
# that read the image in the canvas: the evidence-only ones wait for a request).
POISON = {"exif": "img_7_0005", "model": "img_7_0012"}


@pytest.fixture
def poison_env(tmp_path, pg_url, mongo_url):
    with worker_env(pg_url, mongo_url, tmp_path, "poison",
                    FAULTRIG_POISON=",".join(f"{m}:{part}" for m, part in POISON.items()),
                    FAULTRIG_POISON_LOG=str(tmp_path / "kills.log")) as env:
        yield env


def test_a_method_that_kills_its_worker_is_capped_and_the_batch_finishes(tmp_path, poison_env):
    env = poison_env
    rig.migrate(env)
    worker = rig.Worker(env, tmp_path / "worker.log", extra_args=("-I", "tests.poison_hook"))
    worker.start()
    rig.make_images(tmp_path / "images", IMAGES, seed=7)
    out = tmp_path / "records.jsonl"
    started = time.monotonic()
    submit = rig.start_submit(env, tmp_path / "images", out, 240)
    try:
        stdout, stderr = submit.communicate(timeout=300)
    finally:
        if submit.poll() is None:
            submit.kill()
        elapsed = time.monotonic() - started
        worker.stop()
    log = (tmp_path / "worker.log").read_text()
    context = f"\nstdout:{stdout[-1500:]}\nstderr:{stderr[-1500:]}\nlog:{log[-4000:]}"
    assert submit.returncode == 0, context
    assert f"summary: done {IMAGES}, failed 0, still pending 0" in stdout, context

    kills = (tmp_path / "kills.log").read_text().splitlines()
    for method, part in POISON.items():
        # Exactly SKYGATE_MAX_DELIVERIES (3) deliveries died; the next gave up.
        assert sum(1 for k in kills if k.startswith(f"{method} {part}")) == 3, kills
    assert len(kills) == 3 * len(POISON), kills

    db = env["SKYGATE_DATABASE_URL"]
    rows = rig.sql(db, "SELECT u.original_file_name, d.method_name, m.result_details "
                       "FROM method_results m JOIN detection_results r USING (result_id) "
                       "JOIN uploads u USING (upload_id) "
                       "JOIN detection_methods d USING (method_id)")
    errors = {(name.split(".")[0], method): details["error"]
              for name, method, details in rows if details.get("status") == "error"}
    assert errors == {(part, method): f"detect.{method} killed its worker 3 times: poison image"
                      for method, part in POISON.items()}, errors

    audit = rig.audit(db, env["SKYGATE_MONGO_URL"])
    assert audit["status"] == {"done": IMAGES} and audit["results"] == IMAGES, audit
    assert audit["dup_results"] == audit["dup_method_rows"] == audit["dup_documents"] == 0
    assert audit["results_without_5_methods"] == 0, audit
    # No duplicate prepares: none re-sent by the sweep, none redelivered, one per upload.
    assert audit["recoveries"] == 0 and audit["max_delivery_count"] == 1, audit
    prepares = re.findall(r"Task skygate\.prepare\[([0-9a-f-]+)\] received", log)
    assert len(prepares) == len(set(prepares)) == IMAGES, context
    print(f"{IMAGES} images with {len(POISON)} poisons: {elapsed:.1f}s")
