"""Frozen CLIP ViT-B/16 features: the input view and the embedding the probe reads.

The encoder (``pipeline/assets/clip_vitb16_cls_b3_b5_b7_b9_b10.int8rr.onnx``, built by
scripts/build_clip_encoder.py) is the CLIP image tower cut after block 10 of 12, with the CLS
token of blocks 3, 5, 7, 9 and 10 as outputs: intermediate blocks keep more of the low-level
(generation-trace) information than the final, projected embedding, which is tuned to
semantics, and a linear probe on them generalises across generators (UnivFD, CVPR 2023;
RINE, ECCV 2024). Which blocks: pipeline/assets/MODEL_CARD.md.

The encoder is dynamically quantised: activation scales are computed over the whole batch,
so an image's features depend on what shares its batch. The product runs one image per run,
and training extracts every view alone for the same reason. Its weights are 7-bit
(``reduce_range``), so no integer kernel onnxruntime picks can saturate; every process checks
the file against its shipped float reference once (:mod:`pipeline.known_answer`).
"""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import known_answer

# Deferred imports: onnxruntime loads when the first session is built, not on import.

CLIP_SIDE = 224
# CLIP's own normalisation constants (openai/CLIP, preprocess).
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)

_RGB_DIMS = 3       # (rows, cols, channels)
_RGB_CHANNELS = 3

_lock = threading.Lock()


class ModelFileError(RuntimeError):
    """A model file is missing, unreadable or not the file the configuration names."""


def clip_input(rgb: np.ndarray, *, side: int = CLIP_SIDE) -> np.ndarray:
    """CLIP's view of an image: short side resized to ``side``, centre crop, normalised.

    Parameters
    ----------
    rgb : (M, N, 3) uint8 ndarray

    Returns
    -------
    (3, side, side) float32 ndarray
    """
    if rgb.ndim != _RGB_DIMS or rgb.shape[2] != _RGB_CHANNELS:
        raise ValueError(f"expected (M, N, 3) RGB, got shape {rgb.shape}")
    rows, cols = rgb.shape[:2]
    scale = side / min(rows, cols)
    size = (max(side, round(cols * scale)), max(side, round(rows * scale)))  # (width, height)
    img = Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    img = img.crop((left, top, left + side, top + side))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - CLIP_MEAN) / CLIP_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, computed once per process for a given size and modification time."""
    stat = Path(path).stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def encoder_session(path: str, sha256: str | None = None, threads: int = 1):
    """One onnxruntime session per process and file, checked once against its SHA-256 and,
    when the file ships a reference (``<file>.kat.npz``), against its known answers.

    A file that fails raises :class:`ModelFileError` naming why (the verdict is never a
    silently wrong probability). A failed known-answer check is a property of the file on
    this CPU, so it is remembered for the process; a missing or unloadable file is not, so a
    file put in place later is picked up.
    """
    session, error = _checked_session(path, sha256, threads)
    if error is not None:
        raise ModelFileError(error)  # a new exception each time: no traceback piles up
    return session


def known_answer_result(path: str, sha256: str | None = None, threads: int = 1):
    """The known-answer outcome of a loaded file (None when it ships no reference)."""
    encoder_session(path, sha256, threads)
    return _known_answers.get((path, sha256, threads))


_known_answers: dict[tuple, object] = {}


@lru_cache(maxsize=4)
def _checked_session(path: str, sha256: str | None, threads: int):
    """(session, None) or (None, why it failed its known-answer check). Load errors raise
    (and lru_cache keeps no exception)."""
    session = _load_session(path, sha256, threads)
    reference = known_answer.reference_path(Path(path))
    if not reference.is_file():
        return session, None
    try:
        result = known_answer.check(session, reference)
    except Exception as exc:  # noqa: BLE001 - a broken reference file is named, not crashed on
        return None, (f"model file {Path(path).name}: known-answer check could not run: "
                      f"{type(exc).__name__}: {exc}")
    _known_answers[path, sha256, threads] = result
    if not result.ok:
        return None, (f"model file {Path(path).name} fails its known-answer check on this CPU: "
                      f"{result.summary()}; its integer kernels compute wrong values here "
                      "(pipeline/assets/MODEL_CARD.md, Numerics)")
    return session, None


def _load_session(path: str, sha256: str | None, threads: int):
    import onnxruntime as ort

    file = Path(path)
    if not file.is_file():
        raise ModelFileError(f"model file not found: {file}")
    if sha256 and sha256_of(file) != sha256:
        raise ModelFileError(f"model file {file} does not match its SHA-256 {sha256[:12]}… "
                             "(truncated or replaced): rebuild it with "
                             "scripts/build_clip_encoder.py")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # processes give parallelism; one thread each
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        with _lock:
            return ort.InferenceSession(str(file), sess_options=options,
                                        providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelFileError(f"model file {file} cannot be loaded: {exc}") from exc


def token_features(hidden: np.ndarray) -> np.ndarray:
    """Probe features of one block's output: the L2-normalised CLS token.

    Parameters
    ----------
    hidden : (B, T, D) or (B, D) float ndarray
        The residual stream after a transformer block (T = 1 + patches), or its CLS token
        alone (the shipped encoder outputs only what the probe reads).

    Returns
    -------
    (B, D) float32 ndarray
    """
    cls = (hidden[:, 0, :] if hidden.ndim == 3 else hidden).astype(np.float32)  # noqa: PLR2004
    return cls / np.maximum(np.linalg.norm(cls, axis=1, keepdims=True), 1e-6)


def output_names(spec: str | None, session) -> list[str]:
    """The encoder outputs a probe reads: ``spec`` is one name or several, comma-separated
    (their features are concatenated in that order); none means the session's first."""
    if not spec:
        return [session.get_outputs()[0].name]
    return [name.strip() for name in spec.split(",") if name.strip()]


def embed(session, views: np.ndarray, *, outputs: list[str] | None = None
          ) -> dict[str, np.ndarray]:
    """Run the encoder on a batch of :func:`clip_input` views: ``{output name: (B, D)}`` for
    ``outputs`` (default: every output of the session)."""
    wanted = outputs or [o.name for o in session.get_outputs()]
    outs = session.run(wanted, {session.get_inputs()[0].name: views.astype(np.float32)})
    return {name: token_features(np.asarray(h)) for name, h in zip(wanted, outs, strict=True)}


def probe_features(session, views: np.ndarray, output: str | None) -> np.ndarray:
    """The probe's input: the features of the outputs ``output`` names (one, or several
    comma-separated; default the first), side by side, ``(B, sum of D)``."""
    feats = embed(session, views, outputs=output_names(output, session))
    return np.concatenate(list(feats.values()), axis=1)
