"""Augmented views of one image, made exactly as at inference plus web-style damage."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

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


def views(rgb: np.ndarray, *, key: str, n_augmented: int) -> list[np.ndarray]:
    """The inference view (neutralised) first, then ``n_augmented`` damaged ones, neutralised.

    The random stream is seeded from ``key`` (the file name) so a rebuild is reproducible.
    """
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    out = [neutralise(rgb)]
    out += [neutralise(augment(rgb, rng)) for _ in range(n_augmented)]
    return out
