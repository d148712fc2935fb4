"""Validate untrusted image bytes and decode them once.

Bad input is normal traffic: every failure raises :class:`InvalidImage` with a reason a
person can act on, and nothing here decodes pixels before the pixel count is checked.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFile

from pipeline import isobmff
from pipeline.deep_pixels import DEEP_MODES, NonFinitePixels, to_gray8

try:  # HEIC/HEIF through pillow-heif (libheif + libde265, the [heif] extra) as Pillow's "HEIF".
    import pillow_heif
except ImportError:
    pillow_heif = None
else:
    pillow_heif.register_heif_opener()
try:  # AVIF: Pillow >= 11.2 reads it natively (libavif); pillow-heif >= 1.0 dropped AVIF.
    from PIL import AvifImagePlugin

    _AVIF_SUPPORTED = bool(AvifImagePlugin.SUPPORTED)
except ImportError:  # pragma: no cover - Pillow < 11.2
    _AVIF_SUPPORTED = False

# (magic prefix, offset, file_type, mime type). Sniffed from content, never from the name.
_SIGNATURES = [
    (b"\xff\xd8\xff", 0, "jpeg", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png", "image/png"),
    (b"GIF87a", 0, "gif", "image/gif"),
    (b"GIF89a", 0, "gif", "image/gif"),
    (b"WEBP", 8, "webp", "image/webp"),
    (b"II*\x00", 0, "tiff", "image/tiff"),
    (b"MM\x00*", 0, "tiff", "image/tiff"),
    (b"BM", 0, "bmp", "image/bmp"),
]
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "tiff": "TIFF",
                "bmp": "BMP", "heif": "HEIF", "avif": "AVIF"}
SUPPORTED_TYPES = "JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC/HEIF, AVIF"

# ISO-BMFF (HEIF family) brands in the leading ``ftyp`` box. The structural brands (mif1,
# msf1, ...) say "HEIF container" but not which codec: the compatible brands decide.
_HEVC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"mif1", b"msf1", b"mif2", b"miaf"}


class InvalidImage(ValueError):
    """The bytes are not an image we accept; the message says why, for a person to read.

    Messages of the libraries underneath can carry a Python object's repr (``<_io.BytesIO
    object at 0x7f...>``, a file object with its path): those are replaced by "the data".
    """

    def __init__(self, message: str = ""):
        super().__init__(_scrub(str(message)))


_REPR = re.compile(r"<[^<>]*(?: at 0x[0-9a-fA-F]+|name=)[^<>]*>")


def _scrub(message: str) -> str:
    return _REPR.sub("the data", message)


@dataclass
class FileInfo:
    """What the seed's ``file_info`` section records, plus the detected format."""

    file_type: str
    mime_type: str
    width: int
    height: int
    color_space: str
    bit_depth: int
    compression: str
    jpeg_quality: int | None = None
    extra: dict = field(default_factory=dict)


_PERCENT = 100


def _sniff_isobmff(brands: list[bytes]) -> tuple[str, str]:
    major = brands[0]
    if major in _AVIF_BRANDS or (major not in _HEVC_BRANDS and _AVIF_BRANDS & set(brands)):
        if not _AVIF_SUPPORTED:
            raise InvalidImage("AVIF needs Pillow >= 11.2 built with libavif, which this "
                               "installation lacks: convert to JPEG or PNG")
        return "avif", "image/avif"
    if pillow_heif is None and (_HEVC_BRANDS | _HEIF_BRANDS) & set(brands):  # no [heif]
        raise InvalidImage("HEIC/HEIF needs pillow-heif: pip install 'skygate[heif]'")
    if _HEVC_BRANDS & set(brands):
        return "heif", "image/heic"
    if _HEIF_BRANDS & set(brands):
        return "heif", "image/heif"
    name = major.decode("latin-1").strip() or "?"
    raise InvalidImage(f"ISO-BMFF file of brand {name!r} (video or another container) is not "
                       f"a still image: only HEIC/HEIF and AVIF are read")


def sniff_format(data: bytes) -> tuple[str, str]:
    """Return ``(file_type, mime_type)`` from the leading bytes, or raise InvalidImage."""
    if not data:
        raise InvalidImage("empty file")
    brands = isobmff.ftyp_brands(data)
    if brands is not None:
        return _sniff_isobmff(brands)
    for magic, offset, file_type, mime in _SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            if file_type == "webp" and data[:4] != b"RIFF":
                continue
            return file_type, mime
    head = data[:64]
    if head.lstrip().startswith((b"<svg", b"<?xml")):
        raise InvalidImage("SVG/XML is not a raster image")
    raise InvalidImage(f"not a supported image ({SUPPORTED_TYPES}) by content")


def pil_formats(data: bytes) -> list[str] | None:
    """The Pillow format to open ``data`` with, or None (let Pillow guess) if not sniffable."""
    try:
        return [_PIL_FORMATS[sniff_format(data)[0]]]
    except InvalidImage:
        return None


def set_pixel_limit(max_pixels: int) -> None:
    """Make SKYGATE_MAX_IMAGE_PIXELS the only pixel limit: Pillow's own decompression-bomb
    guard (an error past 2 x Image.MAX_IMAGE_PIXELS, 179 MP by default) is set from it, so
    it never refuses first, in this module or in any method that opens an image itself."""
    Image.MAX_IMAGE_PIXELS = max_pixels


def _open(data: bytes, file_type: str, max_pixels: int) -> Image.Image:
    set_pixel_limit(max_pixels)
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; Pillow's warning would just be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            source = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
            img = Image.open(source, formats=[_PIL_FORMATS[file_type]])
    except Image.DecompressionBombError as exc:
        raise InvalidImage(f"decompression bomb refused: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for bad headers
        raise InvalidImage(f"cannot read {file_type} header: {exc}") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidImage(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (decompression-bomb guard)"
        )
    if file_type in ("heif", "avif") and isinstance(data, bytes | bytearray):
        needed = isobmff.data_end(data)
        if needed and needed > len(data):
            raise InvalidImage(f"truncated {file_type}: its image data runs to byte "
                               f"{needed:,} but the file has only {len(data):,} bytes")
    return img


def validate_image_file(path, *, max_bytes: int, max_pixels: int
                        ) -> tuple[str, str, int, int]:
    """``validate_image`` for a file on disk, without reading it into memory: the type from
    the first bytes, the header and pixel limit, then Pillow's verify, which streams.
    HEIF/AVIF are read whole (libheif needs the buffer), one file at a time at most."""
    size = os.path.getsize(path)
    if size > max_bytes:
        raise InvalidImage(f"file is {size:,} bytes, over the limit of {max_bytes:,}")
    with open(path, "rb") as fh:
        head = fh.read(4096)
        file_type, mime = sniff_format(head)
        if file_type in ("heif", "avif"):
            fh.seek(0)
            return validate_image(fh.read(), max_bytes=max_bytes, max_pixels=max_pixels)
        fh.seek(0)
        img = _open(fh, file_type, max_pixels)
        try:
            img.verify()
        except Exception as exc:
            raise InvalidImage(f"corrupt {file_type}: {exc}") from exc
        return file_type, mime, img.size[0], img.size[1]


def validate_image(data: bytes, *, max_bytes: int, max_pixels: int) -> tuple[str, str, int, int]:
    """Cheap checks for ingest: size, type by content, header, pixel limit, Pillow verify.

    Returns ``(file_type, mime_type, width, height)``.
    """
    if len(data) > max_bytes:
        raise InvalidImage(f"file is {len(data):,} bytes, over the limit of {max_bytes:,}")
    file_type, mime = sniff_format(data)
    img = _open(data, file_type, max_pixels)
    try:
        img.verify()
    except Exception as exc:
        raise InvalidImage(f"corrupt {file_type}: {exc}") from exc
    return file_type, mime, img.size[0], img.size[1]


_COLOR_SPACES = {
    "1": "Bilevel", "L": "Grayscale", "LA": "Grayscale+Alpha", "P": "Palette", "PA": "Palette",
    "RGB": "RGB", "RGBA": "RGBA", "CMYK": "CMYK", "YCbCr": "YCbCr", "I;16": "Grayscale",
    "I;16B": "Grayscale", "I": "Grayscale", "F": "Grayscale", "LAB": "Lab", "HSV": "HSV",
}


def estimate_jpeg_quality(img: Image.Image) -> int | None:
    """Estimate the IJG quality factor from the luminance quantisation table."""
    tables = getattr(img, "quantization", None)
    if not tables or 0 not in tables:
        return None
    # IJG standard luminance table (Annex K); quality scales it by a known formula.
    base = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13,
                     16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56,
                     68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103,
                     121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)
    table = np.asarray(tables[0], dtype=np.float64)
    # Pillow gives the table in zig-zag order; the sum is order-independent.
    scale = table.sum() * 100.0 / base.sum()
    quality = (200.0 - scale) / 2.0 if scale <= _PERCENT else 5000.0 / scale
    return int(np.clip(round(quality), 1, _PERCENT))


_COMPRESSION = {
    "jpeg": lambda img, mime: ("JPEG (progressive)" if img.info.get("progressive")
                               else "JPEG (baseline)"),
    "png": lambda img, mime: "PNG (deflate, lossless)",
    "webp": lambda img, mime: "WebP (lossless)" if img.info.get("lossless") else "WebP (lossy)",
    "gif": lambda img, mime: "GIF (LZW, palette)",
    "tiff": lambda img, mime: f"TIFF ({img.info.get('compression', 'raw')})",
    "heif": lambda img, mime: "HEIF (HEVC)" if mime == "image/heic" else "HEIF",
    "avif": lambda img, mime: "AVIF (AV1)",
}


def _compression(img: Image.Image, file_type: str, mime: str = "") -> str:
    describe = _COMPRESSION.get(file_type)
    return describe(img, mime) if describe else file_type.upper()


@dataclass
class DecodedImage:
    """The original's pixels at native resolution, as the methods need them."""

    rgb: np.ndarray  # (M, N, 3) uint8, row-major, no orientation or resampling applied
    info: FileInfo


@dataclass
class ImageViews:
    """What prepare keeps of one decode: the file's facts, a bounded native crop, a thumbnail.

    Memory is bounded by design: the full image lives once, as Pillow's RGB image (4 bytes a
    pixel; a second copy only while a non-RGB mode is converted), and only ``crop`` (at most
    ``side`` × ``side`` × 3 bytes) and the thumbnail leave this function.
    """

    info: FileInfo
    crop: np.ndarray  # the central <= side x side window at native resolution, (M, N, 3) uint8
    thumbnail: bytes  # JPEG, <= THUMBNAIL_SIDE on its long side


THUMBNAIL_SIDE = 256
# A box reduction by the whole factor first, then Lanczos (Pillow's reducing_gap; 1.0 is its
# fastest and least exact setting): fine for a thumbnail people look at, 3.4 ms instead of
# 11 ms (3 x the decode) from a 1 MP image. Methods never read the thumbnail.
THUMBNAIL_REDUCING_GAP = 1.0


def _file_info(img: Image.Image, data: bytes, file_type: str, mime: str) -> FileInfo:
    mode = img.mode
    bits = {"1": 1, "I;16": 16, "I;16B": 16, "I": 32, "F": 32}.get(mode, 8)
    if file_type == "png" and img.info.get("bits"):
        bits = int(img.info["bits"])
    if file_type in ("heif", "avif"):
        # pillow-heif reports the coded depth; Pillow's AVIF reader does not: read pixi.
        bits = int(img.info.get("bit_depth") or isobmff.bit_depth(data) or bits)
    return FileInfo(
        file_type=file_type, mime_type=mime, width=img.size[0], height=img.size[1],
        color_space=_COLOR_SPACES.get(mode, mode), bit_depth=bits,
        compression=_compression(img, file_type, mime),
        jpeg_quality=estimate_jpeg_quality(img) if file_type == "jpeg" else None,
        extra={"frames": getattr(img, "n_frames", 1), "mode": mode},
    )


def _load(img: Image.Image, file_type: str) -> None:
    prev = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not grey pixels
        if file_type != "heif":  # pillow-heif opens at the primary image, not always index 0
            img.seek(0)
        img.load()
    except Exception as exc:
        raise InvalidImage(f"cannot decode {file_type}: {exc}") from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = prev


def _open_rgb(data: bytes, max_pixels: int) -> tuple[Image.Image, FileInfo]:
    """The first frame decoded, as one Pillow RGB image, and the file's facts.

    Alpha is dropped (forensic signals live in the colour channels); 16-bit images are
    scaled to 8 bits; EXIF orientation is not applied so pixel positions match the file.
    """
    file_type, mime = sniff_format(data)
    img = _open(data, file_type, max_pixels)  # the pixel limit is checked before any decode
    info = _file_info(img, data, file_type, mime)
    _load(img, file_type)
    if img.mode in DEEP_MODES:
        try:
            return Image.fromarray(to_gray8(img), "L").convert("RGB"), info
        except NonFinitePixels as exc:
            raise InvalidImage(str(exc)) from None
    return (img if img.mode == "RGB" else img.convert("RGB")), info


def decode_image(data: bytes, *, max_pixels: int) -> DecodedImage:
    """Fully decode the first frame to 8-bit RGB; truncated or corrupt data raises.

    Alpha is dropped (forensic signals live in the colour channels); 16-bit images are
    scaled to 8 bits; EXIF orientation is not applied so pixel positions match the file.
    HEIC/HEIF is the primary image, 10/12-bit converted to 8 by libheif, with the
    container's own rotation/mirror (irot/imir) applied as libheif always does; AVIF is
    decoded by libavif to 8-bit RGB. ``bit_depth`` reports the coded depth either way.
    The detection service uses :func:`decode_views` instead (bounded memory).
    """
    rgb, info = _open_rgb(data, max_pixels)
    return DecodedImage(rgb=np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)), info=info)


def decode_views(data: bytes, *, max_pixels: int, side: int) -> ImageViews:
    """Decode once and keep only what the methods and people need (:class:`ImageViews`).

    ``crop`` equals ``pipeline.imaging.center_crop(decode_image(data).rgb, max_side=side)``
    pixel for pixel; the thumbnail equals ``make_thumbnail`` of the full pixels.
    """
    rgb, info = _open_rgb(data, max_pixels)
    crop = _central(rgb, side)
    rgb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS,
                  reducing_gap=THUMBNAIL_REDUCING_GAP)  # in place
    return ImageViews(info=info, crop=crop, thumbnail=_jpeg(rgb))


def decode_crop(data: bytes, *, max_pixels: int, side: int) -> np.ndarray:
    """``decode_views(...).crop`` without the thumbnail (a method's process decoding a small
    original again needs only the pixels: the thumbnail costs 3× the decode at 1 MP)."""
    return _central(_open_rgb(data, max_pixels)[0], side)


def _central(rgb: Image.Image, side: int) -> np.ndarray:
    cols, rows = rgb.size
    r0, c0 = max(0, (rows - side) // 2), max(0, (cols - side) // 2)
    box = (c0, r0, min(cols, c0 + side), min(rows, r0 + side))  # the whole: no cropped copy
    return np.ascontiguousarray(
        np.asarray(rgb if box == (0, 0, cols, rows) else rgb.crop(box), dtype=np.uint8))


def _jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()


def make_thumbnail(rgb: np.ndarray, *, size: int = THUMBNAIL_SIDE) -> bytes:
    """A JPEG thumbnail no larger than ``size`` on its long side (for people, not methods)."""
    img = Image.fromarray(rgb)
    img.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=THUMBNAIL_REDUCING_GAP)
    return _jpeg(img)


#: zlib level of the temporary pixel intermediates: 1 is several times faster than the
#: default 6 for a few per cent more bytes, and they live only as long as the canvas.
INTERMEDIATE_PNG_LEVEL = 1


def pixels_to_bytes(rgb: np.ndarray) -> bytes:
    """Serialise pixels for the blob store, losslessly (PNG; an (M, N, 3) uint8 image)."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(
        out, format="PNG", compress_level=INTERMEDIATE_PNG_LEVEL)
    return out.getvalue()


def pixels_from_bytes(data: bytes) -> np.ndarray:
    """The pixels of :func:`pixels_to_bytes` (or of an ``.npy`` cache written before it)."""
    if data[:6] == b"\x93NUMPY":
        return np.load(io.BytesIO(data), allow_pickle=False)
    with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
