"""Validation and decoding of hostile and broken input: clear errors, never crashes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.decode import InvalidImage, decode_image, sniff_format, validate_image
from testkit.images import encode, noisy_photo

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 20_000_000}


def test_type_is_sniffed_by_content_not_name():
    assert sniff_format(encode(noisy_photo(), fmt="JPEG")) == ("jpeg", "image/jpeg")
    assert sniff_format(encode(noisy_photo()))[0] == "png"
    assert sniff_format(encode(noisy_photo(), fmt="WEBP"))[0] == "webp"


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty file"),
    (b"hello, I am a text file\n", "not a supported image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "SVG"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "cannot read heif header"),
    (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42", "brand 'mp42'.*not a still image"),
])
def test_non_images_get_a_clear_reason(data, reason):
    with pytest.raises(InvalidImage, match=reason):
        validate_image(data, **LIMITS)


def test_truncated_png_fails_verify_or_decode():
    data = encode(noisy_photo())
    truncated = data[: len(data) // 2]
    with pytest.raises(InvalidImage):
        validate_image(truncated, **LIMITS)
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(truncated, max_pixels=LIMITS["max_pixels"])


def test_truncated_jpeg_fails_decode_with_reason():
    data = encode(noisy_photo(), fmt="JPEG")
    with pytest.raises(InvalidImage, match="cannot decode jpeg"):
        decode_image(data[: len(data) // 3], max_pixels=LIMITS["max_pixels"])


def test_corrupt_jpeg_body():
    data = bytearray(encode(noisy_photo(), fmt="JPEG"))
    data[200:] = b"\x00" * (len(data) - 200)
    with pytest.raises(InvalidImage):
        decode_image(bytes(data), max_pixels=LIMITS["max_pixels"])


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge image: a decompression bomb's first bytes."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    bomb = _png_header_only(50_000, 50_000)
    with pytest.raises(InvalidImage, match=r"over the limit|decompression bomb"):
        validate_image(bomb, **LIMITS)
    with pytest.raises(InvalidImage, match=r"over the limit|decompression bomb"):
        decode_image(bomb, max_pixels=LIMITS["max_pixels"])


def test_oversized_file_is_refused():
    with pytest.raises(InvalidImage, match="over the limit"):
        validate_image(encode(noisy_photo()), max_bytes=100, max_pixels=10**8)


def test_decode_reports_file_info_and_native_pixels():
    arr = noisy_photo(rows=120, cols=200)
    decoded = decode_image(encode(arr, fmt="JPEG", quality=75), max_pixels=10**8)
    assert decoded.rgb.shape == (120, 200, 3) and decoded.rgb.dtype == np.uint8
    info = decoded.info
    assert (info.width, info.height, info.color_space, info.bit_depth) == (200, 120, "RGB", 8)
    assert info.compression.startswith("JPEG")
    assert abs(info.jpeg_quality - 75) <= 3


def test_sixteen_bit_and_palette_and_alpha_decode_to_rgb():
    grey16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(grey16).save(out, format="PNG")
    d = decode_image(out.getvalue(), max_pixels=10**8)
    assert d.rgb.shape == (64, 64, 3) and d.info.bit_depth == 16
    rgba = np.dstack([noisy_photo(rows=64, cols=64), np.full((64, 64), 128, np.uint8)])
    assert decode_image(encode(rgba), max_pixels=10**8).info.color_space == "RGBA"
    pal = Image.fromarray(noisy_photo(rows=64, cols=64)).convert("P")
    out = io.BytesIO()
    pal.save(out, format="GIF")
    assert decode_image(out.getvalue(), max_pixels=10**8).rgb.shape == (64, 64, 3)


# --- what prepare keeps of one decode (pipeline.decode.decode_views) -------------------------


def _views_cases():
    rgb = noisy_photo(rows=300, cols=410, seed=3)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    deep = (noisy_photo(rows=260, cols=300, seed=4)[:, :, 0].astype(np.uint16) * 257)
    gif = io.BytesIO()
    Image.fromarray(rgb).convert("P").save(gif, format="GIF")
    png16 = io.BytesIO()
    Image.fromarray(deep).save(png16, format="PNG")
    return {"jpeg": encode(rgb, fmt="JPEG"), "rgba png": encode(rgba), "gif": gif.getvalue(),
            "16-bit png": png16.getvalue()}


@pytest.mark.parametrize("kind", list(_views_cases()))
def test_decode_views_keeps_the_same_crop_and_thumbnail_as_a_full_decode(kind):
    from pipeline.decode import decode_views, make_thumbnail
    from pipeline.imaging import center_crop

    data = _views_cases()[kind]
    full = decode_image(data, max_pixels=10**8)
    for side in (128, 1024):
        views = decode_views(data, max_pixels=10**8, side=side)
        assert np.array_equal(views.crop, center_crop(full.rgb, max_side=side)), side
        assert views.info == full.info
    assert views.thumbnail == make_thumbnail(full.rgb)


def test_decode_views_refuses_a_bomb_on_its_header():
    from pipeline.decode import decode_views

    with pytest.raises(InvalidImage, match=r"over the limit|decompression bomb"):
        decode_views(_png_header_only(50_000, 50_000), max_pixels=LIMITS["max_pixels"],
                     side=1024)


def test_pixel_intermediates_round_trip_losslessly_and_read_old_npy_caches():
    from pipeline.decode import pixels_from_bytes, pixels_to_bytes

    rgb = noisy_photo(rows=70, cols=90, seed=8)
    png = pixels_to_bytes(rgb)
    assert png.startswith(b"\x89PNG") and np.array_equal(pixels_from_bytes(png), rgb)
    npy = io.BytesIO()
    np.save(npy, rgb, allow_pickle=False)
    assert np.array_equal(pixels_from_bytes(npy.getvalue()), rgb)


def test_decode_crop_is_the_views_crop_without_a_thumbnail():
    from pipeline.decode import decode_crop, decode_views

    for rows, cols in ((1300, 900), (300, 200)):
        data = encode(noisy_photo(rows=rows, cols=cols, seed=5), fmt="JPEG")
        views = decode_views(data, max_pixels=10**8, side=1024)
        assert np.array_equal(decode_crop(data, max_pixels=10**8, side=1024), views.crop)


def test_max_image_pixels_is_the_only_pixel_limit():
    """Above Pillow's own guard (2 x 89.5 MP = 179 MP): SKYGATE_MAX_IMAGE_PIXELS decides,
    both ways (the header is read, nothing is decoded)."""
    big = _png_header_only(14_000, 13_000)  # 182 MP
    assert validate_image(big, max_bytes=10**6, max_pixels=200_000_000)[2:] == (14_000, 13_000)
    with pytest.raises(InvalidImage, match="over the limit of 100,000,000"):
        validate_image(big, max_bytes=10**6, max_pixels=100_000_000)
    assert Image.MAX_IMAGE_PIXELS == 100_000_000  # methods that open images see the same


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_pixels_that_are_not_numbers_are_not_a_picture(bad):
    pixels = np.random.default_rng(3).random((64, 64), dtype=np.float32) * 200
    pixels[10:20, 5:9] = bad
    buf = io.BytesIO()
    Image.fromarray(pixels, "F").save(buf, "TIFF")
    with pytest.raises(InvalidImage, match="not finite numbers"):
        decode_image(buf.getvalue(), max_pixels=10**8)
    # The same image with numbers everywhere decodes.
    pixels[10:20, 5:9] = 0
    buf = io.BytesIO()
    Image.fromarray(pixels, "F").save(buf, "TIFF")
    assert decode_image(buf.getvalue(), max_pixels=10**8).rgb.shape == (64, 64, 3)
