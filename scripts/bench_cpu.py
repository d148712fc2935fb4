"""The whole answer's CPU per image against the shipped encoder's own, measured side by side.

    .venv/bin/python scripts/bench_cpu.py [--images 24] [--size 1024] [--warm-up 4]
                                          [--rounds 1] [--grids default,0]

Made here: ``--images`` camera-like JPEGs of ``--size`` squared (1 MP by default; the
generator of scripts/bench_methods.py) and ``--warm-up`` more. Measured, in this order and
again in reverse every other round:

- **encoder**: the shipped CLIP encoder's own CPU time per image, one thread (the session the
  model method uses, ``pipeline.clip``), on each image's model input (decode, neutral view and
  resize not counted): the median over the images of the best of 3 runs;
- **scan**: ``skygate scan --workers 1`` (the in-process pipeline: decode, every method, the
  pictures, the document, the database) on a fresh data folder, its CPU time (the child
  process's user + system, every thread) for the warm-up images alone and for the warm-up
  images plus the ``--images``: the difference over ``--images`` is the CPU per image with the
  process's start-up, the model load and its first images left out;

for each model configuration in ``--grids``: ``default`` (the shipped configuration, the
occlusion map of pipeline/attribution.py on: ``attribution_grid`` 3) and an
``attribution_grid`` of N written into the data folder's active model configuration (0: no
map). Printed: each figure and the ratio scan / encoder (issue 30's target: <= 1.6).
CPU flags and the load average are printed first: on a shared machine read the ratios.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

# Deferred imports: heavy libraries (onnx, onnxruntime, scikit-learn, the clients) load only in
# the mode or child process that uses them.

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_methods import camera_jpeg  # noqa: E402


def clean_env(data_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    env["SKYGATE_DATA_DIR"] = str(data_dir)
    env["SKYGATE_MODEL_HEATMAP"] = "1"  # the configuration's attribution_grid decides
    env["PYTHONPATH"] = str(ROOT)
    return env


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def skygate(args: list[str], data_dir: Path) -> float:
    """CPU seconds of one ``skygate`` command (it and its threads)."""
    before = child_cpu()
    done = subprocess.run([sys.executable, "-m", "skygate.cli", *args], env=clean_env(data_dir),
                          cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"skygate {' '.join(args)} failed: {done.stderr[-2000:]}")
    return child_cpu() - before


#: Writes ``attribution_grid`` = argv[1] into the active default model configuration.
GRID_CODE = """\
import asyncio, sys
from schemas.settings import Settings
from storage.context import open_storage
from storage.seed import DEFAULT_MODEL_CONFIG
async def main():
    async with open_storage(Settings()) as s:
        cfg = await s.documents.get_configuration(DEFAULT_MODEL_CONFIG)
        params = {**cfg.parameters.model_dump(), "attribution_grid": int(sys.argv[1])}
        cfg.parameters = type(cfg.parameters)(**params)
        await s.documents.upsert_configuration(cfg)
asyncio.run(main())
"""


def configure_grid(env: dict, grid: str, *, root: Path = ROOT) -> None:
    """The database of ``env`` upgraded by the code in ``root``, its model configuration's
    ``attribution_grid`` set (``default``: left as shipped)."""
    for command in (["-m", "skygate.cli", "db", "upgrade"],
                    *([] if grid == "default" else [["-c", GRID_CODE, grid]])):
        done = subprocess.run([sys.executable, *command], env=env, cwd=root,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"configuring the database failed: {done.stderr[-2000:]}")


def set_grid(data_dir: Path, grid: str) -> None:
    """A fresh data folder whose active model configuration has ``attribution_grid`` = grid."""
    configure_grid(clean_env(data_dir), grid)


def scan_in_this_process(tmp: Path, *, images: int, size: int, grid: str,
                         heatmap: bool = False) -> list[str]:
    """Set this process up for ``skygate scan --workers 1`` of ``images`` new camera-like
    JPEGs on a fresh data folder under ``tmp`` (only its SKYGATE_* settings left): the argv
    that :func:`run_cli` runs, for benchmarks that watch the scan from inside."""
    folder, data = tmp / "images", tmp / "data"
    folder.mkdir()
    for i in range(images):
        (folder / f"img{i:03d}.jpg").write_bytes(camera_jpeg(size, size, seed=i))
    set_grid(data, grid)
    for key in [k for k in os.environ if k.startswith("SKYGATE_")]:
        del os.environ[key]
    os.environ["SKYGATE_DATA_DIR"] = str(data)
    if heatmap:
        os.environ["SKYGATE_MODEL_HEATMAP"] = "1"  # attribution_grid decides
    return ["skygate", "scan", str(folder), "--workers", "1", "--out", str(tmp / "out.jsonl")]


def run_cli(argv: list[str]) -> None:
    """Run the skygate CLI in this process with ``argv``; a failing exit raises."""
    sys.argv = argv
    try:
        runpy.run_module("skygate.cli", run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


def scan_cpu_per_image(tmp: Path, warm: Path, images: Path, n: int, grid: str,
                       tag: str) -> float:
    alone, both = tmp / f"{tag}-warm", tmp / f"{tag}-all"
    set_grid(alone, grid)
    set_grid(both, grid)
    base = skygate(["scan", str(warm), "--workers", "1", "--out", str(alone / "o.jsonl")],
                   alone)
    total = skygate(["scan", str(warm), str(images), "--workers", "1",
                     "--out", str(both / "o.jsonl")], both)
    return (total - base) / n


def encoder_cpu_per_image(folder: Path) -> float:
    """Median over the images of the best of 3 runs of the shipped encoder, one thread."""
    from pipeline.clip import clip_input, probe_features
    from pipeline.imaging import neutralise
    from pipeline.methods.model import _session
    from storage.seed import default_model_configuration

    params = default_model_configuration().parameters.model_dump()
    _, encoder = _session(params, "encoder_path")
    output = params["encoder_output"]
    times = []
    for path in sorted(folder.iterdir()):
        rgb = np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"))
        view = clip_input(neutralise(rgb))[None]
        probe_features(encoder, view, output)  # the first run of a shape allocates
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            probe_features(encoder, view, output)
            best = min(best, time.process_time() - started)
        times.append(best)
    return statistics.median(times)


def machine() -> str:
    flags = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines()
                  if line.startswith("model name")), "?")
    present = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f" {f}" in flags]
    return (f"{model}, {len(os.sched_getaffinity(0))} cores, flags {' '.join(present)}, "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--warm-up", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--grids", default="default,0",
                        help="model configurations: 'default' and/or attribution_grid values")
    args = parser.parse_args()
    grids = [g.strip() for g in args.grids.split(",") if g.strip()]
    print(machine())
    encoder: list[float] = []
    scans: dict[str, list[float]] = {g: [] for g in grids}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        images, warm = tmp / "images", tmp / "warm"
        images.mkdir()
        warm.mkdir()
        for i in range(args.images):
            (images / f"img{i:03d}.jpg").write_bytes(camera_jpeg(args.size, args.size, seed=i))
        for i in range(args.warm_up):
            (warm / f"warm{i:03d}.jpg").write_bytes(
                camera_jpeg(args.size, args.size, seed=10**6 + i))
        for r in range(args.rounds):
            steps = ["encoder", *grids]
            for step in (reversed(steps) if r % 2 else steps):
                if step == "encoder":
                    encoder.append(encoder_cpu_per_image(images))
                else:
                    scans[step].append(scan_cpu_per_image(tmp, warm, images, args.images,
                                                          step, f"r{r}-{step}"))
    enc = statistics.median(encoder)
    print(f"{args.images} camera-like JPEGs of {args.size}x{args.size}, {args.rounds} round(s)")
    print(f"  encoder alone (one thread)      : {1000 * enc:7.1f} ms CPU per image "
          f"({', '.join(f'{1000 * e:.1f}' for e in encoder)})")
    for grid, values in scans.items():
        label = ("default (map on)" if grid == "default" else
                 f"attribution_grid={grid}" + (" (no map)" if grid == "0" else ""))
        per = statistics.median(values)
        print(f"  scan --workers 1, {label:<14}: {1000 * per:7.1f} ms CPU per image "
              f"= {per / enc:5.2f} x the encoder (target <= 1.6; rounds: "
              f"{', '.join(f'{v / enc:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
