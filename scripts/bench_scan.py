"""Benchmark of ``skygate scan`` on the embedded default, measured side by side in one run:
one process vs all cores on the same images, and a re-scan (resume) vs the first scan.

    .venv/bin/python scripts/bench_scan.py [--images 24] [--size 1024]

The images are made here (noisy synthetic photos, JPEG q92); figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit.images import encode, noisy_photo  # noqa: E402


def timed_scan(folder: Path, data_dir: Path, *extra: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    env["SKYGATE_DATA_DIR"] = str(data_dir)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "skygate.cli", "scan", str(folder),
                             "--out", str(data_dir / "out.jsonl"), *extra],
                            env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"scan failed: {result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "images"
        folder.mkdir()
        for i in range(args.images):
            (folder / f"img{i:03d}.jpg").write_bytes(encode(
                noisy_photo(rows=args.size, cols=args.size, seed=i), fmt="JPEG"))
        cores = len(os.sched_getaffinity(0))
        one = timed_scan(folder, tmp / "one", "--workers", "1")
        many = timed_scan(folder, tmp / "many")
        again = timed_scan(folder, tmp / "many")
    n = args.images
    print(f"{n} images of {args.size}x{args.size} px, {cores} cores (wall time incl. start-up)")
    print(f"  first scan, 1 process    : {one:7.2f} s  ({n / one:5.2f} img/s)")
    print(f"  first scan, {cores} processes  : {many:7.2f} s  ({n / many:5.2f} img/s)  "
          f"speed-up x{one / many:.2f}")
    print(f"  re-scan (all known)      : {again:7.2f} s  = {again / many:.1%} of the first scan")


if __name__ == "__main__":
    main()
