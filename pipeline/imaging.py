"""Pixel helpers every method shares: luminance, crops, blocks, the neutral view, PNG bytes.

The corpus's trap is format bias: nearly every AI image is PNG and every camera photo JPEG.
So every pixel method scores a *neutralised* view — the centre crop (no resampling),
re-encoded as JPEG q90 with no metadata — the same view the calibration and the model were
trained on (scripts/train_model.py). Raw-image statistics are still reported as details.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

#: Native-resolution statistics are computed on at most this centre crop (no resampling).
#: The same window as the neutral view's (before its JPEG round trip), so one crop of the
#: decoded image serves every pixel method: prepare keeps only this (issue 13; it was 2048,
#: which cost 4x the time and memory for the same fields).
MAX_SIDE = 1024
NEUTRAL_SIDE = 1024
NEUTRAL_QUALITY = 90
RGB_CHANNELS = 3
MIN_SIDE = 64  # below this, block statistics are too few to mean anything: abstain


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an (M, N, 3) uint8 image, as float64 in [0, 255]."""
    if rgb.shape[2:] != (RGB_CHANNELS,):  # (M, N, 3) exactly
        raise ValueError(f"expected an (M, N, 3) image, got shape {rgb.shape}")
    if rgb.dtype.kind == "f" and rgb.dtype != np.float64:
        rgb = rgb.astype(np.float64)
    # An integer channel times a Python float is float64 already: the same values without a
    # float copy of the whole image first.
    out = rgb[..., 0] * 0.299
    out += rgb[..., 1] * 0.587
    out += rgb[..., 2] * 0.114
    return out


def center_crop(image: np.ndarray, *, max_side: int) -> np.ndarray:
    """The central ``max_side`` × ``max_side`` window (or the whole image if smaller)."""
    rows, cols = image.shape[:2]
    r0 = max(0, (rows - max_side) // 2)
    c0 = max(0, (cols - max_side) // 2)
    return image[r0:r0 + max_side, c0:c0 + max_side]


def block_view(image: np.ndarray, block: int) -> np.ndarray:
    """(R, C, block, block) non-overlapping blocks, dropping the ragged border."""
    rows, cols = (image.shape[0] // block) * block, (image.shape[1] // block) * block
    trimmed = image[:rows, :cols]
    return trimmed.reshape(rows // block, block, cols // block, block).swapaxes(1, 2)


def _blocks4(image: np.ndarray, block: int) -> np.ndarray:
    """(R, block, C, block): the non-overlapping blocks as a reshape (no copy, no swap)."""
    rows, cols = (image.shape[0] // block) * block, (image.shape[1] // block) * block
    return image[:rows, :cols].reshape(rows // block, block, cols // block, block)


def block_mean(image: np.ndarray, block: int) -> np.ndarray:
    """(R, C) mean of each non-overlapping ``block`` × ``block`` block (ragged border dropped);
    ``block_view(image, block).mean(axis=(2, 3))`` in one vectorised pass."""
    return _blocks4(image, block).mean(axis=(1, 3))


#: The block side :func:`block_std` sums with whole-array adds (:func:`_block_sums8`).
FAST_BLOCK = 8


def _block_sums8(blocks: np.ndarray) -> np.ndarray:
    """``blocks.sum(axis=(1, 3))`` of float (R, 8, C, 8) blocks, the same values in about a
    third of the time: numpy sums each row of 8 separately, as the pairwise tree below (its 8
    partial sums), then the 8 rows in order; here each step is one whole-array add."""
    total = blocks[..., 0] + blocks[..., 1]
    total += blocks[..., 2] + blocks[..., 3]
    half = blocks[..., 4] + blocks[..., 5]
    half += blocks[..., 6] + blocks[..., 7]
    total += half
    return total.sum(axis=1)


def block_std(image: np.ndarray, block: int) -> np.ndarray:
    """(R, C) standard deviation of each block, two-pass like ``np.std`` (mean first)."""
    blocks = _blocks4(image, block)
    if block != FAST_BLOCK or blocks.dtype.kind != "f":
        centred = blocks - blocks.mean(axis=(1, 3), keepdims=True)
        centred *= centred
        return np.sqrt(centred.mean(axis=(1, 3)))
    size = FAST_BLOCK * FAST_BLOCK
    centred = blocks - (_block_sums8(blocks) / size)[:, None, :, None]
    centred *= centred
    return np.sqrt(_block_sums8(centred) / size)


#: The longest side of the view an evidence-only method reads (a method whose calibration
#: does not vote: its findings decide nothing, its pictures are looked at on a screen). The
#: central MAX_SIDE window is box-reduced by a power of two until it fits: at most 2 for
#: MAX_SIDE 1024, a quarter of the pixels (measured at 1 MP: prnu 57 → 16 ms, texture 55 →
#: 11 ms, ela with its picture 41 → 12 ms).
EVIDENCE_SIDE = 512


def evidence_view(native: np.ndarray, *, full_resolution: bool) -> tuple[np.ndarray, int]:
    """(view, downscale): the central :data:`MAX_SIDE` window of ``native`` at native
    resolution when ``full_resolution`` (a method that votes), else reduced by the smallest
    power of two that brings its longest side to :data:`EVIDENCE_SIDE` or less (Pillow's
    box reduction: each view pixel is the rounded mean of ``downscale``² native pixels)."""
    crop = center_crop(native, max_side=MAX_SIDE)
    factor = evidence_factor(crop.shape, full_resolution=full_resolution)
    if factor == 1:
        return crop, 1
    return reduce_by(crop, factor), factor


def evidence_factor(shape: tuple[int, ...], *, full_resolution: bool) -> int:
    """The power of two :func:`evidence_view` reduces a window of ``shape`` by (1: none)."""
    factor = 1
    while not full_resolution and max(shape[:2]) > factor * EVIDENCE_SIDE:
        factor *= 2
    return factor


def reduce_by(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` (uint8, (M, N) or (M, N, 3)) box-reduced by ``factor`` on both axes (a
    ragged border's pixels are averaged over what there is): ``Image.reduce``."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).reduce(factor))


def view_details(view: np.ndarray, factor: int) -> dict:
    """What a result records about the view its native statistics and pictures read."""
    return {"width": int(view.shape[1]), "height": int(view.shape[0]), "downscale": factor,
            "resolution": "native" if factor == 1 else f"1/{factor}"}


def too_small(rgb: np.ndarray) -> bool:
    """Fewer than :data:`MIN_SIDE` pixels on the short side: too few blocks to judge."""
    return min(rgb.shape[:2]) < MIN_SIDE


def neutralise(rgb: np.ndarray, *, side: int = NEUTRAL_SIDE,
               quality: int = NEUTRAL_QUALITY) -> np.ndarray:
    """Centre crop ≤ ``side`` and a JPEG round trip at ``quality``: (M, N, 3) uint8."""
    crop = np.ascontiguousarray(center_crop(rgb, max_side=side))
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="JPEG", quality=quality)
    view = Image.open(buf)
    # An RGB JPEG decodes as RGB: convert("RGB") would only copy it once more.
    return np.asarray(view if view.mode == "RGB" else view.convert("RGB"), dtype=np.uint8)


#: The most colours an indexed PNG holds.
PALETTE_COLOURS = 256
#: Largest product of the per-channel value counts :func:`palette_of` combines (the colour
#: codes then fit uint16 and their histogram is small); richer pictures are stored as RGB.
MAX_COLOUR_CODES = 1 << 16
#: zlib levels. Indexed: one byte a pixel, already a third of RGB's; level 1 measured 3x
#: faster than 6 for 10-20 % more bytes on ELA pictures of camera JPEGs, and still 30-40 %
#: smaller than the RGB PNG at level 6 it replaces. RGB (richer ELA pictures: about two
#: thirds of the corpus's): level 3 measured 4x faster than 6 (the Pillow default) for 6 %
#: more bytes (every 6th corpus file, indexed or RGB as chosen here: camera JPEGs 117 vs
#: 466 ms, 988 vs 934 KB a picture).
PALETTE_PNG_LEVEL = 1
RGB_PNG_LEVEL = 3


def palette_of(image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(indices (M, N) uint8, palette (K, 3) uint8) reproducing an (M, N, 3) uint8 image
    exactly, or None when it has more than :data:`PALETTE_COLOURS` colours.

    An ELA picture nearly always qualifies: each channel is a handful of amplified error
    levels. Every step is a whole-array pass (no sort of the pixels)."""
    if image.dtype != np.uint8 or image.shape[2:] != (RGB_CHANNELS,):
        return None
    channels = [image[..., c] for c in range(RGB_CHANNELS)]
    used = [np.flatnonzero(np.bincount(ch.ravel(), minlength=256)) for ch in channels]
    sizes = [u.size for u in used]
    if sizes[0] * sizes[1] * sizes[2] > MAX_COLOUR_CODES:
        return None
    # Each pixel's colour as one code: the rank of its value in each channel, mixed radix.
    code = np.zeros(image.shape[:2], dtype=np.uint16)
    for ch, values, size in zip(channels, used, sizes, strict=True):
        rank = np.zeros(256, dtype=np.uint16)
        rank[values] = np.arange(size, dtype=np.uint16)
        code *= size
        code += np.take(rank, ch)
    present = np.flatnonzero(np.bincount(code.ravel(), minlength=sizes[0] * sizes[1] * sizes[2]))
    if present.size > PALETTE_COLOURS:
        return None
    index_of = np.zeros(sizes[0] * sizes[1] * sizes[2], dtype=np.uint8)
    index_of[present] = np.arange(present.size)
    palette = np.stack([used[0][present // (sizes[1] * sizes[2])],
                        used[1][(present // sizes[2]) % sizes[1]],
                        used[2][present % sizes[2]]], axis=1).astype(np.uint8)
    return np.take(index_of, code), palette


def to_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an (M, N, 3) uint8 image (a picture a method hands on for
    storage): indexed when it has at most 256 colours (one byte a pixel: ELA pictures of
    camera JPEGs are 30-40 % smaller and 3-6x faster to write than as RGB), else RGB."""
    out = io.BytesIO()
    indexed = palette_of(image)
    if indexed is None:
        Image.fromarray(image).save(out, format="PNG", compress_level=RGB_PNG_LEVEL)
        return out.getvalue()
    indices, palette = indexed
    picture = Image.fromarray(indices)  # "L"; putpalette makes it "P" (mode= is deprecated)
    picture.putpalette(palette.ravel().tolist())
    picture.save(out, format="PNG", compress_level=PALETTE_PNG_LEVEL)
    return out.getvalue()


def _blur_matrix(n: int, sigma: float, mode: str, truncate: float = 4.0) -> np.ndarray:
    """(n, n): a 1-D Gaussian of ``sigma`` as a matrix, edges as scipy.ndimage names them
    (``reflect``: d c b a | a b c d; ``nearest``: a a a a | a b c d)."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    taps = np.arange(n)[:, None] + offsets[None, :]
    if mode == "nearest":
        taps = np.clip(taps, 0, n - 1)
    elif mode == "reflect":
        period = 2 * n
        taps = np.mod(taps, period)
        taps = np.where(taps >= n, period - 1 - taps, taps)
    else:
        raise ValueError(f"unknown edge mode {mode!r}")
    matrix = np.zeros((n, n))
    np.add.at(matrix, (np.repeat(np.arange(n), offsets.size), taps.ravel()),
              np.tile(kernel, n))
    return matrix


def gaussian_blur(image: np.ndarray, sigma: float, *, mode: str = "reflect") -> np.ndarray:
    """A 2-D Gaussian blur (float64), equal to ``scipy.ndimage.gaussian_filter`` with the same
    ``mode``: two small matrix products, so the pictures need no scipy (a test extra)."""
    rows, cols = image.shape
    return (_blur_matrix(rows, sigma, mode) @ np.asarray(image, dtype=np.float64)
            @ _blur_matrix(cols, sigma, mode).T)
