"""Heatmaps a person can read: the voting model's map (log-odds each region of its view adds
to P(AI), with a legend), and the forensic methods' per-block maps combined (evidence).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from pipeline.imaging import RGB_PNG_LEVEL, gaussian_blur, to_png

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
                       confidence: float, threshold: float = 0.75, limit: int = 5) -> list[dict]:
    """The hottest blocks as seed ``detected_anomalies`` entries (bounding boxes in pixels).

    A block's map value ranks and selects it; ``confidence`` is what the methods' calibration
    says of the image (a map value is a raw statistic, never reported as a confidence)."""
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
            "confidence": round(float(confidence), 3),
            "bounding_box": {"x": int(c * cell_w), "y": int(r * cell_h),
                             "width": round(cell_w), "height": round(cell_h)},
            "description": "region with far less sensor noise and micro-texture than the rest",
        })
    return out


# --- the voting model's map (pipeline/attribution.py) ---------------------------------------

#: The colour scale never spans less than this many log-odds, so a map of tiny pulls is
#: drawn pale instead of stretched to full colour.
MIN_SCALE = 0.5
_TOWARD_AI = np.array([200, 30, 40], dtype=np.float64)
_TOWARD_REAL = np.array([30, 90, 220], dtype=np.float64)
LEGEND_PX = 30


def attribution_scale(delta: np.ndarray) -> float:
    """The log-odds full colour stands for: the map's largest |value|, at least MIN_SCALE."""
    return max(MIN_SCALE, float(np.abs(delta).max()))


def smooth_map(delta: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A grid of cell values upsampled (bicubic) and smoothed to ``shape`` (rows, cols)."""
    grid = np.asarray(delta, dtype=np.float32)
    img = Image.fromarray(grid, mode="F").resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    sigma = max(shape) / max(grid.shape) / 4
    return gaussian_blur(np.asarray(img, dtype=np.float64), sigma, mode="nearest")


def attribution_rgba(delta: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(rows, cols, 4) uint8: red where the region pulls towards AI, blue towards a photo,
    opacity by strength (transparent at 0)."""
    v = np.clip(smooth_map(delta, shape) / attribution_scale(delta), -1, 1)
    colour = np.where(v[..., None] >= 0, _TOWARD_AI, _TOWARD_REAL)
    alpha = np.abs(v) * 0.8 * 255
    return np.dstack([colour, alpha]).round().astype(np.uint8)


def render_attribution(delta: np.ndarray, rgb: np.ndarray, box: dict) -> bytes:
    """The model's map over the picture it was drawn from, with its legend, as a PNG.

    ``box`` is the region the model saw in ``rgb``'s pixels (x, y, width, height): outside it
    the picture is dimmed (the model did not see it).
    """
    rows, cols = rgb.shape[:2]
    base = rgb.astype(np.float64) * 0.4 + 255 * 0.35  # washed out outside the model's view
    x0, y0 = max(0, int(box["x"])), max(0, int(box["y"]))
    x1, y1 = min(cols, x0 + int(box["width"])), min(rows, y0 + int(box["height"]))
    base[y0:y1, x0:x1] = rgb[y0:y1, x0:x1]
    if x1 > x0 and y1 > y0:
        over = attribution_rgba(delta, (y1 - y0, x1 - x0)).astype(np.float64)
        a = over[..., 3:] / 255
        base[y0:y1, x0:x1] = (1 - a) * base[y0:y1, x0:x1] + a * over[..., :3]
    canvas = Image.new("RGB", (max(cols, 200), rows + LEGEND_PX), "white")
    canvas.paste(Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)), (0, 0))
    draw_legend(ImageDraw.Draw(canvas), (0, rows), canvas.width, attribution_scale(delta))
    buf = io.BytesIO()
    # The methods' pictures' zlib level: optimize=True took 81 ms of CPU on a 256 px photo
    # thumbnail (5.8 ms at level 3) to save 6 % of its bytes.
    canvas.save(buf, format="PNG", compress_level=RGB_PNG_LEVEL)
    return buf.getvalue()


def draw_legend(draw, origin: tuple[int, int], width: int, scale: float) -> None:
    """A blue–white–red bar with its meaning: how much the region's detail moves P(AI)."""
    x, y = origin
    bar = max(20, width - 8)
    for i in range(bar):
        v = 2 * i / max(bar - 1, 1) - 1
        colour = _TOWARD_AI if v >= 0 else _TOWARD_REAL
        c = 255 + (colour - 255) * abs(v) * 0.8
        draw.line([(x + 4 + i, y + 2), (x + 4 + i, y + 10)], fill=tuple(int(t) for t in c))
    draw.text((x + 4, y + 13), f"-{scale:.1f} photo", fill=(30, 60, 160))
    draw.text((x + 4 + bar // 2 - 3, y + 13), "0", fill=(60, 60, 60))
    draw.text((x + bar - 44, y + 13), f"AI +{scale:.1f}", fill=(160, 20, 30))
