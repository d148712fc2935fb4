"""The methods' faster helpers compute what their plain numpy / scipy definitions compute."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, uniform_filter

from pipeline.imaging import block_std, gaussian_blur, luminance
from pipeline.methods.ela import amplified, error_levels, integer_percentile
from pipeline.methods.prnu import _mean_power, smallest_local_mean
from pipeline.methods.texture import lbp_codes, spectral_slope
from pipeline.order_stats import order_statistics, percentiles
from testkit.images import noisy_photo, smooth_scene


def test_smallest_local_mean_is_the_minimum_of_the_uniform_filters():
    rng = np.random.default_rng(21)
    for shape in ((1, 1), (2, 3), (3, 5), (4, 4), (5, 7), (9, 8), (63, 64), (250, 125)):
        values = rng.uniform(0, 30, shape) ** 4  # a wide range, as squared coefficients are
        expected = uniform_filter(values, size=3, mode="reflect")
        for size in (5, 7, 9):
            np.minimum(expected, uniform_filter(values, size=size, mode="reflect"),
                       out=expected)
        assert np.allclose(smallest_local_mean(values), expected, rtol=1e-11, atol=0), shape


def test_gaussian_blur_is_scipys_gaussian_filter():
    """The heatmaps' blur (numpy matrices) is scipy's, for both edge modes they use."""
    rng = np.random.default_rng(5)
    for shape, sigma in (((224, 224), 6.0), ((37, 53), 2.5), ((10, 300), 7.0), ((5, 5), 3.0)):
        image = rng.normal(size=shape)
        for mode in ("reflect", "nearest"):
            assert np.allclose(gaussian_blur(image, sigma, mode=mode),
                               gaussian_filter(image, sigma, mode=mode), rtol=0, atol=1e-12)


def test_block_std_equals_numpy_std_of_each_block():
    rng = np.random.default_rng(22)
    for image in (rng.standard_normal((203, 150)) * 10.0 ** rng.uniform(-3, 5, (203, 150)),
                  np.full((64, 72), 0.299 * 17 + 0.587 * 33 + 0.114 * 200),
                  luminance(noisy_photo(rows=120, cols=96, seed=4))):
        for block in (8, 32):
            rows, cols = image.shape[0] // block * block, image.shape[1] // block * block
            blocks = image[:rows, :cols].reshape(rows // block, block, cols // block, block)
            expected = blocks.swapaxes(1, 2).std(axis=(2, 3))
            assert np.allclose(block_std(image, block), expected, rtol=1e-12, atol=0)


def test_percentiles_and_order_statistics_are_numpys():
    rng = np.random.default_rng(23)
    cases = [rng.integers(0, 4, 150_001).astype(np.float64),  # ties across the brackets
             rng.exponential(3.0, 200_000), np.sort(rng.uniform(0, 9, 90_000)),
             np.zeros(70_000), rng.standard_normal(1_000) ** 2, np.array([2.0])]
    spoiled = np.zeros(100_000)  # every sampled value an outlier: the brackets miss
    spoiled[:: spoiled.size // 16384] = 1e9
    cases.append(spoiled)
    for values in cases:
        for qs in ([50, 99], [0, 12.5, 50, 99.5, 100]):
            got = percentiles(values, qs)
            assert np.array_equal(got, np.percentile(values, qs)), (values.size, qs)
            got = percentiles(values, qs, transform=np.sqrt)
            assert np.array_equal(got, np.percentile(np.sqrt(values), qs)), (values.size, qs)
        last = values.size - 1
        ranks = sorted({0, values.size // 3, min(values.size // 3 + 1, last), last})
        assert np.array_equal(order_statistics(values, ranks), np.sort(values)[ranks])


def test_mean_power_is_the_mean_squared_modulus():
    residual = np.random.default_rng(24).standard_normal((96, 130))
    for axis in (0, 1):
        spectrum = np.fft.rfft(residual, axis=axis)
        assert np.allclose(_mean_power(spectrum, axis=1 - axis),
                           np.mean(np.abs(spectrum) ** 2, axis=1 - axis), rtol=1e-12, atol=0)


def test_lbp_codes_are_the_comparison_bits():
    gray = luminance(smooth_scene(rows=67, cols=90))  # flat areas: many ties
    centre = gray[1:-1, 1:-1]
    expected = np.zeros(centre.shape, dtype=np.uint8)
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    for bit, (dr, dc) in enumerate(offsets):
        neighbour = gray[1 + dr: gray.shape[0] - 1 + dr, 1 + dc: gray.shape[1] - 1 + dc]
        expected |= (neighbour >= centre).astype(np.uint8) << bit
    assert np.array_equal(lbp_codes(gray), expected)


def test_error_levels_and_their_picture_are_the_numpy_definitions():
    for image in (noisy_photo(rows=150, cols=170, seed=5), smooth_scene(rows=97, cols=64)):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=90)
        resaved = np.asarray(Image.open(buf).convert("RGB"))
        levels = error_levels(image, quality=90)
        assert np.array_equal(levels, np.abs(image.astype(np.int16) - resaved).astype(np.uint8))
        scale = 255.0 / max(integer_percentile(levels, 99.5), 1.0)
        table = np.clip(np.arange(256) * scale, 0, 255).astype(np.uint8)
        assert np.array_equal(amplified(levels), table[levels])
        assert np.array_equal(amplified(levels, scale=3.3),
                              np.clip(levels * 3.3, 0, 255).astype(np.uint8))
        channel = np.ascontiguousarray(levels[..., 0])  # not RGB: numpy's own lookup
        scale = 255.0 / max(integer_percentile(channel, 99.5), 1.0)
        table = np.clip(np.arange(256) * scale, 0, 255).astype(np.uint8)
        assert np.array_equal(amplified(channel), table[channel])


def test_ela_reads_the_neutral_view_as_its_resave_with_the_same_result():
    from pipeline.imaging import neutralise
    from pipeline.methods.ela import METHOD
    from pipeline.methods.registry import (
        NATIVE_PIXELS,
        NEUTRAL_FEATURES,
        NEUTRAL_PIXELS,
        SETTINGS,
    )
    from schemas.settings import Settings

    for rgb in (noisy_photo(rows=300, cols=420, seed=9), smooth_scene(rows=256, cols=256)):
        once = np.asarray(Image.open(io.BytesIO(_jpeg(rgb, 85))).convert("RGB"))
        inputs = {NATIVE_PIXELS: once, NEUTRAL_FEATURES: {"features": {}},
                  SETTINGS: Settings(ela_quality=90)}
        with_view = METHOD.execute({**inputs, NEUTRAL_PIXELS: neutralise(once)})
        own = METHOD.execute({**inputs, NEUTRAL_PIXELS: np.zeros((1, 1, 3), np.uint8)})
        assert with_view.result.details == own.result.details
        assert with_view.result.block_map == own.result.block_map
        assert with_view.pictures["ela"].data == own.pictures["ela"].data
        # Another quality: its own re-save, whatever the neutral view.
        other = METHOD.execute({**inputs, SETTINGS: Settings(ela_quality=75),
                                NEUTRAL_PIXELS: neutralise(once)})
        assert other.result.details["quality"] == 75
        assert other.result.details != with_view.result.details


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def test_mean_power_is_numpys_in_double_and_single_precision():
    rng = np.random.default_rng(31)
    for dtype in (np.float64, np.float32):
        residual = rng.standard_normal((64, 48)).astype(dtype)
        for axis in (0, 1):
            spectrum = np.fft.rfft(residual, axis=axis)
            expected = np.mean(np.abs(spectrum) ** 2, axis=1 - axis)
            assert np.allclose(_mean_power(spectrum, axis=1 - axis), expected, rtol=1e-5)


def _png_pixels(data: bytes) -> tuple[str, np.ndarray]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as img:
        return img.mode, np.asarray(img.convert("RGB"))


def test_pictures_are_stored_losslessly_indexed_when_they_have_few_colours():
    from pipeline.imaging import PALETTE_COLOURS, palette_of, to_png

    photo = noisy_photo(rows=200, cols=300, seed=4)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG", quality=85)
    jpeg = np.asarray(Image.open(buf).convert("RGB"))
    ela_picture = amplified(error_levels(jpeg))
    rng = np.random.default_rng(3)

    def grid(reds: int, greens: int) -> np.ndarray:
        """Every (red, green) pair of so many levels once, blue fixed, in random order."""
        pairs = np.stack(np.meshgrid(np.arange(reds), np.arange(greens), indexing="ij"),
                         -1).reshape(-1, 2)
        out = np.full((1, pairs.shape[0], 3), 200, np.uint8)
        out[0, :, :2] = rng.permutation(pairs) * 15
        return out

    # 256 colours, but 256 values in each channel: more codes than palette_of combines.
    spread = np.repeat(np.arange(PALETTE_COLOURS, dtype=np.uint8)[None, :, None], 3, axis=2)
    cases = {"ela picture": (ela_picture, "P"), "photo": (photo, "RGB"),
             "256 colours": (grid(16, 16), "P"), "272 colours": (grid(17, 16), "RGB"),
             "256 spread colours": (spread, "RGB"),
             "flat": (np.full((5, 7, 3), 9, np.uint8), "P")}
    for name, (image, mode) in cases.items():
        stored_mode, back = _png_pixels(to_png(image))
        assert stored_mode == mode, name
        assert np.array_equal(back, image), name
    indices, palette = palette_of(ela_picture)
    assert np.array_equal(palette[indices], ela_picture)
    assert len(np.unique(ela_picture.reshape(-1, 3), axis=0)) == len(palette)


def test_spectral_slope_with_numpy_fft_equals_scipys_pocketfft(monkeypatch):
    """texture's one FFT is numpy's (scipy left the light install): the slopes equal scipy's."""
    import scipy.fft

    grays = [luminance(noisy_photo(rows=r, cols=c, seed=r)) for r, c in ((192, 256), (131, 97),
                                                                          (480, 640))]
    grays.append(luminance(smooth_scene(rows=150, cols=200)))
    numpy_slopes = [spectral_slope(g) for g in grays]
    monkeypatch.setattr(np.fft, "rfft2", scipy.fft.rfft2)
    scipy_slopes = [spectral_slope(g) for g in grays]
    assert all(np.isfinite(numpy_slopes)) and len(set(numpy_slopes)) == len(grays)
    assert np.allclose(numpy_slopes, scipy_slopes, rtol=1e-12, atol=1e-12)
