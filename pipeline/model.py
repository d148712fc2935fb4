"""The model method: an ONNX model run with onnxruntime, chosen by system_configuration.

Two kinds of model plug in without code changes, told apart by their input's rank:
- rank 2, ``(batch, F)``: a classifier over the format-neutral forensic features
  (:data:`pipeline.features.MODEL_FEATURES`); the shipped default is one of these;
- rank 4, ``(batch, 3, H, W)``: an image classifier; it gets the neutralised view resized to
  ``input_size``, RGB scaled to [0, 1].
Either must output P(AI) as its first output, shape ``(batch, 1)`` or ``(batch, 2)``
(then column 1 is taken).
"""

from __future__ import annotations

import hashlib
import threading
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.features import ASSETS, MODEL_FEATURES, MIN_SIDE, compute_features
from schemas.results import MethodResult, verdict_from_probability

BUILTIN_PREFIX = "builtin:"


def resolve_model_path(model_path: str) -> Path:
    if model_path.startswith(BUILTIN_PREFIX):
        return ASSETS / model_path[len(BUILTIN_PREFIX):]
    return Path(model_path).expanduser()


_lock = threading.Lock()


@lru_cache(maxsize=4)
def load_session(path: str):
    """An onnxruntime session, cached per process (loading costs more than running)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one image per worker process; processes give parallelism
    with _lock:
        return ort.InferenceSession(path, sess_options=options,
                                    providers=["CPUExecutionProvider"])


def model_identity(path: Path) -> tuple[str, str]:
    """(name, version): the file's stem and the first 12 hex digits of its SHA-256."""
    return path.stem, hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def detect_model(neutral: np.ndarray, parameters: dict) -> MethodResult:
    """Run the configured model on one image's neutral view.

    Parameters
    ----------
    neutral : (M, N, 3) uint8 ndarray
        The neutralised view (:func:`pipeline.features.neutralise`).
    parameters : dict
        The active ``system_configuration`` model parameters: ``model_path``, ``input_size``,
        ``threshold`` (decision point, default 0.5) and optional ``uncertainty_band``.
    """
    started = time.perf_counter()
    path = resolve_model_path(parameters["model_path"])
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if min(neutral.shape[:2]) < MIN_SIDE:
        return MethodResult(method="model", processing_time=time.perf_counter() - started,
                            details={"abstain_reason": f"image smaller than {MIN_SIDE} px"})
    session = load_session(str(path))
    model_input = session.get_inputs()[0]
    importance: dict = {}
    if len(model_input.shape) == 2:
        features, _ = compute_features(neutral, groups=("prnu", "texture"))
        x = np.array([[features[n] for n in MODEL_FEATURES]], dtype=np.float32)
        importance = {n: round(float(features[n]), 5) for n in MODEL_FEATURES}
    elif len(model_input.shape) == 4:
        size = parameters.get("input_size") or {"width": 224, "height": 224}
        img = Image.fromarray(neutral).resize((int(size["width"]), int(size["height"])),
                                              Image.Resampling.BILINEAR)
        x = (np.asarray(img, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]
    else:
        raise ValueError(f"unsupported model input shape {model_input.shape}")
    out = np.asarray(session.run(None, {model_input.name: x})[0], dtype=np.float64)
    p = float(out[0, 1] if out.ndim == 2 and out.shape[1] == 2 else out.reshape(-1)[0])
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"model output {p} is not a probability")
    # Shift so that `threshold` maps to 0.5, keeping the result a probability-like score.
    threshold = float(parameters.get("threshold") or 0.5)
    shifted = 0.5 + (p - threshold) / (2 * max(threshold, 1 - threshold))
    shifted = float(np.clip(shifted, 0.0, 1.0))
    verdict, confidence = verdict_from_probability(
        shifted, band=float(parameters.get("uncertainty_band", 0.15)))
    name, version = model_identity(path)
    return MethodResult(
        method="model", ai_probability=shifted, is_ai_generated=verdict,
        confidence=round(confidence, 4), processing_time=time.perf_counter() - started,
        details={"model_name": name, "model_version": version, "raw_probability": round(p, 5),
                 "threshold": threshold, "feature_importance": importance},
    )
