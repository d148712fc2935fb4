"""Results-cache benchmark: GET /v1/uploads/{id}/result under load, the cache off then on.

Real parts, like the tests: a fresh PostgreSQL database (SKYGATE_TEST_PG_URL, default the
local server), Redis (SKYGATE_TEST_REDIS_URL, default 127.0.0.1:6379, a random db index) and
the nx-27017 Mongo wire server on a free port. One user and key, N uploads run to done
through the embedded pipeline on generated images, then for each mode the API is served by
uvicorn in this process on a loopback port and C concurrent httpx.AsyncClient loops GET a
random upload's result for D seconds (after a short warm-up), in rounds that alternate
between the modes (a busy machine then slows both alike). Prints p50/p99 latency,
throughput, and the on/off ratio; first, the result read alone (``read_result``, no HTTP).

    .venv/bin/python scripts/bench_results.py                  # 20 uploads, 50 clients, 10 s
    .venv/bin/python scripts/bench_results.py --uploads 5 --clients 20 --seconds 5

The load generator shares the process (and the GIL) with the server, in both modes alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
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

PG_ADMIN_URL = os.environ.get("SKYGATE_TEST_PG_URL",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SKYGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mongo(workdir: Path) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("nx-27017") or str(Path(sys.executable).parent / "nx-27017")
    port = free_port()
    proc = subprocess.Popen([exe, "--host", "127.0.0.1", "-p", str(port), "--db", "memory",
                             "--log-file", str(workdir / "nx.log"), "--pid-file",
                             str(workdir / "nx.pid")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, cwd=workdir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"mongodb://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("nx-27017 did not start listening in 30 s")


async def pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def prepare(settings, uploads: int) -> tuple[str, list[int]]:
    """A user, a key without a practical limit, and ``uploads`` finished uploads."""
    from service import accounts, detection, ingest
    from storage.context import open_storage
    from testkit.images import encode, noisy_photo

    async with open_storage(settings) as storage:
        user_id = await accounts.create_user(storage.engine, username="bench",
                                             email="bench@example.org", password=None)
        key, _ = await accounts.create_key(storage.engine, username="bench", name="bench",
                                           limit=2_000_000_000, expires_at=None)
        ids = []
        for i in range(uploads):
            data = encode(noisy_photo(seed=1000 + i, rows=192, cols=192), fmt="JPEG")
            outcome = await ingest.ingest_bytes(storage, settings, data=data,
                                                original_file_name=f"b{i}.jpg",
                                                user_id=user_id)
            await detection.run_all(storage, settings, outcome.upload_id)
            ids.append(outcome.upload_id)
    return key, ids


async def load(base: str, key: str, ids: list[int], clients: int, seconds: float
               ) -> tuple[list[float], int]:
    import httpx

    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            r = await client.get(f"/v1/uploads/{random.choice(ids)}/result")
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=60,
                                 limits=limits) as client:
        await asyncio.gather(*(one(client) for _ in range(clients)))
    return latencies, errors


async def serve_both(modes: dict, key: str, ids: list[int], args) -> dict:
    """Serve each mode's app on its own loopback port, then load them in alternating rounds
    (off, on, off, on...) so that a change in the machine's load hits both alike."""
    import uvicorn

    from api.app import create_app

    servers, tasks, bases = {}, [], {}
    for label, settings in modes.items():
        port = free_port()
        servers[label] = uvicorn.Server(uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning",
            access_log=False, limit_concurrency=settings.api_limit_concurrency))
        tasks.append(asyncio.create_task(servers[label].serve()))
        bases[label] = f"http://127.0.0.1:{port}"
    while not all(s.started for s in servers.values()):  # noqa: ASYNC110 - no event to await
        await asyncio.sleep(0.05)
    latencies = {label: [] for label in modes}
    errors = dict.fromkeys(modes, 0)
    elapsed = dict.fromkeys(modes, 0.0)
    try:
        for label in modes:
            await load(bases[label], key, ids, args.clients, args.warmup)
        for _ in range(args.rounds):
            for label in modes:
                started = time.monotonic()
                got, failed = await load(bases[label], key, ids, args.clients,
                                         args.seconds / args.rounds)
                elapsed[label] += time.monotonic() - started
                latencies[label] += got
                errors[label] += failed
    finally:
        for server in servers.values():
            server.should_exit = True
        await asyncio.gather(*tasks)
    out = {}
    for label, values in latencies.items():
        values.sort()
        out[label] = {"requests": len(values), "errors": errors[label],
                      "p50_ms": 1000 * statistics.median(values),
                      "p99_ms": 1000 * values[int(0.99 * (len(values) - 1))],
                      "rps": len(values) / elapsed[label]}
    return out


async def read_path(settings, ids: list[int], n: int = 300) -> dict:
    """Milliseconds per ``service.results.read_result`` alone: a cache hit, the database."""
    from service import results
    from storage import listing
    from storage.context import open_storage

    out = {}
    async with open_storage(settings) as storage:
        rows = [(await listing.list_uploads(storage.engine, owner=..., upload_id=i,
                                            limit=1))[0][0]
                for i in ids]
        cache = storage.cache
        for label, use in (("database", None), ("cache hit", cache)):
            storage.cache = use
            for row in rows:
                await results.read_result(storage, row)  # warm (and fill the cache)
            t0 = time.perf_counter()
            for k in range(n):
                await results.read_result(storage, rows[k % len(rows)])
            out[label] = 1000 * (time.perf_counter() - t0) / n
        storage.cache = cache
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5,
                        help="the seconds of each mode are split into this many rounds")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from schemas.settings import Settings
    from skygate.cli.db import ensure_schema

    workdir = Path(tempfile.mkdtemp(prefix="bench_results_"))
    name = f"bench_results_{uuid.uuid4().hex[:8]}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    mongo, mongo_url = start_mongo(workdir)
    try:
        on = Settings(database_url=PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name,
                      mongo_url=f"{mongo_url}/bench", data_dir=workdir / "data",
                      cache_url=f"{REDIS_URL}/{random.randint(1, 15)}")
        off = on.model_copy(update={"cache_url": "off"})
        ensure_schema(on)
        t0 = time.monotonic()
        key, ids = asyncio.run(prepare(on, args.uploads))
        print(f"{len(ids)} finished uploads in {time.monotonic() - t0:.1f} s; "
              f"{args.clients} clients x {args.seconds:g} s per mode in {args.rounds} rounds "
              f"(pools: PostgreSQL {on.db_pool_size}+{on.db_max_overflow}, "
              f"MongoDB max {on.mongo_max_pool_size})")
        alone = asyncio.run(read_path(on, ids))
        print(f"read_result alone: {alone['database']:.2f} ms from the database, "
              f"{alone['cache hit']:.2f} ms from the cache")
        rows = asyncio.run(serve_both({"cache off": off, "cache on": on}, key, ids, args))
        for label, r in rows.items():
            print(f"{label:10s} {r['requests']:7d} requests  {r['errors']} errors  "
                  f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                  f"{r['rps']:7.1f} req/s")
        a, b = rows["cache off"], rows["cache on"]
        print(f"on/off: throughput x{b['rps'] / a['rps']:.2f}, "
              f"p50 x{b['p50_ms'] / a['p50_ms']:.2f}, p99 x{b['p99_ms'] / a['p99_ms']:.2f}")
    finally:
        mongo.terminate()
        mongo.wait(10)
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
