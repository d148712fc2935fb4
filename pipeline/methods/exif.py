"""Metadata and provenance: EXIF, XMP DigitalSourceType, generator text chunks, C2PA.

A declared generator (an IPTC digital source type, a generator's PNG chunk, a C2PA
assertion) is near-certain evidence: people rarely forge a claim *against* themselves.
Camera tags are weak evidence for a real photo (anyone can write them), and no metadata at
all is no evidence: the method abstains.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from datetime import UTC, datetime

from PIL import ExifTags, Image

from pipeline.decode import pil_formats  # importing decode also registers the HEIF opener
from pipeline.methods.base import ORIGINAL_BYTES, Method, confidence_of
from schemas.documents import AnalysisResult, ExifData, GpsCoordinates
from schemas.results import EVEN_ODDS, MethodResult, verdict_from_probability
from schemas.text import clean_text, cut_at_nul

# Deferred imports: c2pa's native library loads only for a file that carries a manifest.

AI_SOURCE_TYPES = {
    "trainedalgorithmicmedia": "trainedAlgorithmicMedia",
    "compositewithtrainedalgorithmicmedia": "compositeWithTrainedAlgorithmicMedia",
}
# IPTC: made by an algorithm *without* trained models (a rendered gradient, a chart). Neither
# generative AI nor a camera photo: the method abstains and says so.
SYNTHETIC_SOURCE_TYPES = {"algorithmicmedia", "compositesynthetic"}
CAPTURE_SOURCE_TYPES = {"digitalcapture", "negativefilm", "positivefilm", "print",
                        "minorhumanedits", "computationalcapture"}
# PNG text chunks that image generators write (A1111 "parameters", ComfyUI "prompt"/"workflow",
# NovelAI "Comment"/"Software", InvokeAI "invokeai_metadata", Fooocus "fooocus_scheme").
GENERATOR_CHUNKS = ("parameters", "prompt", "workflow", "invokeai_metadata", "sd-metadata",
                    "dream", "fooocus_scheme", "generation_data")
GENERATOR_SOFTWARE = re.compile(
    r"stable.?diffusion|midjourney|dall.?e|firefly|comfyui|automatic1111|novelai|invokeai|"
    r"fooocus|leonardo|imagen|flux|kolors|sdxl|diffusers|runway|ideogram",
    re.IGNORECASE,
)
EDITOR_SOFTWARE = re.compile(
    r"photoshop|lightroom|gimp|affinity|pixelmator|snapseed|picsart|canva|paint\.net|"
    r"capture one|darktable|rawtherapee|luminar",
    re.IGNORECASE,
)

DECLARED_CONFIDENCE = 0.98
DECLARED_CAPTURE_PROBABILITY = 0.10
CAMERA_TAGS_PROBABILITY = 0.30  # weak: camera tags can be forged or copied
FIRST_DIGITAL_YEAR = 1990  # an earlier capture date predates digital cameras
MAX_LATITUDE, MAX_LONGITUDE = 90, 180


def _exif_dict(img: Image.Image) -> dict:
    exif = img.getexif()
    tags: dict = {}
    for tag, value in exif.items():
        tags[ExifTags.TAGS.get(tag, str(tag))] = value
    # Malformed IFDs are common: keep what could be read before the damage.
    with contextlib.suppress(Exception):
        for ifd in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):
            for tag, value in exif.get_ifd(ifd).items():
                name = (ExifTags.GPSTAGS if ifd == ExifTags.IFD.GPSInfo else ExifTags.TAGS).get(
                    tag, str(tag)
                )
                tags[("GPS" + name) if ifd == ExifTags.IFD.GPSInfo and not name.startswith(
                    "GPS") else name] = value
    return tags


# A1111-style generation parameters ("Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"),
# which SD.Next and others write into a JPEG's EXIF UserComment instead of a PNG chunk.
GENERATION_PARAMETERS = re.compile(r"\bSteps:\s*\d+.*\b(Sampler|CFG scale|Seed):", re.DOTALL)
USER_COMMENT_CHUNK = "exif:UserComment"


def _user_comment(value) -> str | None:
    """EXIF UserComment as text: an 8-byte charset header (``UNICODE\\0`` is UTF-16, its byte
    order unstated: the one that decodes to more ASCII wins), then the comment."""
    if not isinstance(value, bytes):
        return _text(value)
    head, body = value[:8], value[8:]
    if head.startswith(b"UNICODE"):
        texts = [body.decode(order, "replace") for order in ("utf-16-be", "utf-16-le")]
        return _text(max(texts, key=lambda t: sum(" " <= c <= "~" for c in t)))
    return _text(body if head.rstrip(b"\x00") in (b"ASCII", b"") else value)


def _text(value) -> str | None:
    """A metadata string as text: EXIF/XMP/PNG strings are C strings, so it ends at the first
    NUL (cameras pad tags with NULs and garbage: GoPro's Make is ``GoPro\\x00\\x00…``), and
    other control characters are dropped."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = clean_text(cut_at_nul(str(value))).strip()
    return text or None


def _parse_exif_date(value) -> datetime | None:
    text = _text(value)
    if not text:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M"):
        try:
            return datetime.strptime(text[:19], fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _gps(tags: dict) -> dict | None:
    def to_degrees(values, ref):
        d, m, s = (float(v) for v in values)
        deg = d + m / 60.0 + s / 3600.0
        return -deg if str(ref).upper() in ("S", "W") else deg

    try:
        lat = to_degrees(tags["GPSLatitude"], tags.get("GPSLatitudeRef", "N"))
        lon = to_degrees(tags["GPSLongitude"], tags.get("GPSLongitudeRef", "E"))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if not (abs(lat) <= MAX_LATITUDE and abs(lon) <= MAX_LONGITUDE):
        return None
    return {"latitude": round(lat, 6), "longitude": round(lon, 6)}


def _xmp_text(img: Image.Image, data: bytes) -> str:
    raw = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp")
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        return raw
    # JPEG APP1 XMP that Pillow did not expose: look for the packet in the first 1 MB.
    start = data.find(b"<x:xmpmeta", 0, 1 << 20)
    if start >= 0:
        end = data.find(b"</x:xmpmeta>", start)
        if end > 0:
            return data[start:end + 12].decode("utf-8", "replace")
    return ""


def _source_types(text: str) -> list[str]:
    found = re.findall(r"digitalsourcetype/([A-Za-z]+)", text, flags=re.IGNORECASE)
    found += re.findall(r"DigitalSourceType[\"'=>\s:]+([A-Za-z]+)", text)
    return sorted({f for f in found if f.lower() != "http"})


def read_c2pa(data: bytes, mime_type: str) -> dict | None:
    """Read a C2PA manifest store with c2pa-python: generator, actions, validation state."""
    if b"c2pa" not in data and b"jumb" not in data:
        return None  # no JUMBF box: skip the native reader entirely
    try:
        import c2pa

        with c2pa.Reader(mime_type, io.BytesIO(data)) as reader:
            store = json.loads(reader.json())
    except Exception as exc:  # noqa: BLE001 - invalid manifests are normal traffic
        return {"present": True, "readable": False, "error": str(exc)[:300]}
    active = store.get("manifests", {}).get(store.get("active_manifest") or "", {})
    text = json.dumps(store)
    statuses = [s.get("code") for s in store.get("validation_status") or [] if s.get("code")]
    return {
        "present": True,
        "readable": True,
        "validation_state": store.get("validation_state")
        or ("Invalid" if statuses else "Valid"),
        "validation_errors": statuses[:10],
        "claim_generator": active.get("claim_generator")
        or ", ".join(i.get("name", "") for i in active.get("claim_generator_info", [])),
        "digital_source_types": _source_types(text),
        "manifests": len(store.get("manifests", {})),
        **_signature_and_assertions(active),
    }


def _signature_and_assertions(manifest: dict) -> dict:
    """Who signed the active manifest and when, its assertion labels and the actions it
    records (a person reads these; validity is ``validation_state``)."""
    sig = manifest.get("signature_info") or {}
    assertions = [a for a in manifest.get("assertions") or [] if isinstance(a, dict)]
    actions = []
    for a in assertions:
        if str(a.get("label", "")).startswith("c2pa.actions"):
            actions += [str(x.get("action")) for x in (a.get("data") or {}).get("actions", [])
                        if isinstance(x, dict) and x.get("action")]
    signer = ", ".join(str(v) for v in (sig.get("common_name"), sig.get("issuer")) if v)
    return {"signer": signer or None, "signed_at": sig.get("time"),
            "assertions": [str(a.get("label")) for a in assertions if a.get("label")][:20],
            "actions": actions[:20]}


def analyze_metadata(data: bytes) -> MethodResult:
    """Read every metadata source and decide whether the file declares its origin.

    Parameters
    ----------
    data : bytes
        The original file, exactly as uploaded.
    """
    started = time.perf_counter()
    # Open with the format sniffed from content: HEIF and AVIF share ftyp brands (mif1).
    img = Image.open(io.BytesIO(data), formats=pil_formats(data))
    tags = _exif_dict(img)

    make, model = _text(tags.get("Make")), _text(tags.get("Model"))
    software = _text(tags.get("Software"))
    created = _parse_exif_date(tags.get("DateTimeOriginal") or tags.get("DateTime"))
    lens = _text(tags.get("LensModel")) or _text(tags.get("LensMake"))
    gps = _gps(tags)

    png_chunks = {k: v for k, v in img.info.items() if isinstance(v, str | bytes)}
    generator_chunks = sorted(k for k in png_chunks if k.lower() in GENERATOR_CHUNKS)
    comment = _user_comment(tags.get("UserComment"))
    if comment and GENERATION_PARAMETERS.search(comment):
        generator_chunks.append(USER_COMMENT_CHUNK)
        png_chunks.setdefault("parameters", comment)  # the prompt excerpt reads it there
    xmp = _xmp_text(img, data)
    source_types = _source_types(xmp)
    c2pa_info = read_c2pa(data, Image.MIME.get(img.format or "", "image/jpeg"))
    if c2pa_info and c2pa_info.get("readable"):
        source_types = sorted(set(source_types) | set(c2pa_info["digital_source_types"]))
    declared_ai = [s for s in source_types if s.lower() in AI_SOURCE_TYPES]
    declared_capture = [s for s in source_types if s.lower() in CAPTURE_SOURCE_TYPES]
    synthetic = [s for s in source_types if s.lower() in SYNTHETIC_SOURCE_TYPES]
    software_texts = [t for t in (software, _text(png_chunks.get("Software")),
                                  (c2pa_info or {}).get("claim_generator")) if t]
    generator_software = [t for t in software_texts if GENERATOR_SOFTWARE.search(t)]
    editor_software = [t for t in software_texts if EDITOR_SOFTWARE.search(t)]

    anomalies = _anomalies(created, editor_software, bool(make or model), generator_chunks,
                           c2pa_info)
    probability, evidence = _decide(declared_ai, generator_chunks, generator_software,
                                    declared_capture, synthetic, make, model)

    exists = bool(tags or xmp or generator_chunks or c2pa_info)
    verdict, confidence = verdict_from_probability(probability)
    details = {
        "exists": exists,
        "declared": bool(declared_ai or generator_chunks or generator_software),
        "camera_make": make,
        "camera_model": model,
        "lens_info": lens,
        "creation_date": created.isoformat() if created else None,
        "software": software,
        "gps_coordinates": gps,
        "digital_source_types": source_types,
        "generator_chunks": generator_chunks,
        "generator_prompt_excerpt": _prompt_excerpt(png_chunks),
        "c2pa": c2pa_info,
        "evidence": evidence,
        "anomalies": anomalies,
        "is_suspicious": bool(probability and probability > EVEN_ODDS) or bool(anomalies),
    }
    return MethodResult(
        method="exif",
        ai_probability=probability,
        is_ai_generated=verdict,
        confidence=round(confidence, 4),
        processing_time=time.perf_counter() - started,
        details=details,
    )


def _anomalies(created: datetime | None, editor_software: list[str], camera_tags: bool,
               generator_chunks: list[str], c2pa_info: dict | None) -> list[str]:
    """What does not add up: impossible dates, editing, contradicting or broken provenance."""
    anomalies = []
    if created and created > datetime.now(UTC):
        anomalies.append("capture date is in the future")
    if created and created.year < FIRST_DIGITAL_YEAR:
        anomalies.append(f"capture date {created.year} predates digital cameras")
    if editor_software:
        anomalies.append(f"edited with {editor_software[0][:60]}")
    if camera_tags and generator_chunks:
        anomalies.append("camera tags together with generator metadata")
    if c2pa_info and c2pa_info.get("present") and not c2pa_info.get("readable"):
        anomalies.append("C2PA manifest present but unreadable")
    elif c2pa_info and c2pa_info.get("validation_state") == "Invalid":
        anomalies.append("C2PA manifest fails validation")
    return anomalies


def _decide(declared_ai: list[str], generator_chunks: list[str], generator_software: list[str],
            declared_capture: list[str], synthetic: list[str], make: str | None,
            model: str | None) -> tuple[float | None, list[str]]:
    """(P(AI) or None, evidence): declared provenance first, camera tags as weak evidence,
    else abstain."""
    evidence: list[str] = []
    probability: float | None = None
    if declared_ai:
        evidence.append(f"declares digital source type {', '.join(declared_ai)}")
    if generator_chunks:
        evidence.append(f"generator metadata chunk(s): {', '.join(generator_chunks)}")
    if generator_software:
        evidence.append(f"generator software: {generator_software[0][:80]}")
    if evidence:
        probability = DECLARED_CONFIDENCE
    elif declared_capture:
        probability = DECLARED_CAPTURE_PROBABILITY
        evidence.append(f"declares {', '.join(declared_capture)}")
    elif synthetic:
        evidence.append(f"declares {', '.join(synthetic)} (computer-made without a trained "
                        "model: neither generative AI nor a photograph)")
    elif make or model:
        probability = CAMERA_TAGS_PROBABILITY
        evidence.append(f"camera tags {make or ''} {model or ''}".strip())
    return probability, evidence


def _prompt_excerpt(chunks: dict) -> str | None:
    for key in ("parameters", "prompt"):
        if key in chunks:
            return _text(chunks[key])[:200] if _text(chunks[key]) else None
    return None


def _section(r: MethodResult | None) -> dict:
    ed = r.details if r else {}
    gps = ed.get("gps_coordinates")
    return {"exif_data": ExifData(
        exists=bool(ed.get("exists")), camera_make=ed.get("camera_make"),
        camera_model=ed.get("camera_model"), lens_info=ed.get("lens_info"),
        creation_date=ed.get("creation_date"), software=ed.get("software"),
        gps_coordinates=GpsCoordinates(**gps) if gps else None,
        analysis_result=AnalysisResult(
            is_suspicious=ed.get("is_suspicious"), confidence=confidence_of(r),
            anomalies=ed.get("anomalies", []),
        ),
        evidence=ed.get("evidence", []), digital_source_types=ed.get("digital_source_types"),
        generator_chunks=ed.get("generator_chunks"), c2pa=ed.get("c2pa"),
    )}


def _run(*, original_bytes: bytes) -> MethodResult:
    return analyze_metadata(original_bytes)


# Camera tags are evidence only; declared provenance decides (see pipeline/assets/
# ensemble.json): not a term of the stacking fit.
METHOD = Method(name="exif", needs=frozenset({ORIGINAL_BYTES}), run=_run,
                document_section=_section, stacked=False)
