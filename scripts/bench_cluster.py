"""Benchmark the distributed pipeline against the in-process loop, and 2 worker processes vs 1.

    .venv/bin/python scripts/bench_cluster.py [--images 16] [--size 1024] [--rounds 5]
                                              [--redis-db 13]

The same generated camera-like JPEGs go through, each on fresh state:

1. ``skygate scan --workers 1`` (the embedded, in-process loop; wall time includes its start-up);
2. one Celery worker ``-c 1`` on PostgreSQL (a fresh database) + Redis (``--redis-db``, default
   13), the files sent by ``skygate submit --wait``;
3. the same with ``-c 2`` (two worker processes);

repeated ``--rounds`` times, interleaved, every other round in the reverse order (one run's
figures move by 5-15 % from run to run on a shared machine, and the machine's speed drifts
over minutes): the ratios printed are the medians of the rounds'.

Printed: wall time (the command, start-up included) and span (first upload row to last
verdict, from the database: the pipeline's own time) of each, images/s over the span, the CPU
the workers used per image (read from /proc for the worker and its pool processes), and the
ratios on both. Targets (issue 13): one worker
>= 0.9 x the in-process loop; 2 processes >= 1.8 x 1 on 2 idle cores. The worker is started
before timing (start-up excluded) and the recovery sweep is off (``SKYGATE_SWEEP_INTERVAL=0``).
Both load the model before their first image (a worker's pool process when it starts, scan
before its first file), so no span includes that.
Needs PostgreSQL (``SKYGATE_TEST_PG_URL``, default postgresql://postgres@127.0.0.1:5432/postgres)
and Redis (``SKYGATE_TEST_REDIS_URL``, default redis://127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_methods import camera_jpeg  # noqa: E402

PG_ADMIN_URL = os.environ.get("SKYGATE_TEST_PG_URL",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SKYGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
TICKS = os.sysconf("SC_CLK_TCK")


def clean_env(**settings: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    return {**env, "SKYGATE_SWEEP_INTERVAL": "0", **settings}


def skygate(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "skygate.cli", *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=3600, check=False)
    if result.returncode != 0:
        raise SystemExit(f"skygate {args[0]} failed: {result.stderr[-2000:]}")
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its direct children (a Celery worker and its pool)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _pg_span(url: str) -> float:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        return float(await conn.fetchval(SPAN_SQL))
    finally:
        await conn.close()


def sqlite_span(path: Path) -> float:
    """The same span on the embedded database of ``scan`` (timestamps stored as text)."""
    import sqlite3
    from datetime import datetime

    with sqlite3.connect(path) as conn:
        first, last = conn.execute(
            "SELECT min(upload_date), max(processing_completed_at) FROM uploads").fetchone()
    return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()


# From the first upload row to the last verdict: the pipeline's own time, without the
# client's start-up (imports, connections), which is the same whatever the worker count.
SPAN_SQL = ("SELECT extract(epoch FROM max(processing_completed_at) - min(upload_date)) "
            "FROM uploads")


def run_cluster(folder: Path, tmp: Path, concurrency: int, redis_db: int
                ) -> tuple[float, float, float]:
    """(wall seconds of submit --wait, span seconds, worker CPU seconds) with one worker of
    ``concurrency``."""
    name = f"skygate_bench_cluster_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    data_dir = tmp / f"cluster{concurrency}"
    env = clean_env(SKYGATE_DATABASE_URL=PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name,
                    SKYGATE_BROKER_URL=f"{REDIS_URL}/{redis_db}",
                    SKYGATE_RESULT_BACKEND=f"{REDIS_URL}/{redis_db}",
                    SKYGATE_DATA_DIR=str(data_dir))
    worker = None
    try:
        skygate(["db", "upgrade"], env)
        log_path = tmp / f"worker{concurrency}.log"
        with open(log_path, "w") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers", "worker", "-l", "info",
                 "-c", str(concurrency), "-Q", "ingest,detect,model,aggregate",
                 "-n", f"bench{concurrency}-{uuid.uuid4().hex[:6]}@%h",
                 "--without-gossip", "--without-mingle"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 120
            while "ready." not in log_path.read_text():
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"worker did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.2)
            cpu_before = cpu_seconds(worker.pid)
            wall = skygate(["submit", str(folder), "--wait", "--out",
                            str(tmp / f"cluster{concurrency}.jsonl")], env)
            cpu = cpu_seconds(worker.pid) - cpu_before
            span = asyncio.run(_pg_span(env["SKYGATE_DATABASE_URL"].replace(
                "postgresql+asyncpg://", "postgresql://")))
            return wall, span, cpu
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run_scan(folder: Path, tmp: Path) -> tuple[float, float, float]:
    """(wall, span, CPU seconds) of ``skygate scan --workers 1``."""
    scan_dir = tmp / "scan"
    shutil.rmtree(scan_dir, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    local = skygate(["scan", str(folder), "--workers", "1", "--out", str(tmp / "scan.jsonl")],
                    clean_env(SKYGATE_DATA_DIR=str(scan_dir)))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    local_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return local, sqlite_span(scan_dir / "skygate.db"), local_cpu


def run_round(folder: Path, tmp: Path, redis_db: int, *, reverse: bool = False
              ) -> list[tuple[float, float, float]]:
    """(wall, span, CPU seconds) of scan, one worker -c 1 and one worker -c 2, run in this
    order or (``reverse``) the other way round: the speed of a shared machine drifts over
    minutes, and alternating the order keeps a drift from favouring whichever runs first."""
    runs = [lambda: run_scan(folder, tmp), lambda: run_cluster(folder, tmp, 1, redis_db),
            lambda: run_cluster(folder, tmp, 2, redis_db)]
    order = range(len(runs) - 1, -1, -1) if reverse else range(len(runs))
    results = {i: runs[i]() for i in order}
    return [results[i] for i in range(len(runs))]


LABELS = ("skygate scan --workers 1", "1 worker, -c 1", "1 worker, -c 2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5,
                        help="the three runs are repeated this many times, interleaved (in "
                             "turn forwards and backwards); the ratios are the medians of the "
                             "rounds'")
    parser.add_argument("--redis-db", type=int, default=13)
    args = parser.parse_args()
    n = args.images
    rounds = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        folder = tmp / "images"
        folder.mkdir()
        for i in range(n):
            (folder / f"img{i:03d}.jpg").write_bytes(camera_jpeg(args.size, args.size, seed=i))
        for r in range(max(1, args.rounds)):
            rounds.append(run_round(folder, tmp, args.redis_db, reverse=r % 2 == 1))
    cores = len(os.sched_getaffinity(0))
    print(f"{n} camera-like JPEGs of {args.size}x{args.size}, {cores} cores, "
          f"load average {os.getloadavg()[0]:.1f}, {len(rounds)} round(s)")
    print(f"  {'':<26} {'wall':>9} {'span':>9} {'img/s (span)':>13}  CPU per image")
    for r, runs in enumerate(rounds, 1):
        for label, (wall, span, cpu) in zip(LABELS, runs, strict=True):
            print(f"  {label:<26} {wall:7.2f} s {span:7.2f} s {n / span:13.2f}  "
                  f"{1000 * cpu / n:6.0f} ms   (round {r})")
    print("  (wall: the command, start-up included; span: first upload row to last verdict)")

    def ratios(a: int, b: int, measure: int) -> list[float]:
        return [runs[a][measure] / runs[b][measure] for runs in rounds]

    def show(values: list[float]) -> str:
        each = ", ".join(f"{v:.2f}" for v in values)
        return f"x{statistics.median(values):.2f}" + (f" ({each})" if len(values) > 1 else "")

    print(f"  one worker vs in-process : {show(ratios(0, 1, 1))} span, "
          f"{show(ratios(0, 1, 0))} wall (target >= 0.9); CPU per image "
          f"{show(ratios(0, 1, 2))}")
    print(f"  2 processes vs 1         : {show(ratios(1, 2, 1))} span, "
          f"{show(ratios(1, 2, 0))} wall (target >= 1.8 on 2 idle cores)")
    print("  (medians over the rounds, each round's ratio in brackets)")


if __name__ == "__main__":
    main()
