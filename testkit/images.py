"""Builders for test images: small functions with keyword defaults."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, PngImagePlugin

# Deferred imports: skygate.sample loads only for the scenes that use it.


def smooth_scene(*, rows: int = 256, cols: int = 256, seed: int = 0) -> np.ndarray:
    from skygate.sample import _scene

    return np.clip(_scene(rows, cols, seed), 0, 255).astype(np.uint8)


def noisy_photo(*, rows: int = 256, cols: int = 256, seed: int = 0,
                sigma: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scene = smooth_scene(rows=rows, cols=cols, seed=seed).astype(np.float64)
    return np.clip(scene + rng.normal(0, sigma, scene.shape), 0, 255).astype(np.uint8)


def encode(array: np.ndarray, *, fmt: str = "PNG", quality: int = 92, text: dict | None = None,
           exif: dict | None = None) -> bytes:
    out = io.BytesIO()
    kwargs = {}
    if fmt == "PNG" and text:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_text(k, v)
        kwargs["pnginfo"] = info
    if fmt == "JPEG":
        kwargs["quality"] = quality
    if exif:
        e = Image.Exif()
        for k, v in exif.items():
            e[k] = v
        kwargs["exif"] = e
    Image.fromarray(array).save(out, format=fmt, **kwargs)
    return out.getvalue()


SD_PARAMETERS = ("a cat astronaut\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, "
                 "CFG scale: 7, Seed: 42, Size: 512x512, Model: v1-5-pruned-emaonly")
