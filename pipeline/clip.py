"""Frozen CLIP ViT-B/16 features: the input view and the embedding the probe reads.

The encoder (``pipeline/assets/clip_vitb16_block10.int8.onnx``, built by
scripts/build_clip_encoder.py) is the CLIP image tower cut after block 10 of 12: intermediate
blocks keep more of the low-level (generation-trace) information than the final, projected
embedding, which is tuned to semantics, and a linear probe on them generalises across
generators (UnivFD, CVPR 2023; Cozzolino et al., CVPR-W 2024). Which block: chosen by
leave-one-source-out in scripts/train_model.py (pipeline/assets/MODEL_CARD.md).

The encoder is dynamically quantised: activation scales are computed over the whole batch,
so an image's features depend on what shares its batch. The product runs one image per run,
and training extracts every view alone for the same reason.
"""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

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


@lru_cache(maxsize=4)
def encoder_session(path: str, sha256: str | None = None, threads: int = 1):
    """One onnxruntime session per process and file, checked against its SHA-256 once."""
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
    hidden : (B, T, D) float ndarray
        The residual stream after a transformer block (T = 1 + patches).

    Returns
    -------
    (B, D) float32 ndarray
    """
    cls = hidden[:, 0, :].astype(np.float32)
    return cls / np.maximum(np.linalg.norm(cls, axis=1, keepdims=True), 1e-6)


def embed(session, views: np.ndarray, *, output: str | None = None) -> dict[str, np.ndarray]:
    """Run the encoder on a batch of :func:`clip_input` views: ``{output name: (B, D)}``."""
    names = [o.name for o in session.get_outputs()]
    wanted = [output] if output else names
    outs = session.run(wanted, {session.get_inputs()[0].name: views.astype(np.float32)})
    return {name: token_features(np.asarray(h)) for name, h in zip(wanted, outs, strict=True)}
