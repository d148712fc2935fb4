"""pipeline.wavelets computes what pywt computes (periodization mode), to float64 rounding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import pywt
from PIL import Image

from pipeline import wavelets
from pipeline.imaging import luminance
from pipeline.methods import prnu
from testkit.images import encode, noisy_photo

SHAPES = [(1024, 1024), (1000, 1000), (999, 1001), (517, 300), (64, 64), (17, 33), (63, 65),
          (130, 129), (40, 1000), (1000, 45), (2, 3), (1, 200), (1, 1)]
TOLERANCE = {"rtol": 1e-9, "atol": 1e-9}


def _levels(shape, wavelet="db8"):
    most = pywt.dwtn_max_level(shape, wavelet)
    return sorted({0, min(1, most), min(4, most), most})


def _assert_same_coefficients(got, expected):
    assert isinstance(got, list)
    assert len(got) == len(expected)
    np.testing.assert_allclose(got[0], expected[0], **TOLERANCE)
    assert got[0].shape == expected[0].shape
    for got_level, expected_level in zip(got[1:], expected[1:], strict=True):
        assert isinstance(got_level, tuple)
        assert len(got_level) == len(expected_level) == 3
        for band, expected_band in zip(got_level, expected_level, strict=True):
            assert band.shape == expected_band.shape
            assert band.dtype == np.float64
            np.testing.assert_allclose(band, expected_band, **TOLERANCE)


def test_wavedec2_is_pywts():
    rng = np.random.default_rng(31)
    for shape in SHAPES:
        x = rng.normal(100, 40, shape)
        for level in _levels(shape):
            expected = pywt.wavedec2(x, "db8", mode="periodization", level=level)
            _assert_same_coefficients(wavelets.wavedec2(x, "db8", level=level), expected)
    x = rng.normal(100, 40, (300, 200))
    _assert_same_coefficients(wavelets.wavedec2(x),  # level None: the most pywt allows
                              pywt.wavedec2(x, "db8", mode="periodization"))


def test_waverec2_is_pywts_and_inverts_wavedec2():
    rng = np.random.default_rng(32)
    for shape in SHAPES:
        x = rng.normal(100, 40, shape)
        for level in _levels(shape):
            coeffs = pywt.wavedec2(x, "db8", mode="periodization", level=level)
            expected = pywt.waverec2(coeffs, "db8", mode="periodization")
            got = wavelets.waverec2(coeffs, "db8")
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, **TOLERANCE)
            round_trip = wavelets.waverec2(wavelets.wavedec2(x, "db8", level=level), "db8")
            np.testing.assert_allclose(round_trip[: shape[0], : shape[1]], x, **TOLERANCE)


def test_other_wavelets_and_modified_coefficients():
    rng = np.random.default_rng(33)
    x = rng.normal(0, 10, (301, 517))
    for wavelet in ("haar", "db2", "sym4", "coif3", "db20", "bior2.2", "rbio3.1"):
        expected = pywt.wavedec2(x, wavelet, mode="periodization", level=2)
        _assert_same_coefficients(wavelets.wavedec2(x, wavelet, level=2), expected)
        # Coefficients that are no transform of anything (as a denoiser leaves them).
        noise = [rng.normal(0, 5, expected[0].shape),
                 *(tuple(rng.normal(0, 5, band.shape) for band in level)
                   for level in expected[1:])]
        np.testing.assert_allclose(wavelets.waverec2(noise, wavelet),
                                   pywt.waverec2(noise, wavelet, mode="periodization"),
                                   **TOLERANCE)


def test_kernels_are_slices_of_pywts_operator():
    for block in (8, 16, 32):
        k = wavelets.kernels("db8", block)
        assert k.analysis_a.shape == k.analysis_d.shape == (k.width, block)
        assert k.synthesis_a.shape == k.synthesis_d.shape == (k.c_width, 2 * block)
        # One block of a longer signal: the windows' products are pywt's coefficients.
        x = np.random.default_rng(block).normal(size=8 * block)
        ca, cd = pywt.dwt(x, "db8", mode="periodization")
        b = 2
        window = x[2 * b * block + k.lo: 2 * b * block + k.lo + k.width]
        np.testing.assert_allclose(window @ k.analysis_a, ca[b * block: (b + 1) * block],
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(window @ k.analysis_d, cd[b * block: (b + 1) * block],
                                   rtol=1e-12, atol=1e-12)
        rec = pywt.idwt(ca, cd, "db8", mode="periodization")
        span = slice(b * block + k.c_lo, b * block + k.c_lo + k.c_width)
        np.testing.assert_allclose(ca[span] @ k.synthesis_a + cd[span] @ k.synthesis_d,
                                   rec[2 * b * block: 2 * (b + 1) * block],
                                   rtol=1e-12, atol=1e-12)


def test_what_the_fast_path_leaves_is_pywts():
    rng = np.random.default_rng(34)
    x = rng.normal(100, 40, (200, 300))
    single = x.astype(np.float32)  # pywt keeps float32: it computes this itself
    got = wavelets.wavedec2(single, "db8", level=2)
    expected = pywt.wavedec2(single, "db8", mode="periodization", level=2)
    assert got[0].dtype == np.float32
    np.testing.assert_array_equal(pywt.coeffs_to_array(got)[0],
                                  pywt.coeffs_to_array(expected)[0])
    # A Fortran-ordered view, and a level too high for the shape: pywt's warning too.
    _assert_same_coefficients(wavelets.wavedec2(np.asfortranarray(x), "db8", level=3),
                              pywt.wavedec2(x, "db8", mode="periodization", level=3))
    with pytest.warns(UserWarning, match="Level value of 6 is too high"):
        got = wavelets.wavedec2(x, "db8", level=6)
    with pytest.warns(UserWarning, match="Level value of 6 is too high"):
        expected = pywt.wavedec2(x, "db8", mode="periodization", level=6)
    _assert_same_coefficients(got, expected)
    with pytest.raises(ValueError, match="Level value of -1 is too low"):
        wavelets.wavedec2(x, "db8", level=-1)
    assert wavelets.waverec2([x]) is x


def _jpeg_luminance(rows, cols, seed):
    rgb = noisy_photo(rows=rows, cols=cols, seed=seed, sigma=2.0)
    rgb = np.clip(rgb + np.random.default_rng(seed).normal(0, 3, rgb.shape), 0, 255)
    data = encode(rgb.astype(np.uint8), fmt="JPEG", quality=90)
    return luminance(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_wavelet_denoise_equals_the_pywt_computation(monkeypatch):
    grays = [_jpeg_luminance(1000, 1000, 35), _jpeg_luminance(517, 771, 36)]
    got = [prnu.wavelet_denoise(gray) for gray in grays]
    # The same function with pywt's transforms, as it was written before pipeline.wavelets.
    monkeypatch.setattr(prnu.wavelets, "wavedec2", lambda x, wavelet, level: pywt.wavedec2(
        x, wavelet, level=level, mode="periodization"))
    monkeypatch.setattr(prnu.wavelets, "waverec2", lambda coeffs, wavelet: pywt.waverec2(
        coeffs, wavelet, mode="periodization"))
    for gray, denoised in zip(grays, got, strict=True):
        expected = prnu.wavelet_denoise(gray)
        assert denoised.shape == expected.shape == gray.shape
        np.testing.assert_allclose(denoised, expected, **TOLERANCE)
