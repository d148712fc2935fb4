"""Combine the methods' per-block maps into one heatmap a person can read."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.imaging import to_png

_GRID_DIMS = 2  # a block map is a (rows, cols) grid


def _resize(block_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    img = Image.fromarray((np.clip(block_map, 0, 1) * 255).astype(np.uint8))
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR),
                      dtype=np.float64) / 255.0


def combine_block_maps(maps: dict[str, list[list[float]]], *,
                       weights: dict[str, float] | None = None,
                       shape: tuple[int, int] = (32, 32)) -> np.ndarray | None:
    """Weighted mean of per-block maps (each in [0, 1], any grid) on a common (rows, cols) grid."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in maps.items() if v}
    arrays = {k: a for k, a in arrays.items() if a.ndim == _GRID_DIMS and a.size}
    if not arrays:
        return None
    total = np.zeros(shape)
    weight_sum = 0.0
    for name, arr in arrays.items():
        w = (weights or {}).get(name, 1.0)
        total += w * _resize(arr, shape)
        weight_sum += w
    return total / max(weight_sum, 1e-9)


def render_heatmap(combined: np.ndarray, thumbnail_rgb: np.ndarray, *,
                   alpha: float = 0.55) -> bytes:
    """Overlay ``combined`` (rows, cols in [0, 1]) on the image as a PNG (blue low, red high)."""
    rows, cols = thumbnail_rgb.shape[:2]
    heat = _resize(combined, (rows, cols))
    # A simple perceptual ramp: blue -> yellow -> red.
    colour = np.stack([np.clip(2 * heat, 0, 1),
                       np.clip(2 - 2 * heat, 0, 1) * np.clip(2 * heat, 0, 1),
                       np.clip(1 - 2 * heat, 0, 1)], axis=2) * 255
    blended = (1 - alpha) * thumbnail_rgb.astype(np.float64) + alpha * colour
    return to_png(np.clip(blended, 0, 255).astype(np.uint8))


def anomalies_from_map(combined: np.ndarray, image_shape: tuple[int, int], *,
                       threshold: float = 0.75, limit: int = 5) -> list[dict]:
    """The hottest blocks as seed ``detected_anomalies`` entries (bounding boxes in pixels)."""
    rows, cols = combined.shape
    cell_h, cell_w = image_shape[0] / rows, image_shape[1] / cols
    order = np.argsort(combined.ravel())[::-1]
    out = []
    for idx in order[:limit]:
        value = float(combined.ravel()[idx])
        if value < threshold:
            break
        r, c = divmod(int(idx), cols)
        out.append({
            "type": "noiseless_region",
            "confidence": round(value, 3),
            "bounding_box": {"x": int(c * cell_w), "y": int(r * cell_h),
                             "width": round(cell_w), "height": round(cell_h)},
            "description": "region with far less sensor noise and micro-texture than the rest",
        })
    return out
