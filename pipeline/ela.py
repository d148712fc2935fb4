"""Error level analysis: how much each pixel changes when the image is saved again as JPEG.

Regions pasted in or rendered differently recompress differently. On unprocessed files ELA
mostly tells the file's format and quality (PNG vs JPEG), so its statistics are a forensic
view for a person, and vote only as far as calibration on format-neutral data allows.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.prnu import block_view


def ela(image: np.ndarray, *, quality: int = 90, scale: float | None = None) -> np.ndarray:
    """Amplified absolute difference between an image and its JPEG re-save.

    Parameters
    ----------
    image : (M, N, 3) ndarray of np.uint8
    quality : int
        JPEG quality of the re-save (1–100).
    scale : float, optional
        Amplification; by default stretches the 99.5th percentile to 255.

    Returns
    -------
    (M, N, 3) ndarray of np.uint8, the ELA image.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("image must be (M, N, 3) uint8")
    if not 1 <= quality <= 100:
        raise ValueError("quality must be in 1..100")
    diff = error_levels(image, quality=quality)
    if scale is None:
        top = np.percentile(diff, 99.5)
        scale = 255.0 / max(top, 1.0)
    return np.clip(diff * scale, 0, 255).astype(np.uint8)


def error_levels(image: np.ndarray, *, quality: int = 90) -> np.ndarray:
    """Unamplified |image − JPEG(image)| per channel, float64."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    resaved = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float64)
    return np.abs(image.astype(np.float64) - resaved)


def ela_statistics(image: np.ndarray, *, quality: int = 90, block: int = 32) -> dict:
    """Error-level statistics and block uniformity.

    ``error_level_mean`` / ``error_level_std`` / ``error_level_p99`` (grey levels),
    ``block_uniformity`` (1 − coefficient of variation of per-block mean error; 1 = every
    block recompresses alike), ``blockiness`` (energy on the 8×8 grid vs elsewhere: the
    trace of an earlier JPEG save) and ``block_map`` (per-block mean error, scaled to [0, 1]).
    """
    diff = error_levels(image, quality=quality).mean(axis=2)
    blocks = block_view(diff, block).mean(axis=(2, 3))
    cv = float(blocks.std() / (blocks.mean() + 1e-6))
    gray = image.astype(np.float64).mean(axis=2)
    dcol = np.abs(np.diff(gray, axis=1))
    on_grid = dcol[:, 7::8].mean() if dcol.shape[1] > 8 else 0.0
    off_grid = np.delete(dcol, np.s_[7::8], axis=1).mean() if dcol.shape[1] > 8 else 1.0
    top = np.percentile(blocks, 99) if blocks.size else 1.0
    return {
        "error_level_mean": float(diff.mean()),
        "error_level_std": float(diff.std()),
        "error_level_p99": float(np.percentile(diff, 99)),
        "block_uniformity": float(max(0.0, 1.0 - cv)),
        "blockiness": float(on_grid / (off_grid + 1e-6)),
        "block_map": np.clip(blocks / max(top, 1e-6), 0, 1),
    }


def to_png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", optimize=False)
    return out.getvalue()
