"""Fault benchmark: a 200-image batch through `skygate submit --wait` on a private cluster
(own redis-server, PostgreSQL cluster, nx-27017, RabbitMQ node; one worker -c 2), with one
fault mid-batch, and no manual command afterwards. Prints, per fault, how long the batch took,
what --wait reported, and the audit (uploads by status, duplicate rows and documents, how many
uploads the recovery sweep re-sent).

    .venv/bin/python scripts/bench_faults.py                       # every fault, 200 images
    .venv/bin/python scripts/bench_faults.py --images 60 --faults redis_restart,pg_restart

Faults: none, worker_sigkill, redis_restart, pg_restart, rabbit_worker_sigkill,
rabbit_restart, poison1 and poison2 (one or two images on which a method kills its
worker). Recovery settings are the production defaults except SKYGATE_STUCK_AFTER
(--stuck-after, default 60 s) and SKYGATE_SWEEP_INTERVAL (5 s), so a run takes minutes, and
the Redis visibility timeout (--visibility, default 330 s = 2 x 150 s + 30 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit import faultrig as rig  # noqa: E402

FAULTS = ["none", "worker_sigkill", "redis_restart", "pg_restart", "rabbit_worker_sigkill",
          "rabbit_restart", "poison1", "poison2"]
# poisonN: the exif method SIGKILLs its worker process on N images (tests/poison_hook.py,
# loaded by the worker with -I): no fault mid-batch, the poisons are in the batch.
POISON_IMAGES = ["img_7_0025", "img_7_0060"]


def start_mongo(workdir: Path):
    exe = shutil.which("nx-27017") or str(Path(sys.executable).parent / "nx-27017")
    port = rig.free_port()
    proc = subprocess.Popen([exe, "--host", "127.0.0.1", "-p", str(port), "--db", "memory",
                             "--log-file", str(workdir / "nx.log"), "--pid-file",
                             str(workdir / "nx.pid")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, cwd=workdir)
    rig.wait_until(lambda: rig.port_open(port), 30, "nx-27017 listening")
    return proc, f"mongodb://127.0.0.1:{port}"


def run_one(fault: str, images: int, args, mongo_url: str, workdir: Path) -> dict:  # noqa: PLR0915 - one fault run, read top to bottom
    work = workdir / fault
    work.mkdir()
    pg = rig.Postgres()
    pg.init()
    redis_dir = work / "redis"
    redis_dir.mkdir()
    redis = rig.Redis(redis_dir)
    redis.start()
    rabbit = None
    broker = f"{redis.url}/0"
    if fault.startswith("rabbit"):
        rabbit = rig.Rabbit()
        rabbit.start()
        broker = rabbit.url
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")},
           "SKYGATE_DATABASE_URL": pg.url,
           "SKYGATE_MONGO_URL": f"{mongo_url}/b{uuid.uuid4().hex[:8]}",
           "SKYGATE_BROKER_URL": broker, "SKYGATE_RESULT_BACKEND": f"{redis.url}/1",
           "SKYGATE_DATA_DIR": str(work / "data"), "SKYGATE_LOG_FORMAT": "text",
           "SKYGATE_STUCK_AFTER": str(args.stuck_after), "SKYGATE_SWEEP_INTERVAL": "5",
           "SKYGATE_VISIBILITY_TIMEOUT": str(args.visibility)}
    extra: tuple[str, ...] = ()
    if fault.startswith("poison"):
        env["FAULTRIG_POISON"] = ",".join(
            f"exif:{name}" for name in POISON_IMAGES[:int(fault[len("poison"):])])
        env["FAULTRIG_POISON_LOG"] = str(work / "kills.log")
        extra = ("-I", "tests.poison_hook")
    workers = []
    try:
        rig.migrate(env)
        worker = rig.Worker(env, work / "worker.log", extra_args=extra)
        worker.start()
        workers.append(worker)
        rig.make_images(work / "images", images, seed=7)
        out = work / "records.jsonl"
        started = time.monotonic()
        submit = rig.start_submit(env, work / "images", out, args.timeout)
        rig.wait_until(lambda: rig.done_count(pg.url) >= images // 4, 900, "a quarter done")
        fault_at = time.monotonic() - started
        if fault in ("worker_sigkill", "rabbit_worker_sigkill"):
            workers[-1].kill9()
            time.sleep(3)
            replacement = rig.Worker(env, work / "worker.log")
            replacement.start()
            workers.append(replacement)
        elif fault == "redis_restart":
            redis.kill()
            time.sleep(11)
            redis.start()
        elif fault == "pg_restart":
            pg.stop("fast")
            time.sleep(12)
            pg.start()
        elif fault == "rabbit_restart":
            rabbit.kill()
            time.sleep(11)
            rabbit.start()
        stdout, _ = submit.communicate(timeout=args.timeout + 60)
        elapsed = time.monotonic() - started
        records = rig.read_records(out)
        audit = rig.audit(pg.url, env["SKYGATE_MONGO_URL"])
        summary = [line for line in stdout.splitlines() if line.startswith("summary:")]
        kills = work / "kills.log"
        return {"fault": fault, "images": images, "fault_at_s": round(fault_at, 1),
                "kills": len(kills.read_text().splitlines()) if kills.exists() else 0,
                "batch_s": round(elapsed, 1), "exit": submit.returncode,
                "summary": summary[-1] if summary else None,
                "records": {s: sum(r["status"] == s for r in records)
                            for s in {r["status"] for r in records}},
                **audit}
    finally:
        for w in workers:
            w.stop()
        if rabbit:
            rabbit.destroy()
        redis.kill()
        pg.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--faults", default=",".join(FAULTS[1:]))
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--stuck-after", type=int, default=60)
    parser.add_argument("--visibility", type=int, default=330)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="skygate-bench-faults-"))
    mongo, mongo_url = start_mongo(workdir)
    try:
        for fault in args.faults.split(","):
            result = run_one(fault, args.images, args, mongo_url, workdir)
            print(json.dumps(result, default=str), flush=True)
    finally:
        mongo.terminate()
        mongo.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
