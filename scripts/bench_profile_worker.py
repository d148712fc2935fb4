"""Where a worker's CPU goes per image: a Celery worker's tasks under a CPU profile, by phase.

    .venv/bin/python scripts/bench_profile_worker.py [--images 16] [--size 1024] [--grid 0]
                                                     [--redis-db 12] [--out worker.prof]

One worker (``-P solo``: the tasks run in the worker's own process, where the profiler
is) on a fresh PostgreSQL database and Redis DB ``--redis-db``, its model configuration's
``attribution_grid`` = ``--grid`` (``default``: the shipped one). It judges 4 warm-up images
unprofiled, then ``--images`` camera-like JPEGs sent by ``skygate submit --wait`` under
cProfile with the process CPU clock. Printed per image: the worker process's CPU (from
/proc), the tasks' own time (prepare, the five detect tasks, aggregate: the service and the
pipeline) by the phases of scripts/bench_profile.py, and the rest of the process (Celery,
kombu, Redis, the result backend: the per-task overhead). Needs PostgreSQL and Redis (as
scripts/bench_cluster.py).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# Deferred imports: heavy libraries (onnx, onnxruntime, scikit-learn, the clients) load only in
# the mode or child process that uses them.

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_cluster import (  # noqa: E402
    CLAIM_KEY,
    PG_ADMIN_URL,
    REDIS_URL,
    _admin,
    clean_env,
    cpu_seconds,
    skygate,
)
from bench_cpu import configure_grid  # noqa: E402
from bench_methods import camera_jpeg  # noqa: E402
from bench_profile import PHASES, cumulative  # noqa: E402

TASKS = ("prepare", "detect", "aggregate")  # workers/tasks.py: detect is every detect_<m>


def serve(out: Path) -> None:
    """The worker itself: profiled from SIGWINCH on, the profile written when it stops."""
    profile = cProfile.Profile(time.process_time)
    signal.signal(signal.SIGWINCH, lambda *_: profile.enable())
    from celery.__main__ import main as celery

    sys.argv = ["celery", "-A", "workers", "worker", "-P", "solo", "-l", "warning",
                "-Q", "ingest,detect,model,aggregate,webhooks", "--without-gossip",
                "--without-mingle", "-n", f"profile-{uuid.uuid4().hex[:6]}@%h"]
    try:
        celery()
    except SystemExit:
        pass
    finally:
        profile.disable()
        profile.dump_stats(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--grid", default="0")
    parser.add_argument("--redis-db", type=int, default=12)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    import redis

    name = f"skygate_bench_profile_{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(f"{REDIS_URL}/{args.redis_db}")
    claim = f"bench:{os.getpid()}:{uuid.uuid4().hex}"
    if not client.set(CLAIM_KEY, claim, nx=True, ex=7200):
        raise SystemExit(f"Redis DB {args.redis_db} is in use: pick another --redis-db")
    client.flushdb()
    client.set(CLAIM_KEY, claim, ex=7200)
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    worker = None
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        env = clean_env(SKYGATE_DATABASE_URL=PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name,
                        SKYGATE_BROKER_URL=f"{REDIS_URL}/{args.redis_db}",
                        SKYGATE_RESULT_BACKEND=f"{REDIS_URL}/{args.redis_db}",
                        SKYGATE_DATA_DIR=str(tmp / "data"))
        env["PYTHONPATH"] = str(ROOT)
        prof = tmp / "worker.prof"
        try:
            configure_grid(env, args.grid)
            for folder, count, seed in (("warm", 4, 10**6), ("images", args.images, 0)):
                (tmp / folder).mkdir()
                for i in range(count):
                    (tmp / folder / f"{folder}{i:03d}.jpg").write_bytes(
                        camera_jpeg(args.size, args.size, seed=seed + i))
            log = open(tmp / "worker.log", "w")  # noqa: SIM115 - the worker's, until it ends
            worker = subprocess.Popen([sys.executable, __file__, "--serve", str(prof)],
                                      env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            skygate(["submit", str(tmp / "warm"), "--wait"], env)  # waits for the worker
            worker.send_signal(signal.SIGWINCH)
            before = cpu_seconds(worker.pid)
            skygate(["submit", str(tmp / "images"), "--wait"], env)
            process = cpu_seconds(worker.pid) - before
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(timeout=60)
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            if client.get(CLAIM_KEY) == claim.encode():
                client.delete(CLAIM_KEY)
        stats = pstats.Stats(str(prof))
        if args.out:
            stats.dump_stats(args.out)
    report(stats, process, args)


def report(stats: pstats.Stats, process: float, args) -> None:
    n = args.images
    tasks = {t: sum(v[3] for (file, _l, func), v in stats.stats.items()
                    if file.endswith("workers/tasks.py") and func == t) for t in TASKS}
    in_tasks = sum(tasks.values())
    print(f"{n} camera-like JPEGs of {args.size}x{args.size}, attribution_grid {args.grid}, "
          f"one -P solo worker; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  worker process CPU (/proc, unprofiled part included): {1000 * process / n:.0f} ms "
          "per image")
    print(f"  in the tasks (profiled): {1000 * in_tasks / n:.0f} ms per image: "
          + ", ".join(f"{t} {1000 * v / n:.0f}" for t, v in tasks.items()))
    accounted = 0.0
    for label, suffix, func in PHASES:
        if not suffix:
            continue
        value = cumulative(stats, suffix, func)
        accounted += value
        if value:
            print(f"    {label:<42} {1000 * value / n:7.1f} ms")
    runs = cumulative(stats, "onnxruntime_inference_collection.py", "run")
    accounted += runs
    print(f"    {'encoder + probe head (onnxruntime runs)':<42} {1000 * runs / n:7.1f} ms")
    print(f"    {'service, database, event loops (the rest)':<42} "
          f"{1000 * (in_tasks - accounted) / n:7.1f} ms")
    total = sum(v[2] for v in stats.stats.values())
    print(f"  outside the tasks (Celery, kombu, Redis; profiled): "
          f"{1000 * (total - in_tasks) / n:.0f} ms per image")


if __name__ == "__main__":
    main()
