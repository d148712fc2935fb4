"""What Celery itself costs one canvas on a ``-c 1`` worker, against scan and the real worker.

    .venv/bin/python scripts/bench_task_floor.py [--images 16] [--rounds 3] [--size 1024]
                                                 [--redis-db 9] [--grid 0]
                                                 [--other-checkout PATH]

The floor: tasks named and routed as SkyGate's (``skygate.ingest``, ``skygate.prepare``,
``skygate.detect.<method>`` for each method of the registry, ``skygate.aggregate``), with the
same options (celeryconfig.py: acks late, prefetch 1, task events, JSON, the Redis result
backend, the chord, no stored result for a canvas's tasks), that do no work: ingest sends
prepare, prepare sends the chord of the method tasks, each method answers a method-sized
result (≈ 0.3 KB, as SkyGate's), aggregate records its end. One worker ``-c 1`` of this
module (``celery -A bench_task_floor``) on Redis DB ``--redis-db``; the canvases are sent at
once, as ``skygate submit`` sends an ingest message per file.

Each round, side by side (and in turn backwards): ``skygate scan --workers 1`` and the real
``-c 1`` worker on ``--images`` new camera-like JPEGs (scripts/bench_cluster.py's runs: span
from the first upload row to the last verdict), then as many empty canvases on the floor
worker (span from the first ingest's start to the last aggregate's end). Printed per image:
scan's span S, the worker's W and the floor F, the worker against scan (S / W, issue 30's
target >= 0.9) and the best a ``-c 1`` worker could reach if its tasks did exactly scan's
work and Celery cost nothing more than the floor: S / (S + F). ``--other-checkout``: one
more ``-c 1`` worker, running the code of another checkout (``git worktree add /tmp/before
<commit>``), in the same rounds: two versions of the worker side by side (W2 / W).
Needs PostgreSQL and Redis (as scripts/bench_cluster.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from celery import Celery, chord

# Deferred imports: redis and the benchmark helpers load in the client that uses them, not in
# the floor worker, which imports this module for its tasks.

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from pipeline.methods.registry import REGISTRY  # noqa: E402

app = Celery("skygate-floor")
app.config_from_object("celeryconfig")
app.conf.imports = ()  # not workers.tasks: these tasks take SkyGate's names
STARTED, ENDED = "floor:started", "floor:ended"
# A method's answer as large as SkyGate's (method_results.result_details: 166-376 bytes).
ANSWER = {"status": "ok", "is_ai_generated": False, "confidence": 0.5, "ai_probability": 0.5,
          "processing_time": 0.001, "error": None, "block_map": None,
          "details": {"note": "x" * 200, "evidence": "on_request"}}
CANVAS = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}


def _redis():
    import redis

    return redis.Redis.from_url(app.conf.broker_url)


@app.task(name="skygate.ingest", acks_late=True, reject_on_worker_lost=True)
def floor_ingest(canvas_id: int) -> dict:
    _redis().rpush(STARTED, json.dumps([canvas_id, time.time()]))
    floor_prepare.delay(canvas_id)
    return {"upload_id": canvas_id, "status": "queued"}


@app.task(name="skygate.prepare", acks_late=True, reject_on_worker_lost=True)
def floor_prepare(canvas_id: int) -> dict:
    key = f"manifest/{canvas_id}"
    header = [DETECT[m].s(canvas_id, key) for m in REGISTRY]
    chord(header)(floor_aggregate.s(canvas_id, key))
    return {"upload_id": canvas_id, "status": "processing", "methods": list(REGISTRY)}


def _detect_task(method: str):
    def detect(canvas_id: int, manifest_key: str) -> dict:
        return {"method": method, **ANSWER}

    detect.__name__ = f"floor_detect_{method}"
    return app.task(name=f"skygate.detect.{method}", **CANVAS)(detect)


DETECT = {m: _detect_task(m) for m in REGISTRY}


@app.task(name="skygate.aggregate", **CANVAS)
def floor_aggregate(results: list, canvas_id: int, manifest_key: str) -> dict:
    _redis().rpush(ENDED, json.dumps([canvas_id, time.time()]))
    return {"upload_id": canvas_id, "methods": len(results)}


class FloorWorker:
    """A ``-c 1`` worker of this module on its own (claimed, emptied) Redis DB."""

    def __init__(self, tmp: Path, redis_db: int):
        import redis
        from bench_cluster import CLAIM_KEY, REDIS_URL, clean_env

        self.url = f"{REDIS_URL}/{redis_db}"
        self.redis, self.claim_key = redis.Redis.from_url(self.url), CLAIM_KEY
        self.claim = f"floor:{os.getpid()}:{uuid.uuid4().hex}"
        if not self.redis.set(CLAIM_KEY, self.claim, nx=True, ex=7200):
            raise SystemExit(f"Redis DB {redis_db} is in use: pick another --redis-db")
        self.redis.flushdb()
        self.redis.set(CLAIM_KEY, self.claim, ex=7200)
        env = clean_env(SKYGATE_BROKER_URL=self.url, SKYGATE_RESULT_BACKEND=self.url,
                        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'scripts'}")
        self.log_path, self.next_id = tmp / "floor.log", 1
        with open(self.log_path, "w") as log:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "bench_task_floor", "worker", "-l",
                 "info", "-c", "1", "-Q", "ingest,detect,model,aggregate",
                 "-n", f"floor-{uuid.uuid4().hex[:6]}@%h", "--without-gossip",
                 "--without-mingle"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "ready." not in self.log_path.read_text():
            if self.worker.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"floor worker did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        app.conf.broker_url = app.conf.result_backend = self.url

    def run(self, canvases: int) -> float:
        """Span in seconds of ``canvases`` empty canvases sent at once."""
        self.redis.delete(STARTED, ENDED)
        ids = range(self.next_id, self.next_id + canvases)
        self.next_id += canvases
        with app.producer_or_acquire() as producer:
            for canvas_id in ids:
                floor_ingest.apply_async((canvas_id,), producer=producer)
        deadline = time.monotonic() + 60 + canvases
        while self.redis.llen(ENDED) < canvases:
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"floor canvases did not finish: "
                                 f"{self.log_path.read_text()[-2000:]}")
            time.sleep(0.01)
        started = [json.loads(x)[1] for x in self.redis.lrange(STARTED, 0, -1)]
        ended = [json.loads(x)[1] for x in self.redis.lrange(ENDED, 0, -1)]
        return max(ended) - min(started)

    def close(self) -> None:
        self.worker.terminate()
        try:
            self.worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.worker.kill()
        if self.redis.get(self.claim_key) == self.claim.encode():
            self.redis.delete(self.claim_key)


def main() -> None:
    import bench_cluster
    from bench_methods import camera_jpeg

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--warm-up", type=int, default=6)
    parser.add_argument("--redis-db", type=int, default=9,
                        help="the floor worker's; the real workers take the next ones")
    parser.add_argument("--grid", default="0", help="attribution_grid of scan and the worker "
                                                    "(0: no occlusion map; default: shipped)")
    parser.add_argument("--other-checkout", type=Path,
                        help="also a -c 1 worker running this checkout's code (e.g. a git "
                             "worktree of an older commit), in the same rounds")
    args = parser.parse_args()
    bench_cluster.GRID["value"] = args.grid
    n, rows = args.images, []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        warm_up = tmp / "warm-up"
        warm_up.mkdir()
        for i in range(args.warm_up):
            (warm_up / f"warm{i:03d}.jpg").write_bytes(
                camera_jpeg(args.size, args.size, seed=10**6 + i))
        workers: list = []
        try:
            workers.append(FloorWorker(tmp, args.redis_db))
            workers[0].run(4 * args.warm_up)
            for i, root in enumerate(filter(None, [ROOT, args.other_checkout]), 1):
                workers.append(bench_cluster.ClusterWorker(
                    tmp, 1, args.redis_db + i, root=root.resolve()))
                workers[-1].submit(warm_up)
            floor, real = workers[0], workers[1:]
            for r in range(max(1, args.rounds)):
                folder = bench_cluster.round_images(tmp, r, n, args.size)
                runs = [lambda f=folder: bench_cluster.run_scan(f, tmp)[1],
                        *[lambda f=folder, w=w: w.submit(f)[1] for w in real],
                        lambda: floor.run(n)]
                order = list(range(len(runs)))[::-1 if r % 2 else 1]
                spans = {i: runs[i]() for i in order}
                rows.append([1000 * spans[i] / n for i in range(len(runs))])
        finally:
            for w in workers:
                w.close()
    report(rows, args, n)


def report(rows: list[list[float]], args, n: int) -> None:
    """Each round's spans per image and the ratios; the medians last."""
    other = args.other_checkout is not None
    print(f"{n} camera-like JPEGs of {args.size}x{args.size} a round, attribution_grid "
          f"{args.grid}; {n} empty canvases of {2 + len(REGISTRY) + 1} tasks on the floor "
          f"worker; load average {os.getloadavg()[0]:.1f}"
          + (f"; W2: a worker on {args.other_checkout}" if other else ""))
    heads = ["scan S", "worker W", *(["W2"] if other else []), "floor F"]
    print(f"  {'round':<6} " + " ".join(f"{h:>9}" for h in heads) + "   S/W   S/(S+F)"
          + ("   W2/W" if other else ""))

    def line(label: str, row: list[float], ratios: list[float]) -> str:
        return (f"  {label:<6} " + " ".join(f"{v:7.1f}ms" for v in row) + "  "
                + "  ".join(f"{v:5.2f}" for v in ratios))

    def ratios(row: list[float]) -> list[float]:
        s, w, f = row[0], row[1], row[-1]
        return [s / w, s / (s + f), *([row[2] / w] if other else [])]

    for r, row in enumerate(rows, 1):
        print(line(str(r), row, ratios(row)))
    medians = [statistics.median(column) for column in zip(*rows, strict=True)]
    each = [statistics.median(column) for column in zip(*map(ratios, rows), strict=True)]
    print(line("median", medians, each))
    print("  (per image, spans; S/W: one worker against in-process, target >= 0.9; S/(S+F): "
          "the best a -c 1 worker can reach when its tasks do scan's work plus Celery's floor"
          + ("; W2/W: the other checkout's worker against this one's" if other else "") + ")")


if __name__ == "__main__":
    main()
