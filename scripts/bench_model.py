"""Benchmark the `model` method: CPU time per image on one thread, by image size.

Prints the median process CPU time of `detect_model` (the shipped CLIP probe) on the
neutralised view of synthetic noisy photos of several sizes, the one-off session load, and
the neutralisation it reads (shared with the other methods, so not counted as the model's).

    python scripts/bench_model.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.imaging import neutralise  # noqa: E402
from pipeline.methods.model import detect_model, load_model  # noqa: E402
from storage.seed import default_model_configuration  # noqa: E402


def noisy(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.linspace(0, 1, rows)[:, None, None]
    c = np.linspace(0, 1, cols)[None, :, None]
    base = 255 * (0.3 + 0.4 * r * c + 0.2 * np.sin(12 * c + 5 * r))
    return np.clip(base + rng.normal(0, 6, (rows, cols, 3)), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    params = default_model_configuration().parameters.model_dump()
    started = time.process_time()
    load_model(params)
    print(f"session load (once per process): {time.process_time() - started:.2f} s CPU")
    print(f"{'image':>12} {'neutralise ms':>14} {'model ms CPU':>13}")
    for rows, cols in [(480, 640), (1024, 1024), (3000, 4000), (6000, 8000)]:
        rgb = noisy(rows, cols, seed=rows)
        t = time.process_time()
        view = neutralise(rgb)
        neutral_ms = 1000 * (time.process_time() - t)
        detect_model(view, params)  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.process_time()
            detect_model(view, params)
            times.append(1000 * (time.process_time() - t))
        print(f"{rows}x{cols:>6} {neutral_ms:14.1f} {statistics.median(times):13.1f}")


if __name__ == "__main__":
    main()
