"""Where each millisecond of ``skygate scan --workers 1`` goes: a CPU profile, by phase.

    .venv/bin/python scripts/bench_profile.py [--images 24] [--size 1024] [--grid default]
                                              [--warm-up 4] [--out scan.prof]

Runs ``skygate scan --workers 1`` in this process on ``--warm-up`` + ``--images`` generated
camera-like JPEGs (scripts/bench_methods.py's generator); the last ``--images`` files' scans
(``skygate.batch.scan_file``: the first files' lazy imports and first runs left out, as in
bench_cpu.py) run under cProfile with the process's CPU clock
(``time.process_time``: every thread, so the SQLite thread's work lands on whatever the
main thread runs meanwhile), on a fresh data folder whose model configuration has
``attribution_grid`` = ``--grid`` (``default``: the shipped one, the map on). Printed, per
image: the CPU of the synchronous phases (pure code that never yields to the event loop, so
its cumulative time is its own), and everything else (the service's coroutines, SQLAlchemy,
aiosqlite, the event loop, pydantic, the blob files) as the remainder of the scan's own time.
The probe head is its ``run`` called from the model method (the encoder's known-answer check
runs once, at start-up, outside the profile). cProfile
slows Python-heavy code (the remainder) more than the C-heavy phases: bench_cpu.py gives
the unprofiled total. ``--out`` keeps the profile for ``python -m pstats``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_cpu import run_cli, scan_in_this_process  # noqa: E402

from skygate import batch  # noqa: E402

#: (label, file suffix, function name): synchronous functions whose cumulative time is a phase.
PHASES = [
    ("decode + crop + thumbnail (prepare)", "pipeline/decode.py", "decode_views"),
    ("neutral view (JPEG round trip)", "pipeline/imaging.py", "neutralise"),
    ("model input (resize to 224)", "pipeline/clip.py", "clip_input"),
    ("encoder, one run per image", None, None),  # probe_features minus the occlusion map's
    ("occlusion map (attribution_grid² runs)", "pipeline/attribution.py", "occlusion_map"),
    ("probe head", None, None),
    ("prnu", "pipeline/methods/prnu.py", "_run"),
    ("texture", "pipeline/methods/texture.py", "_run"),
    ("ela (with its PNG)", "pipeline/methods/ela.py", "_run"),
    ("exif", "pipeline/methods/exif.py", "_run"),
    ("forensic heatmap picture", "pipeline/heatmap.py", "render_heatmap"),
    ("attribution picture (PNG)", "pipeline/heatmap.py", "render_attribution"),
    ("verdict (ensemble)", "pipeline/ensemble.py", "aggregate"),
    ("document (build)", "pipeline/document.py", "build_metadata_document"),
]


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    return sum(v[3] for (file, _line, func), v in stats.stats.items()
               if func == name and file.endswith(suffix))


def own_calls(stats: pstats.Stats, suffix: str, name: str, caller_suffix: str,
              caller: str) -> float:
    """Cumulative time of ``name`` when called from ``caller``."""
    total = 0.0
    for (file, _line, func), v in stats.stats.items():
        if func == name and file.endswith(suffix):
            for (cfile, _cl, cfunc), cv in v[4].items():
                if cfunc == caller and cfile.endswith(caller_suffix):
                    total += cv[3]
    return total


def profiled_scan(warm_up: int, images: int, size: int, grid: str
                  ) -> tuple[cProfile.Profile, float]:
    """(the profile, its CPU seconds) of the last ``images`` files' scans of a scan of
    ``warm_up`` + ``images`` new camera-like JPEGs."""
    profile = cProfile.Profile(time.process_time)
    clock = {"files": 0, "cpu": 0.0}
    scan_file = batch.scan_file

    def profiled(path: str):
        clock["files"] += 1
        if clock["files"] <= warm_up:
            return scan_file(path)
        started = time.process_time()
        profile.enable()
        try:
            return scan_file(path)
        finally:
            profile.disable()
            clock["cpu"] += time.process_time() - started

    with tempfile.TemporaryDirectory() as name:
        argv = scan_in_this_process(Path(name), images=warm_up + images, size=size,
                                    grid=grid, heatmap=True)
        batch.scan_file = profiled  # run_embedded calls it by its module's name
        try:
            run_cli(argv)
        finally:
            batch.scan_file = scan_file
    return profile, clock["cpu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--grid", default="default")
    parser.add_argument("--warm-up", type=int, default=4,
                        help="files scanned first, outside the profile")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    profile, whole = profiled_scan(args.warm_up, args.images, args.size, args.grid)
    stats = pstats.Stats(profile)
    if args.out:
        stats.dump_stats(args.out)
    n = args.images
    scan = cumulative(stats, "skygate/batch.py", "scan_file")
    probe = cumulative(stats, "pipeline/clip.py", "probe_features")
    occlusion_probe = own_calls(stats, "pipeline/methods/model.py", "_probe_probability",
                                "pipeline/attribution.py", "occlusion_map")
    head = own_calls(stats, "onnxruntime_inference_collection.py", "run",
                     "pipeline/methods/model.py", "detect_model")
    figures = {}
    for label, suffix, func in PHASES:
        if suffix:
            figures[label] = cumulative(stats, suffix, func)
    occlusion_encoder = own_calls(stats, "pipeline/clip.py", "probe_features",
                                  "pipeline/methods/model.py", "_probe_probability")
    figures["encoder, one run per image"] = probe - occlusion_encoder
    figures["probe head"] = head
    print(f"{n} camera-like JPEGs of {args.size}x{args.size} (after {args.warm_up} unprofiled), "
          f"attribution_grid {args.grid}; profiled CPU: {whole:.1f} s in all, {scan:.1f} s in "
          f"the scan's images "
          f"({1000 * scan / n:.0f} ms per image); load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  (the occlusion map's own encoder + head runs: {occlusion_probe:.1f} s)")
    accounted = 0.0
    for label, _suffix, _func in PHASES:
        value = figures[label]
        accounted += value
        print(f"  {label:<42} {1000 * value / n:7.1f} ms  {value / scan:6.1%}")
    rest = scan - accounted
    print(f"  {'service, database, event loop (the rest)':<42} {1000 * rest / n:7.1f} ms  "
          f"{rest / scan:6.1%}")


if __name__ == "__main__":
    main()
