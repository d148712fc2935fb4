"""HEIC/HEIF (pillow-heif) and AVIF (Pillow's libavif reader): real bytes made in the test,
the same decode, EXIF and scan paths as every other format, and the iPhone corpus files."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from pipeline.decode import InvalidImage, decode_image, sniff_format, validate_image
from pipeline.methods.exif import analyze_metadata
from testkit.images import encode, noisy_photo
from tests.conftest import ROOT, corpus_dir

LIMITS = {"max_bytes": 50_000_000, "max_pixels": 50_000_000}
MAKE, MODEL = "TestCam", "Model X"
AI_XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
          b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
          b'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
          b'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/'
          b'trainedAlgorithmicMedia"/></rdf:RDF></x:xmpmeta>')


def encode_isobmff(array: np.ndarray, *, fmt: str, camera: bool = False,
                   xmp: bytes | None = None) -> bytes:
    """``fmt`` is Pillow's format name: "HEIF" (pillow-heif, HEVC) or "AVIF" (libavif)."""
    kwargs: dict = {"quality": 90}
    if camera:
        exif = Image.Exif()
        exif[271], exif[272], exif[306] = MAKE, MODEL, "2024:05:06 07:08:09"
        kwargs["exif"] = exif
    if xmp:
        kwargs["xmp"] = xmp
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt, **kwargs)
    return out.getvalue()


FORMATS = [("HEIF", "heif", "image/heic", "HEIF (HEVC)"), ("AVIF", "avif", "image/avif",
                                                         "AVIF (AV1)")]


@pytest.mark.parametrize(("fmt", "file_type", "mime", "compression"), FORMATS)
def test_decodes_to_native_size_rgb_with_file_info(fmt, file_type, mime, compression):
    arr = noisy_photo(rows=120, cols=200, seed=5)
    data = encode_isobmff(arr, fmt=fmt)
    assert sniff_format(data) == (file_type, mime)
    assert validate_image(data, **LIMITS) == (file_type, mime, 200, 120)
    decoded = decode_image(data, max_pixels=LIMITS["max_pixels"])
    assert decoded.rgb.shape == (120, 200, 3) and decoded.rgb.dtype == np.uint8
    # Lossy, but the same picture: a small mean error against the source pixels.
    assert np.abs(decoded.rgb.astype(float) - arr).mean() < 12
    info = decoded.info
    assert (info.file_type, info.mime_type, info.width, info.height) == (file_type, mime, 200, 120)
    assert (info.color_space, info.bit_depth, info.compression) == ("RGB", 8, compression)
    assert info.jpeg_quality is None and info.extra["frames"] == 1


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_alpha_is_dropped(fmt):
    rgba = np.dstack([noisy_photo(rows=64, cols=96), np.full((64, 96), 200, np.uint8)])
    decoded = decode_image(encode_isobmff(rgba, fmt=fmt), max_pixels=10**8)
    assert decoded.info.color_space == "RGBA" and decoded.rgb.shape == (64, 96, 3)


@pytest.mark.parametrize("twelve", [False, True])
def test_high_bit_depth_heic_decodes_to_8_bit_and_reports_its_depth(twelve, monkeypatch):
    monkeypatch.setattr(pillow_heif.options, "SAVE_HDR_TO_12_BIT", twelve)
    rng = np.random.default_rng(7)
    base = noisy_photo(rows=64, cols=96, seed=7).astype(np.uint16)
    sixteen = (base << 8) | rng.integers(0, 256, base.shape, dtype=np.uint16)
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(96, 64), data=sixteen.tobytes())
    out = io.BytesIO()
    heif.save(out, quality=95)
    decoded = decode_image(out.getvalue(), max_pixels=10**8)
    assert decoded.info.bit_depth == (12 if twelve else 10)
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (64, 96, 3)
    assert np.abs(decoded.rgb.astype(float) - base).mean() < 12


def test_mif1_brand_is_told_apart_by_compatible_brands():
    def ftyp(major, *compatible):
        body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
        return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body

    assert sniff_format(ftyp(b"mif1", b"mif1", b"avif", b"miaf")) == ("avif", "image/avif")
    assert sniff_format(ftyp(b"mif1", b"mif1", b"heic")) == ("heif", "image/heic")
    assert sniff_format(ftyp(b"mif1", b"mif1", b"miaf")) == ("heif", "image/heif")
    assert sniff_format(ftyp(b"avis", b"avis", b"msf1")) == ("avif", "image/avif")
    for brand in (b"heix", b"hevc", b"heim", b"heis", b"msf1"):
        assert sniff_format(ftyp(brand))[0] == "heif", brand
    with pytest.raises(InvalidImage, match=r"brand 'isom'.*only HEIC/HEIF and AVIF"):
        sniff_format(ftyp(b"isom", b"isom", b"mp41"))


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_truncated_bytes_raise_invalid_image(fmt):
    data = encode_isobmff(noisy_photo(rows=96, cols=128, seed=3), fmt=fmt)
    for cut in (12, 40, len(data) // 10, len(data) // 2, len(data) - 200, len(data) - 1):
        with pytest.raises(InvalidImage):
            decode_image(data[:cut], max_pixels=10**8)
        if cut < len(data) - 1:
            with pytest.raises(InvalidImage):
                validate_image(data[:cut], **LIMITS)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_corrupt_body_never_crashes(fmt):
    data = bytearray(encode_isobmff(noisy_photo(rows=96, cols=128, seed=4), fmt=fmt))
    data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
    try:
        decoded = decode_image(bytes(data), max_pixels=10**8)
    except InvalidImage:
        return
    assert decoded.rgb.shape == (96, 128, 3)  # garbage pixels are allowed, a crash is not


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_pixel_limit_is_checked_before_decoding(fmt):
    data = encode_isobmff(noisy_photo(rows=120, cols=200), fmt=fmt)
    with pytest.raises(InvalidImage, match="over the limit"):
        validate_image(data, max_bytes=10**8, max_pixels=200 * 120 - 1)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_exif_method_reads_camera_tags(fmt):
    result = analyze_metadata(encode_isobmff(noisy_photo(seed=6), fmt=fmt, camera=True))
    details = result.details
    assert (details["camera_make"], details["camera_model"]) == (MAKE, MODEL)
    assert details["creation_date"].startswith("2024-05-06T07:08:09")
    assert result.is_ai_generated is False and details["exists"] is True


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_exif_method_reads_xmp_digital_source_type(fmt):
    result = analyze_metadata(encode_isobmff(noisy_photo(seed=8), fmt=fmt, xmp=AI_XMP))
    assert result.details["digital_source_types"] == ["trainedAlgorithmicMedia"]
    assert result.is_ai_generated is True and result.confidence >= 0.95


@pytest.mark.slow
def test_scan_judges_a_heic_and_an_avif(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "photo.heic").write_bytes(
        encode_isobmff(noisy_photo(rows=320, cols=480, seed=9), fmt="HEIF", camera=True))
    (folder / "photo.avif").write_bytes(
        encode_isobmff(noisy_photo(rows=320, cols=480, seed=10), fmt="AVIF", camera=True))
    out = tmp_path / "results.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    env["SKYGATE_DATA_DIR"] = str(tmp_path / "var")
    result = subprocess.run([sys.executable, "-m", "skygate.cli", "scan", str(folder),
                             "--out", str(out)], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    records = {os.path.basename(r["path"]): r for r in map(json.loads,
                                                             out.read_text().splitlines())}
    assert set(records) == {"photo.heic", "photo.avif"}
    for name, record in records.items():
        assert record["status"] == "done" and record["error"] is None, (name, record)
        assert record["methods"]["exif"]["is_ai_generated"] is False, name


def test_without_the_heif_extra_a_heic_fails_with_the_install_line_and_the_rest_is_judged(
        tmp_path):
    """pillow-heif is the [heif] extra: where it is not installed (an importable stand-in
    that raises ImportError, first on every process's path) a HEIC upload fails with the
    command that adds it; AVIF (Pillow's own reader) and JPEG are judged as ever."""
    absent = tmp_path / "absent" / "pillow_heif"
    absent.mkdir(parents=True)
    (absent / "__init__.py").write_text("raise ImportError('the [heif] extra is not installed')")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "photo.heic").write_bytes(
        encode_isobmff(noisy_photo(rows=320, cols=480, seed=11), fmt="HEIF", camera=True))
    (folder / "photo.avif").write_bytes(
        encode_isobmff(noisy_photo(rows=320, cols=480, seed=12), fmt="AVIF", camera=True))
    (folder / "photo.jpg").write_bytes(encode(noisy_photo(rows=320, cols=480, seed=13),
                                              fmt="JPEG"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    env |= {"SKYGATE_DATA_DIR": str(tmp_path / "var"),
            "PYTHONPATH": os.pathsep.join([str(absent.parent), str(ROOT)])}
    result = subprocess.run([sys.executable, "-m", "skygate.cli", "scan", str(folder),
                             "--json"], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 1, result.stderr
    records = {os.path.basename(r["path"]): r for r in map(json.loads,
                                                             result.stdout.splitlines())}
    assert records["photo.heic"]["status"] == "failed"
    assert "pip install 'skygate[heif]'" in records["photo.heic"]["error"]
    assert records["photo.avif"]["status"] == records["photo.jpg"]["status"] == "done"


@pytest.mark.corpus
def test_corpus_heic_photos_decode_and_show_their_camera():
    real = corpus_dir("real")
    files = sorted(real.glob("*.heic"))
    if not files:
        pytest.skip(f"no *.heic files in {real}")
    manifest = {}
    with open(real.parent / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            manifest[row["file"].split("/", 1)[-1]] = row
    for path in files:
        data = path.read_bytes()
        decoded = decode_image(data, max_pixels=50_000_000)
        info = decoded.info
        assert info.file_type == "heif" and info.compression == "HEIF (HEVC)", path.name
        assert decoded.rgb.shape == (info.height, info.width, 3), path.name
        assert decoded.rgb.std() > 5, path.name  # a picture, not a flat fill
        details = analyze_metadata(data).details
        assert details["camera_make"], path.name
        row = manifest.get(path.name)
        if row:
            assert row["generator_or_camera"].lower().startswith(
                details["camera_make"].lower()), (path.name, details["camera_make"])
            assert row["notes"].startswith(f"{info.width}x{info.height} "), path.name
