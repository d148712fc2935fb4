"""Benchmark the distributed pipeline against the in-process loop, and 2 worker processes vs 1.

    .venv/bin/python scripts/bench_cluster.py [--images 16] [--size 1024] [--rounds 8]
                                              [--redis-db 13] [--grid default|N]

Each round generates new camera-like JPEGs and runs them through:

1. ``skygate scan --workers 1`` (the embedded, in-process loop, on a fresh data folder; wall
   time includes its start-up);
2. one Celery worker ``-c 1`` on PostgreSQL + Redis (``--redis-db``, default 13), the files
   sent by ``skygate submit --wait``;
3. one worker ``-c 2`` (two worker processes; Redis DB ``--redis-db`` + 1);

the two workers, each on a fresh database of its own, are started once before the first
round and judge ``--warm-up`` images untimed (start-up and a process's first, costlier images
excluded: the model loaded, first calls made), the recovery sweep off
(``SKYGATE_SWEEP_INTERVAL=0``); scan judges the same warm-up images first in each of its runs,
and its span starts at the round's first image. The three runs of a
round follow each other, every other round in the reverse order: one run's figures move by
5-15 % from run to run on a shared machine and its speed drifts over minutes, so the ratios
printed are the medians of many short rounds' ratios.

Printed: wall time (the command, start-up included) and span (first upload row to last
verdict, from the database: the pipeline's own time) of each, images/s over the span, the CPU
the workers used per image (read from /proc for the worker and its pool processes), and the
ratios on both; and how long the -c 1 worker spends between one task's end and the next one's
start (from its log). Targets (issue 13): one worker >= 0.9 x the in-process loop; 2 processes
>= 1.8 x 1 on 2 idle cores.
Needs PostgreSQL (``SKYGATE_TEST_PG_URL``, default postgresql://postgres@127.0.0.1:5432/postgres)
and Redis (``SKYGATE_TEST_REDIS_URL``, default redis://127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import resource
import shutil
import statistics
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

from bench_cpu import configure_grid  # noqa: E402
from bench_methods import camera_jpeg  # noqa: E402

PG_ADMIN_URL = os.environ.get("SKYGATE_TEST_PG_URL",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SKYGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
TICKS = os.sysconf("SC_CLK_TCK")
CLAIM_KEY = "skygate:test:claimed-by"  # the test sessions' claim on a Redis DB
#: The model configuration's attribution_grid in every run (--grid; "default": as shipped).
GRID = {"value": "default"}


def clean_env(**settings: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    # SKYGATE_MODEL_HEATMAP: the model configuration's attribution_grid decides (0: no map).
    return {**env, "SKYGATE_SWEEP_INTERVAL": "0", "SKYGATE_MODEL_HEATMAP": "1", **settings}


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


async def _pg_value(url: str, sql: str, *args):
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"),
                                 timeout=5)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def sqlite_span(path: Path) -> float:
    """The same span on the embedded database of ``scan`` (timestamps stored as text), over
    the round's images (not the warm-up's)."""
    import sqlite3
    from datetime import datetime

    with sqlite3.connect(path) as conn:
        first, last = conn.execute(
            "SELECT min(upload_date), max(processing_completed_at) FROM uploads "
            "WHERE original_file_name NOT LIKE 'warm%'").fetchone()
    return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()


# From the first upload row to the last verdict: the pipeline's own time, without the
# client's start-up (imports, connections), which is the same whatever the worker count.
SPAN_SQL = ("SELECT extract(epoch FROM max(processing_completed_at) - min(upload_date)) "
            "FROM uploads WHERE upload_id > $1")


def handoffs(log_text: str) -> list[float]:
    """Seconds from one task's end to the next one's start, in the order they ran, from a
    worker's JSON log lines (a -c 1 worker runs one at a time): a task ends at its
    "succeeded in" line and started that runtime earlier (the runtime includes storing its
    result and the chord's step; the gap, the ack, the next message and its hand-off)."""
    from datetime import datetime

    spans = []
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
            runtime = re.search(r"\] succeeded in ([0-9.e-]+)s", record["message"])
        except (ValueError, KeyError, TypeError):
            continue
        if runtime:
            end = datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()
            spans.append((end - float(runtime.group(1)), end))
    spans.sort()
    return [b[0] - a[1] for a, b in itertools.pairwise(spans)]


class ClusterWorker:
    """One worker of ``concurrency`` on a fresh PostgreSQL database and its own Redis DB,
    started once (and its pool loaded with the model) and timed over many submits: the
    runs of a round are then seconds apart, not a database and a worker start-up apart.
    ``root``: the checkout whose code the worker runs (and whose migrations its database
    gets): another one's, to measure two versions side by side (``python -m celery`` run in
    a checkout imports that checkout's packages first)."""

    def __init__(self, tmp: Path, concurrency: int, redis_db: int, *, root: Path = ROOT):
        import redis

        self.concurrency, self.tmp, self.worker, self.root = concurrency, tmp, None, root
        tag = f"{concurrency}" if root == ROOT else f"{concurrency}-{redis_db}"
        self.log_path, self.gaps = tmp / f"worker{tag}.log", []  # gaps: handoffs()
        self.name = f"skygate_bench_cluster_{uuid.uuid4().hex[:8]}"
        # Claimed as the test sessions claim theirs (tests/conftest.py: claimed_redis_db), so
        # neither takes the other's tasks; then emptied (a killed run's stale messages).
        self.redis = redis.Redis.from_url(f"{REDIS_URL}/{redis_db}")
        self.claim = f"bench:{os.getpid()}:{uuid.uuid4().hex}"
        if not self.redis.set(CLAIM_KEY, self.claim, nx=True, ex=7200):
            raise SystemExit(f"Redis DB {redis_db} is in use ({CLAIM_KEY} = "
                             f"{self.redis.get(CLAIM_KEY)!r}): pick another --redis-db")
        self.redis.flushdb()
        self.redis.set(CLAIM_KEY, self.claim, ex=7200)
        asyncio.run(_admin(f'CREATE DATABASE "{self.name}"'))
        self.env = clean_env(SKYGATE_DATABASE_URL=PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.name,
                             SKYGATE_BROKER_URL=f"{REDIS_URL}/{redis_db}",
                             SKYGATE_RESULT_BACKEND=f"{REDIS_URL}/{redis_db}",
                             SKYGATE_DATA_DIR=str(tmp / f"cluster{tag}"))
        self.pg_url = self.env["SKYGATE_DATABASE_URL"]
        try:
            configure_grid(self.env, GRID["value"], root=root)  # db upgrade, then the grid
            log_path = self.log_path
            with open(log_path, "w") as log:
                self.worker = subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "workers", "worker", "-l", "info",
                     "-c", str(concurrency), "-Q", "ingest,detect,model,aggregate,webhooks",
                     "-n", f"bench{concurrency}-{uuid.uuid4().hex[:6]}@%h",
                     "--without-gossip", "--without-mingle"],
                    env=self.env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 120
            while "ready." not in log_path.read_text():
                if self.worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"worker did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.2)
        except BaseException:
            self.close()
            raise

    def submit(self, folder: Path) -> tuple[float, float, float]:
        """(wall seconds of ``skygate submit --wait``, span seconds, worker CPU seconds)."""
        before = asyncio.run(_pg_value(self.pg_url, "SELECT coalesce(max(upload_id), 0) "
                                                    "FROM uploads"))
        cpu_before, logged = cpu_seconds(self.worker.pid), self.log_path.stat().st_size
        wall = skygate(["submit", str(folder), "--wait", "--out",
                        str(self.log_path.with_suffix(".jsonl"))], self.env)
        cpu = cpu_seconds(self.worker.pid) - cpu_before
        with open(self.log_path, "rb") as log:
            log.seek(logged)
            self.gaps += handoffs(log.read().decode(errors="replace"))
        return wall, float(asyncio.run(_pg_value(self.pg_url, SPAN_SQL, int(before)))), cpu

    def close(self) -> None:
        if self.worker is not None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        if self.redis.get(CLAIM_KEY) == self.claim.encode():
            self.redis.delete(CLAIM_KEY)


def run_scan(folder: Path, tmp: Path) -> tuple[float, float, float]:
    """(wall, span, CPU seconds) of ``skygate scan --workers 1`` over the warm-up images and
    then the round's: the span is the round's images only, as warm as a worker's."""
    scan_dir = tmp / "scan"
    shutil.rmtree(scan_dir, ignore_errors=True)
    configure_grid(clean_env(SKYGATE_DATA_DIR=str(scan_dir)), GRID["value"])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    warm_up = tmp / "warm-up"
    local = skygate(["scan", str(warm_up), str(folder), "--workers", "1",
                     "--out", str(tmp / "scan.jsonl")], clean_env(SKYGATE_DATA_DIR=str(scan_dir)))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    local_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # CPU as if for the round's images only: the run's average per image, warm-up included.
    share = len(list(folder.iterdir())) / len(list(folder.iterdir()) + list(warm_up.iterdir()))
    return local, sqlite_span(scan_dir / "skygate.db"), local_cpu * share


def run_round(folder: Path, tmp: Path, workers: list[ClusterWorker], *, reverse: bool = False
              ) -> list[tuple[float, float, float]]:
    """(wall, span, CPU seconds) of scan, the -c 1 worker and the -c 2 worker on the round's
    images, in this order or (``reverse``) the other way round: the speed of a shared
    machine drifts over minutes, and alternating keeps a drift from favouring one side."""
    runs = [lambda: run_scan(folder, tmp), *[lambda w=w: w.submit(folder) for w in workers]]
    order = range(len(runs) - 1, -1, -1) if reverse else range(len(runs))
    results = {i: runs[i]() for i in order}
    return [results[i] for i in range(len(runs))]


def round_images(tmp: Path, r: int, n: int, size: int) -> Path:
    """Round ``r``'s ``n`` camera-like JPEGs, in a folder of their own: new images each round
    (the workers' databases keep what they judged; the same content would only be found
    again)."""
    folder = tmp / f"images{r}"
    folder.mkdir()
    for i in range(n):
        (folder / f"img{i:03d}.jpg").write_bytes(camera_jpeg(size, size, seed=r * n + i))
    return folder


LABELS = ("skygate scan --workers 1", "1 worker, -c 1", "1 worker, -c 2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=8,
                        help="the three runs are repeated this many times, interleaved (in "
                             "turn forwards and backwards); the ratios are the medians of the "
                             "rounds'")
    parser.add_argument("--warm-up", type=int, default=6,
                        help="images each worker judges before the first round, untimed "
                             "(scan judges them first in each of its runs, outside its span)")
    parser.add_argument("--redis-db", type=int, default=13,
                        help="the -c 1 worker's Redis DB; the -c 2 worker's is the next one")
    parser.add_argument("--grid", default="default",
                        help="the model configuration's attribution_grid (0: no occlusion "
                             "map; default: as shipped)")
    args = parser.parse_args()
    GRID["value"] = args.grid
    n = args.images
    rounds = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        workers: list[ClusterWorker] = []
        warm_cpu: list[float] = []
        try:
            # A process's first images cost more than the next ones (first calls, caches,
            # prepared statements: measured ≈ 15-30 ms an image over the first 16): every
            # run is measured warm, as a long-lived worker or a long scan runs.
            warm_up = tmp / "warm-up"
            warm_up.mkdir()
            for i in range(args.warm_up):
                (warm_up / f"warm{i:03d}.jpg").write_bytes(
                    camera_jpeg(args.size, args.size, seed=10**6 + i))
            for concurrency, redis_db in ((1, args.redis_db), (2, args.redis_db + 1)):
                workers.append(ClusterWorker(tmp, concurrency, redis_db))
                warm_cpu.append(workers[-1].submit(warm_up)[2] / max(1, args.warm_up))
                workers[-1].gaps.clear()
            for r in range(max(1, args.rounds)):
                folder = round_images(tmp, r, n, args.size)
                rounds.append(run_round(folder, tmp, workers, reverse=r % 2 == 1))
        finally:
            for worker in workers:
                worker.close()
    cores = len(os.sched_getaffinity(0))
    print(f"{n} camera-like JPEGs of {args.size}x{args.size}, {cores} cores, "
          f"load average {os.getloadavg()[0]:.1f}, {len(rounds)} round(s)")
    print(f"  {'':<26} {'wall':>9} {'span':>9} {'img/s (span)':>13}  CPU per image")
    for r, runs in enumerate(rounds, 1):
        for label, (wall, span, cpu) in zip(LABELS, runs, strict=True):
            print(f"  {label:<26} {wall:7.2f} s {span:7.2f} s {n / span:13.2f}  "
                  f"{1000 * cpu / n:6.0f} ms   (round {r})")
    print("  (wall: the command, start-up included, and for scan the warm-up images too; "
          "span: the round's first upload row to its last verdict)")

    def ratios(a: int, b: int, measure: int) -> list[float]:
        return [runs[a][measure] / runs[b][measure] for runs in rounds]

    def show(values: list[float]) -> str:
        each = ", ".join(f"{v:.2f}" for v in values)
        return f"x{statistics.median(values):.2f}" + (f" ({each})" if len(values) > 1 else "")

    print(f"  one worker vs in-process : {show(ratios(0, 1, 1))} span (target >= 0.9); "
          f"CPU per image {show(ratios(0, 1, 2))}")
    print(f"  2 processes vs 1         : {show(ratios(1, 2, 1))} span, "
          f"{show(ratios(1, 2, 0))} wall (target >= 1.8 on 2 idle cores)")
    print("  (medians over the rounds, each round's ratio in brackets)")
    gaps = workers[0].gaps
    if gaps:
        print(f"  -c 1 worker between tasks (its log: one task's end to the next one's start): "
              f"median {1000 * statistics.median(gaps):.1f} ms, "
              f"{1000 * sum(gaps) / (n * len(rounds)):.0f} ms an image "
              f"({(len(gaps) + len(rounds)) / (n * len(rounds)):.0f} tasks an image)")
    print(f"  warm-up, untimed: {args.warm_up} images, worker CPU per image "
          + ", ".join(f"-c {c} {1000 * cpu:.0f} ms" for c, cpu in zip((1, 2), warm_cpu,
                                                                       strict=False))
          + " (a process's first images; compare with the rounds')")


if __name__ == "__main__":
    main()
