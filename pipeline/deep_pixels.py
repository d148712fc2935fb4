"""16- and 32-bit grey images (Pillow modes I;16, I, F) to 8 bits, a band of rows at a time,
and the check that float pixels are numbers at all: a TIFF full of NaN or infinities is not
a picture (converted blindly it became black and was judged "real")."""

from __future__ import annotations

import numpy as np
from PIL import Image

DEEP_MODES = ("I;16", "I;16B", "I", "F")
CHUNK_ROWS = 512  # rows converted at a time (bounded float64 buffers)
_BYTE_MAX = 255


class NonFinitePixels(ValueError):
    """Float pixels that are NaN or infinite."""


def _bands(img: Image.Image, dtype=None):
    cols, rows = img.size
    for r in range(0, rows, CHUNK_ROWS):
        yield r, np.asarray(img.crop((0, r, cols, min(rows, r + CHUNK_ROWS))), dtype=dtype)


def to_gray8(img: Image.Image) -> np.ndarray:
    """8-bit grey from a deep image (65535 or the image's own 255 scale); raises
    :class:`NonFinitePixels` for float pixels that are not numbers."""
    if img.mode == "F":
        for _, band in _bands(img):
            if not np.isfinite(band).all():
                raise NonFinitePixels("its pixel values are not finite numbers (NaN or "
                                      "infinity): not a picture")
    top = 65535.0 if img.mode.startswith("I;16") or img.getextrema()[1] > _BYTE_MAX else 255.0
    cols, rows = img.size
    gray = np.empty((rows, cols), dtype=np.uint8)
    for r, band in _bands(img, np.float64):
        gray[r:r + band.shape[0]] = np.clip(band / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return gray
