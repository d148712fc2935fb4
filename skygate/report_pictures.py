"""The pictures of one image in a report folder, screen-sized and within a byte budget.

Per judged image: a thumbnail for the index (JPEG ≤ :data:`THUMB_PX`), the picture at screen
size (WebP ≤ :data:`SCREEN_PX`, made smaller until the image's files fit :data:`BUDGET`), the
voting model's map as a small transparent overlay (the browser scales it over the region the
model saw) and the ELA picture of that same region. Originals are never copied: the image
page links to the scanned file. Pixel positions are the file's (no EXIF rotation), as the
methods see them, so the overlay and the ELA crop line up with the picture.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from pipeline.attribution import view_box
from pipeline.heatmap import attribution_rgba, attribution_scale
from pipeline.imaging import NEUTRAL_SIDE

THUMB_PX = 128
SCREEN_PX = 1600
OVERLAY_PX = 96
#: Every file of one image in the report folder, its page included, stays under this.
BUDGET = 150 * 1024
#: Kept for the image's page and the other pictures when sizing the screen picture.
PAGE_ALLOWANCE = 8 * 1024
#: The ELA picture's share: noise-like, it would take the whole budget at full size.
ELA_BUDGET = 28 * 1024
SMALLEST_SCREEN, SMALLEST_ELA = 480, 192
_QUALITY = 70
_TRIES = 4


@dataclass
class ImagePictures:
    """File names in the folder (None when not made) and what the page needs to place them."""

    thumb: list | None = None  # [file, width, height]
    screen: list | None = None  # [file, width, height]
    overlay: str | None = None
    ela: str | None = None
    box: dict | None = None  # the model's view as fractions of the picture (x, y, w, h)
    scale: float | None = None  # log-odds full overlay colour stands for
    files: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    missing: list[str] = field(default_factory=list)


def _encode(img: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "WEBP":
        img.save(buf, "WEBP", quality=quality, method=3)
    else:
        img.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def screen_picture(img: Image.Image, budget: int, *, largest: int = SCREEN_PX,
                   smallest: int = SMALLEST_SCREEN) -> tuple[bytes, int, int]:
    """``img`` as WebP, long side at most ``largest``, within ``budget`` bytes: an encoding
    too large is redone at the side its size predicts (bytes grow with the pixel count), down
    to ``smallest``. Returns (bytes, width, height)."""
    side = largest
    for _ in range(_TRIES):
        small = img.copy()
        small.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=2.0)
        data = _encode(small, "WEBP", _QUALITY)
        if len(data) <= budget or side <= smallest:
            break
        side = max(smallest, int(max(small.size) * math.sqrt(budget / len(data)) * 0.92))
    return data, *small.size


def ela_crop(ela: Image.Image) -> Image.Image:
    """The ELA picture (of the central ≤ 1024 window) cut to the model's view: that window's
    central square."""
    side = min(ela.size)
    left, top = (ela.width - side) // 2, (ela.height - side) // 2
    return ela.crop((left, top, left + side, top + side))


def model_view(width: int, height: int) -> dict:
    """The region the model saw, as fractions of the picture."""
    box = view_box((height, width), NEUTRAL_SIDE)
    return {"x": box["x"] / width, "y": box["y"] / height,
            "w": box["width"] / width, "h": box["height"] / height}


def make_pictures(blobs, stem: str, folder, *, original_key: str | None,
                  thumbnail_key: str | None, ela_key: str | None,
                  attribution: dict | None) -> ImagePictures:
    """Write the image's pictures as ``<stem>_*`` in ``folder``; never raises for a picture
    that cannot be read (it is listed in ``missing``)."""
    out = ImagePictures()
    written: dict[str, bytes] = {}
    source, full_size = None, None
    for key in (original_key, thumbnail_key):
        if not key:
            continue
        try:
            with Image.open(io.BytesIO(blobs.get(key))) as img:
                full_size = img.size if key == original_key else None  # before draft()
                img.draft("RGB", (SCREEN_PX, SCREEN_PX))
                source = img.convert("RGB")
            break
        except Exception:  # noqa: BLE001, S112 - an unreadable original: the thumbnail instead
            continue
    if source is None:
        out.missing.append("image")
    else:
        thumb = source.copy()
        thumb.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
        written[f"{stem}_t.jpg"] = _encode(thumb, "JPEG", 70)
        out.thumb = [f"{stem}_t.jpg", thumb.width, thumb.height]
        delta = (attribution or {}).get("delta_log_odds")
        if delta and full_size:
            grid = np.asarray(delta, dtype=np.float64)
            png = io.BytesIO()
            Image.fromarray(attribution_rgba(grid, (OVERLAY_PX, OVERLAY_PX)), "RGBA").save(
                png, "PNG", optimize=True)
            written[f"{stem}_m.png"] = png.getvalue()
            out.overlay, out.scale = f"{stem}_m.png", round(attribution_scale(grid), 2)
            out.box = model_view(*full_size)
        if ela_key:
            try:
                with Image.open(io.BytesIO(blobs.get(ela_key))) as ela:
                    crop = ela_crop(ela.convert("RGB"))
                written[f"{stem}_e.webp"] = screen_picture(
                    crop, ELA_BUDGET, largest=512, smallest=SMALLEST_ELA)[0]
                out.ela = f"{stem}_e.webp"
            except Exception:  # noqa: BLE001 - a lost ELA picture leaves the page without it
                out.missing.append("ELA")
        left = BUDGET - PAGE_ALLOWANCE - sum(len(b) for b in written.values())
        data, w, h = screen_picture(source, max(left, 8 * 1024))
        written[f"{stem}_s.webp"] = data
        out.screen = [f"{stem}_s.webp", w, h]
    for name, data in written.items():
        (folder / name).write_bytes(data)
        out.files[name] = len(data)
    return out
