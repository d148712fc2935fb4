"""A small sample folder made on the spot, so the first command needs no downloads."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin


def _scene(rows: int, cols: int, seed: int) -> np.ndarray:
    """A smooth synthetic scene: gradients and soft discs (what a renderer might draw)."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    img = np.stack([0.4 + 0.4 * r, 0.3 + 0.5 * c, 0.6 - 0.3 * r * c], axis=2)
    for _ in range(6):
        cr, cc, rad = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2)
        mask = np.clip(1.2 - np.hypot(r - cr, c - cc) / rad, 0, 1)[..., None]
        img = img * (1 - mask) + mask * rng.uniform(0, 1, 3)
    return img * 255


def make_sample(folder: Path) -> list[Path]:
    """Write three images: a noisy 'camera' JPEG with EXIF, a clean render, and a PNG that
    declares its generator. Returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    scene = _scene(480, 640, 1)
    # Camera-like: photo-response non-uniformity (multiplicative) plus shot/read noise.
    prnu = 1 + 0.02 * rng.standard_normal((480, 640, 1))
    camera = np.clip(scene * prnu + rng.normal(0, 3.0, scene.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "SkyGate Sample Camera Co."  # Make
    exif[0x0110] = "SG-1"  # Model
    exif[0x0132] = "2024:05:04 10:30:00"  # DateTime
    paths = []
    p = folder / "camera_like.jpg"
    Image.fromarray(camera).save(p, quality=92, exif=exif)
    paths.append(p)
    p = folder / "clean_render.png"
    Image.fromarray(np.clip(_scene(512, 512, 2), 0, 255).astype(np.uint8)).save(p)
    paths.append(p)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a lighthouse at dusk\nSteps: 30, Sampler: Euler a, CFG scale: 7,"
                  " Seed: 1, Size: 512x512, Model: sd_xl_base_1.0")
    p = folder / "declared_generator.png"
    Image.fromarray(np.clip(_scene(512, 512, 3), 0, 255).astype(np.uint8)).save(p, pnginfo=info)
    paths.append(p)
    return paths


def png_bytes(array: np.ndarray, **text) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", pnginfo=info)
    return out.getvalue()
