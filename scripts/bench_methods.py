"""Benchmark the detection methods against one decode, and a worker's peak memory by image size.

    python scripts/bench_methods.py [--repeats 5] [--rss] [--corpus ../shared/corpus]

Times (best of ``--repeats`` rounds, CPU time of this process, all its threads; each round
times every part once, so the decode and the methods are measured side by side) for the corpus's
largest camera JPEG (``real/``, by pixel count; a generated 12 MP camera-like JPEG when the
corpus is absent) and a generated 1 MP camera-like JPEG:

- ``decode``: the full decode of the file to RGB (``pipeline.decode.decode_image``);
- ``prepare+``: what prepare adds to its decode: the central crop as a PNG intermediate (above
  2 MP; smaller images are decoded again instead), the thumbnail, and the neutral view's
  features, computed once for every method that votes with them (none under the shipped
  calibrations and the CLIP model: then they are not computed);
- each method as the service runs it (``Method.execute`` on the inputs the service loads:
  the crop read back from its PNG once per process, the shared features);
- ``ratio``: (prepare+ + every method) / decode, of the best times; and the median of the
  rounds' own ratios. Targets (issue 13): <= 8 on a 12-16 MP camera JPEG, <= 100 on a 1 MP
  image. The process keeps freed buffers, as every worker and scan process does
  (``service.runtime.allocator``).

``--rss``: peak RSS (VmHWM: ``ru_maxrss`` but reset by exec) of a child process that
ingests and runs the whole embedded pipeline (``service.ingest`` +
``service.detection.run_all``) on one generated image per size: 1, 16 and 80 MP (the default
pixel limit; also an 80 MP flat PNG). Targets: <= 400 MB at 16 MP, <= 1.5 GB at
80 MP. The child's baseline (imports, the ONNX sessions) is printed first.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
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


def camera_jpeg(rows: int, cols: int, *, seed: int = 1, quality: int = 90) -> bytes:
    """A camera-like JPEG: smooth scene, PRNU-like gain, shot/read noise (built in bands)."""
    rng = np.random.default_rng(seed)
    out = np.empty((rows, cols, 3), np.uint8)
    c = np.linspace(0.0, 1.0, cols, dtype=np.float32)[None, :]
    for r0 in range(0, rows, 512):
        r = (np.arange(r0, min(rows, r0 + 512), dtype=np.float32) / rows)[:, None]
        band = np.empty((r.shape[0], cols, 3), np.float32)
        band[..., 0] = 90 + 80 * r + 30 * np.sin(9 * c)
        band[..., 1] = 70 + 110 * c * r + 20 * np.cos(7 * r)
        band[..., 2] = 150 - 60 * r * c
        band *= 1 + 0.02 * rng.standard_normal((r.shape[0], cols, 1), dtype=np.float32)
        band += rng.normal(0, 2.0, band.shape).astype(np.float32)
        out[r0:r0 + r.shape[0]] = np.clip(band, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(out).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def largest_camera_jpeg(corpus: Path) -> tuple[str, bytes] | None:
    best = None
    for path in sorted((corpus / "real").glob("*")):
        if path.suffix.lower() not in (".jpg", ".jpeg"):
            continue
        try:
            with Image.open(path) as img:
                pixels = img.size[0] * img.size[1]
        except OSError:
            continue
        if best is None or pixels > best[0]:
            best = (pixels, path)
    return (best[1].name, best[1].read_bytes()) if best else None


def cpu_time(fn) -> float:
    started = time.process_time()  # CPU of this process (all its threads): steadier
    fn()                           # than wall time on a shared machine
    return time.process_time() - started


def bench_image(name: str, data: bytes, repeats: int) -> dict:
    from pipeline.decode import (
        decode_crop,
        decode_image,
        decode_views,
        pixels_from_bytes,
        pixels_to_bytes,
    )
    from pipeline.features import shared_features
    from pipeline.imaging import MAX_SIDE, neutralise
    from pipeline.methods.registry import (
        CONFIG,
        NATIVE_PIXELS,
        NEUTRAL_FEATURES,
        NEUTRAL_PIXELS,
        ORIGINAL_BYTES,
        REGISTRY,
        SETTINGS,
        feature_groups_of,
    )
    from schemas.settings import Settings
    from service.canvas import DECODE_AGAIN_PIXELS
    from storage.seed import default_model_configuration

    limit = 10**9
    views = decode_views(data, max_pixels=limit, side=MAX_SIDE)
    config = default_model_configuration().parameters.model_dump()
    # As prepare does: only the groups some method votes with (service.detection).
    groups = feature_groups_of(REGISTRY, {"model": config})

    # As prepare does: a small image is decoded again by the methods, a larger one's crop is
    # cached as a PNG (service.canvas.DECODE_AGAIN_PIXELS).
    cached = views.info.width * views.info.height > DECODE_AGAIN_PIXELS

    def extra():
        png = pixels_to_bytes(views.crop) if cached else None
        shared = shared_features(neutralise(views.crop) if groups else None, groups)
        return png, shared

    def load_crop():
        if cached:
            return pixels_from_bytes(png)
        return decode_crop(data, max_pixels=limit, side=MAX_SIDE)

    png, shared = extra()
    inputs = {ORIGINAL_BYTES: data, NATIVE_PIXELS: load_crop(),
              NEUTRAL_PIXELS: neutralise(load_crop()), NEUTRAL_FEATURES: shared,
              SETTINGS: Settings(), CONFIG: config}
    for method in REGISTRY.values():
        method.execute(inputs)  # warm-up (ONNX sessions, calibration)
    # Every part once per round, the rounds in turn: the decode a ratio divides by and the
    # methods are timed side by side, so a slow spell of a shared machine falls on both.
    # prepare's own decode is decode_views: the crop and thumbnail on top of the decode
    # are counted in prepare+, as the difference. The crop is read once per process for
    # every method (the service keeps the crops of the last canvases read).
    parts = {"decode": lambda: decode_image(data, max_pixels=limit),
             "views": lambda: decode_views(data, max_pixels=limit, side=MAX_SIDE),
             "extra": extra, "load": lambda: neutralise(load_crop()),
             **{n: (lambda m=m: m.execute(inputs)) for n, m in REGISTRY.items()}}
    times = {part: [] for part in parts}
    for _ in range(repeats):
        for part, fn in parts.items():
            times[part].append(cpu_time(fn))

    def rest(i: int | None = None) -> float:
        """prepare+, load and every method: of round ``i``, or the best of each."""
        pick = min if i is None else (lambda values: values[i])
        return (max(0.0, pick(times["views"]) - pick(times["decode"])) + pick(times["extra"])
                + pick(times["load"]) + sum(pick(times[n]) for n in REGISTRY))

    decode = min(times["decode"])
    prepare_extra = max(0.0, min(times["views"]) - decode) + min(times["extra"])
    load = min(times["load"])
    per_method = {n: min(times[n]) for n in REGISTRY}
    total = rest()
    round_ratios = [rest(i) / times["decode"][i] for i in range(repeats)]
    rows, cols = views.info.height, views.info.width
    return {"image": name, "size": f"{cols}x{rows}", "megapixels": round(rows * cols / 1e6, 1),
            "bytes": len(data), "decode_ms": 1000 * decode,
            "prepare_extra_ms": 1000 * prepare_extra,
            "load_ms": 1000 * load, "methods_ms": {n: 1000 * t for n, t in per_method.items()},
            "total_ms": 1000 * total, "ratio": total / decode,
            "round_ratios": round_ratios}


def print_bench(r: dict) -> None:
    print(f"\n{r['image']} ({r['size']}, {r['megapixels']} MP, {r['bytes']:,} B)")
    print(f"  {'decode':<22}{r['decode_ms']:9.1f} ms")
    print(f"  {'prepare+ (crop, feats)':<22}{r['prepare_extra_ms']:9.1f} ms")
    print(f"  {'load crop + neutral':<22}{r['load_ms']:9.1f} ms")
    for name, ms in r["methods_ms"].items():
        print(f"  {name:<22}{ms:9.1f} ms")
    print(f"  {'all methods':<22}{r['total_ms']:9.1f} ms   = {r['ratio']:.1f} x decode")
    ratios = sorted(r["round_ratios"])
    print(f"  {'ratio per round':<22}median {statistics.median(ratios):.1f} x "
          f"(range {ratios[0]:.1f}-{ratios[-1]:.1f} over {len(ratios)} rounds)")


# --- peak memory of a whole pipeline run in a child process ----------------------------------


def peak_rss_kb() -> int:
    """This process's peak RSS in KiB: VmHWM, which exec resets (ru_maxrss keeps the peak of
    the parent that forked it, so a child started by a big parent would report the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(path: str) -> None:
    """Ingest and run one image file on a scratch embedded store; print the peak RSS."""
    from schemas.settings import Settings
    from service import detection, ingest
    from storage import migrate, seed
    from storage.context import open_storage

    data = Path(path).read_bytes() if path else b""
    for name in [n for n in os.environ if n.startswith("SKYGATE_")]:
        del os.environ[name]

    async def go():
        settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="bench-rss-")))
        async with open_storage(settings) as storage:
            await migrate.upgrade(storage.engine)
            await seed.ensure_default_configuration(storage.documents)
            from pipeline.methods.model import load_model

            load_model(seed.default_model_configuration().parameters.model_dump())
            baseline = peak_rss_kb()
            if not data:
                return baseline, None
            outcome = await ingest.ingest_bytes(storage, settings, data=data,
                                               original_file_name="big.jpg", user_id=None)
            await detection.run_all(storage, settings, outcome.upload_id)
            from storage import repository as repo

            upload = await repo.get_upload(storage.engine, outcome.upload_id)
            return baseline, upload["status"]

    baseline, status = asyncio.run(go())
    peak = peak_rss_kb()
    print(json.dumps({"file": path, "status": status, "baseline_kb": baseline,
                      "peak_kb": peak, "jpeg_bytes": len(data)}))


def _image(mp: float, kind: str) -> bytes:
    cols = int((mp * 1e6 * 4 / 3) ** 0.5)
    rows = int(mp * 1e6 / cols)
    if kind == "jpeg":
        return camera_jpeg(rows, cols, seed=7)
    buf = io.BytesIO()  # a flat PNG: tiny file, every pixel still decoded
    Image.new("RGB", (cols, rows), (120, 130, 140)).save(buf, format="PNG")
    return buf.getvalue()


def rss(sizes=((0, ""), (1, "jpeg"), (16, "jpeg"), (80, "jpeg"), (80, "png"))) -> None:
    print("\npeak RSS of one process running ingest + run_all (embedded), by image size:")
    with tempfile.TemporaryDirectory() as tmp:
        for mp, kind in sizes:
            path = ""
            if mp:
                path = str(Path(tmp) / f"{mp}.{kind}")
                Path(path).write_bytes(_image(mp, kind))
            out = subprocess.run([sys.executable, __file__, "--child", path], check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()
            r = json.loads(out[-1])
            label = (f"{mp} MP {'camera JPEG' if kind == 'jpeg' else 'flat PNG'}" if mp
                     else "baseline (imports, models)")
            print(f"  {label:<28} peak {r['peak_kb'] / 1024:7.0f} MB"
                  + (f"  (status {r['status']}, {r['jpeg_bytes']:,} B)" if mp else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--rss", action="store_true", help="also measure peak RSS by size")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # As every worker and scan process does (service.runtime.process_loop): freed buffers
    # are reused.
    from service.runtime.allocator import keep_freed_buffers

    keep_freed_buffers()
    if args.child is not None:
        _child(args.child)
        return
    print(f"{os.cpu_count()} CPUs; numpy {np.__version__}; best of {args.repeats}")
    camera = largest_camera_jpeg(args.corpus) or ("generated 12 MP camera JPEG",
                                                  camera_jpeg(3000, 4000))
    small = ("generated 1 MP camera JPEG", camera_jpeg(1000, 1000, seed=2))
    for name, data in (camera, small):
        print_bench(bench_image(name, data, args.repeats))
    if args.rss:
        rss()


if __name__ == "__main__":
    main()
