"""Augmented views of one image, made exactly as at inference plus web-style damage."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from pipeline.imaging import neutralise


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A crop (60–100 % of each side), a downscale (0.5–1) and a JPEG round trip (q60–95)."""
    rows, cols = rgb.shape[:2]
    frac = rng.uniform(0.6, 1.0)
    h, w = max(32, int(rows * frac)), max(32, int(cols * frac))
    top = int(rng.integers(0, rows - h + 1))
    left = int(rng.integers(0, cols - w + 1))
    img = Image.fromarray(np.ascontiguousarray(rgb[top:top + h, left:left + w]))
    scale = rng.uniform(0.5, 1.0)
    size = (max(32, round(w * scale)), max(32, round(h * scale)))
    img = img.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(60, 96)))
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)


def _tone_curve(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A gamma and an S-curve (contrast), as a Lightroom tone curve does."""
    gamma = rng.uniform(0.7, 1.4)
    strength = rng.uniform(-0.3, 0.6)  # < 0 flattens, > 0 adds an S
    x = np.arange(256) / 255.0
    y = x ** gamma
    y = y + strength * (y - 0.5) * (1 - np.abs(2 * y - 1)) / 2
    lut = np.clip(np.round(y * 255), 0, 255).astype(np.uint8).tolist()
    return img.point(lut * 3)


def edit(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A photo edited the way people edit them: some of tone curve, saturation, clarity
    (unsharp mask), noise reduction, then a downscale and a JPEG export.

    Applied to both classes alike, so that "edited" carries no label.
    """
    img = Image.fromarray(np.ascontiguousarray(rgb))
    if rng.random() < 0.7:
        img = _tone_curve(img, rng)
    if rng.random() < 0.6:
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.5))
    if rng.random() < 0.5:  # clarity / output sharpening
        img = img.filter(ImageFilter.UnsharpMask(radius=rng.uniform(0.8, 3.0),
                                                 percent=int(rng.integers(40, 180)),
                                                 threshold=int(rng.integers(0, 4))))
    elif rng.random() < 0.6:  # noise reduction
        img = (img.filter(ImageFilter.MedianFilter(3)) if rng.random() < 0.4
               else img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2))))
    scale = rng.uniform(0.35, 1.0)
    size = (max(64, round(img.width * scale)), max(64, round(img.height * scale)))
    img = img.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(70, 96)))
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)


def views(rgb: np.ndarray, *, key: str, n_augmented: int, n_edited: int = 0
          ) -> list[np.ndarray]:
    """The inference view (neutralised) first, then ``n_augmented`` damaged ones and
    ``n_edited`` edited ones (:func:`edit`), all neutralised.

    The random stream is seeded from ``key`` (the file name) so a rebuild is reproducible.
    """
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    out = [neutralise(rgb)]
    out += [neutralise(augment(rgb, rng)) for _ in range(n_augmented)]
    out += [neutralise(edit(rgb, rng)) for _ in range(n_edited)]
    return out
