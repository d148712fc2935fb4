"""Measure the API's memory on one big POST: N files of SIZE bytes in one multipart request.

    .venv/bin/python scripts/measure_upload_rss.py [--files 20] [--mb 50] [--redis URL]

Starts its own ``skygate api`` (SQLite and a blob folder in a scratch directory; the Celery
messages go to a Redis database of their own, default db 13, whose queue is deleted at the
end; no worker is needed: only the API is measured). It warms the API up with one small
upload, then sends the big request and reports the API process's RSS before, its peak
(VmHWM from /proc) and the growth. The files are valid PNGs padded after IEND to the size.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

# Deferred imports: heavy libraries (onnx, onnxruntime, scikit-learn, the clients) load only in
# the mode or child process that uses them.

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def png_of_size(size: int, seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(out, "PNG")
    head = out.getvalue()
    return head + bytes([seed % 251]) * (size - len(head))


def main() -> int:  # noqa: PLR0915 - one measurement, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--mb", type=float, default=50.0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    size = int(args.mb * 1_000_000)
    with tempfile.TemporaryDirectory(prefix="skygate-rss-") as scratch_name:
        scratch = Path(scratch_name)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")},
               "SKYGATE_DATA_DIR": str(scratch / "var"), "SKYGATE_BROKER_URL": args.redis,
               "SKYGATE_RESULT_BACKEND": args.redis,
               "SKYGATE_MAX_UPLOAD_BYTES": str(max(size, 52_428_800)),
               "SKYGATE_API_MAX_FILES": str(args.files), "SKYGATE_LOG_LEVEL": "WARNING"}
        cli = [sys.executable, "-m", "skygate.cli"]
        subprocess.run([*cli, "db", "upgrade"], env=env, cwd=ROOT, check=True,
                       capture_output=True)
        subprocess.run([*cli, "users", "create", "rss", "--email", "rss@example.org"],
                       env=env, cwd=ROOT, check=True, capture_output=True)
        key = subprocess.run([*cli, "keys", "create", "--user", "rss", "--limit", "100"],
                             env=env, cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout.strip()
        files = []
        for i in range(args.files):
            path = scratch / f"big{i:02d}.png"
            path.write_bytes(png_of_size(size, seed=i + 1))
            files.append(path)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = open(scratch / "api.log", "w")  # noqa: SIM115
        api = subprocess.Popen([*cli, "api", "--port", str(port)], env=env, cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(120):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.25)
            with httpx.Client(base_url=base, timeout=600, headers={"X-API-Key": key}) as c:
                warm = c.post("/v1/uploads",
                              files=[("file", ("warm.png", png_of_size(2000, 999)))])
                if warm.status_code != 202:
                    raise SystemExit(f"the warm-up upload failed: {warm.text}")
                before, hwm_before = rss_kib(api.pid, "VmRSS"), rss_kib(api.pid, "VmHWM")
                peak = [before]
                stop = threading.Event()

                def sample():
                    while not stop.is_set():
                        peak.append(rss_kib(api.pid, "VmRSS"))
                        time.sleep(0.02)

                sampler = threading.Thread(target=sample)
                sampler.start()
                handles = [open(p, "rb") for p in files]  # noqa: SIM115
                started = time.perf_counter()
                try:
                    r = c.post("/v1/uploads",
                               files=[("file", (p.name, h))
                                      for p, h in zip(files, handles, strict=True)])
                finally:
                    took = time.perf_counter() - started
                    stop.set()
                    sampler.join()
                    for h in handles:
                        h.close()
                hwm_after = rss_kib(api.pid, "VmHWM")
            print(f"POST of {args.files} x {size / 1e6:.0f} MB: HTTP {r.status_code} "
                  f"({len(r.json().get('uploads', []))} uploads) in {took:.1f} s")
            print(f"API RSS before {before / 1024:.1f} MB; sampled peak "
                  f"{max(peak) / 1024:.1f} MB (+{(max(peak) - before) / 1024:.1f} MB); "
                  f"VmHWM {hwm_before / 1024:.1f} -> {hwm_after / 1024:.1f} MB "
                  f"(+{(hwm_after - hwm_before) / 1024:.1f} MB)")
            return 0 if r.status_code == 202 else 1
        finally:
            api.terminate()
            api.wait(30)
            log.close()
            import redis

            # Only this run's queue in its own Redis database: nothing else is touched. Its
            # prepares wait under kombu's priority keys ("ingest" + separator + step).
            client = redis.Redis.from_url(args.redis)
            client.delete("ingest", *client.keys("ingest\x06\x16*"))


if __name__ == "__main__":
    sys.exit(main())
