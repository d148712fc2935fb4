"""The model method: an ONNX model run with onnxruntime, chosen by system_configuration.

Three kinds of model plug in without code changes:
- a **probe over CLIP features** (the default): ``encoder_path`` names an image encoder
  (:mod:`pipeline.clip`) whose output ``encoder_output`` (or several, comma-separated, their
  features side by side) feeds the model at ``model_path``,
  a head with input ``(batch, D)``; its details carry ``attribution``, the occlusion map of
  :mod:`pipeline.attribution` (``attribution_grid`` cells per side, 0 for none);
- rank 2, ``(batch, F)`` without an encoder: a classifier over the format-neutral forensic
  features (:data:`pipeline.features.MODEL_FEATURES`), the earlier default;
- rank 4, ``(batch, 3, H, W)``: an image classifier; it gets the neutralised view resized to
  ``input_size``, RGB scaled to [0, 1].
Each must output P(AI) as its first output, shape ``(batch, 1)`` or ``(batch, 2)``
(then column 1 is taken). ``model_sha256`` / ``encoder_sha256``, when given, are checked once
per process, so a truncated or replaced file is named instead of silently scored.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.attribution import DEFAULT_GRID, occlusion_map
from pipeline.calibration import ASSETS
from pipeline.clip import (
    ModelFileError,
    clip_input,
    encoder_session,
    known_answer_result,
    probe_features,
    sha256_of,
)
from pipeline.features import MODEL_FEATURES, compute_features
from pipeline.imaging import MIN_SIDE
from pipeline.methods.base import (
    CONFIG,
    NEUTRAL_FEATURES,
    NEUTRAL_PIXELS,
    SETTINGS,
    Method,
    confidence_of,
    group_features,
)
from schemas.documents import ModelResult
from schemas.results import UNCERTAIN_BAND, MethodResult, verdict_from_probability

BUILTIN_PREFIX = "builtin:"
FLAT_STD = 1.0  # grey levels: below this the image has no content to judge
FEATURE_RANK, IMAGE_RANK = 2, 4  # (batch, F) and (batch, 3, H, W) model inputs


def resolve_model_path(model_path: str) -> Path:
    if model_path.startswith(BUILTIN_PREFIX):
        return ASSETS / model_path[len(BUILTIN_PREFIX):]
    return Path(model_path).expanduser()


def _file(parameters: dict, key: str) -> tuple[Path, str | None]:
    """The file a configuration names under ``key`` and its recorded SHA-256, if any."""
    kind = "encoder_sha256" if key == "encoder_path" else "model_sha256"
    return resolve_model_path(parameters[key]), parameters.get(kind)


def _session(parameters: dict, key: str):
    path, sha256 = _file(parameters, key)
    return path, encoder_session(str(path), sha256)


def load_model(parameters: dict) -> dict[str, Path]:
    """Load (and hash-check) every file a configuration names; raise ModelFileError naming one.

    ``skygate doctor`` calls this, so it fails for the same reason the method would.
    """
    if not parameters.get("model_path"):
        raise ModelFileError("the active model configuration has no model_path")
    files = {"model": _session(parameters, "model_path")[0]}
    if parameters.get("encoder_path"):
        files["encoder"] = _session(parameters, "encoder_path")[0]
    return files


def known_answers(parameters: dict) -> dict:
    """``{"model"/"encoder": KnownAnswer}`` for each configured file that ships a reference
    (``<file>.kat.npz``, pipeline/known_answer.py), checked on this CPU once per process.

    Raises :class:`ModelFileError` when a file fails its check (or cannot be loaded)."""
    out = {}
    for role, key in (("model", "model_path"), ("encoder", "encoder_path")):
        if not parameters.get(key):
            continue
        path, sha256 = _file(parameters, key)
        result = known_answer_result(str(path), sha256)
        if result is not None:
            out[role] = result
    return out


def warm_up(parameters: dict | None) -> None:
    """Load the configuration's sessions now (hash-checked, cached per process)."""
    if parameters:
        load_model(parameters)


def model_identity(path: Path) -> tuple[str, str]:
    """(name, version): the file's stem and the first 12 hex digits of its SHA-256."""
    return path.stem, sha256_of(path)[:12]


def _abstain(started: float, reason: str) -> MethodResult:
    return MethodResult(method="model", processing_time=time.perf_counter() - started,
                        details={"abstain_reason": reason})


def detect_model(neutral: np.ndarray, parameters: dict, *,
                 shared: dict | None = None, heatmap: bool = False) -> MethodResult:
    """Run the configured model on one image's neutral view.

    Parameters
    ----------
    neutral : (M, N, 3) uint8 ndarray
        The neutralised view (:func:`pipeline.imaging.neutralise`).
    parameters : dict
        The active ``system_configuration`` model parameters: ``model_path``, optional
        ``encoder_path``/``encoder_output`` (a feature probe), ``input_size``, ``threshold``
        (decision point, default 0.5) and optional ``uncertainty_band``.
    shared : dict, optional
        The canvas's ``neutral_features`` (computed once in prepare): the forensic variant
        reads its features there instead of computing them again.
    heatmap : bool
        Also draw the probe's occlusion map (``details["attribution"]``, ``attribution_grid``
        cells per side): about ``grid²`` more encoder runs, so only where it is shown.
    """
    started = time.perf_counter()
    path, session = _session(parameters, "model_path")
    if min(neutral.shape[:2]) < MIN_SIDE:
        return _abstain(started, f"image smaller than {MIN_SIDE} px")
    if _flat(neutral):
        return _abstain(started, "flat image: no content to judge")
    model_input = session.get_inputs()[0]
    importance: dict = {}
    details: dict = {}
    probe = None
    if parameters.get("encoder_path"):
        encoder_path, encoder = _session(parameters, "encoder_path")
        output = parameters.get("encoder_output") or encoder.get_outputs()[0].name
        view = clip_input(neutral)
        probe = partial(_probe_probability, encoder, output, session)
        x = probe_features(encoder, view[None], output)
        details["encoder"] = {"name": encoder_path.stem, "output": output}
    elif len(model_input.shape) == FEATURE_RANK:
        features = {}
        if shared is not None:
            features = {**group_features(shared, "prnu"), **group_features(shared, "texture")}
        if any(n not in features for n in MODEL_FEATURES):  # not computed by prepare
            features, _ = compute_features(neutral, groups=("prnu", "texture"))
        x = np.array([[features[n] for n in MODEL_FEATURES]], dtype=np.float32)
        importance = {n: round(float(features[n]), 5) for n in MODEL_FEATURES}
    elif len(model_input.shape) == IMAGE_RANK:
        size = parameters.get("input_size") or {"width": 224, "height": 224}
        img = Image.fromarray(neutral).resize((int(size["width"]), int(size["height"])),
                                              Image.Resampling.BILINEAR)
        x = (np.asarray(img, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]
    else:
        raise ValueError(f"unsupported model input shape {model_input.shape}")
    p = _probability(session.run(None, {model_input.name: x.astype(np.float32)})[0])
    grid = int(parameters.get("attribution_grid", DEFAULT_GRID) or 0) if heatmap else 0
    if probe is not None and grid > 0:
        # The picture of what the voting model saw (pipeline/attribution.py).
        details["attribution"] = occlusion_map(view, probe, grid=grid, base=p)
    # Shift so that `threshold` maps to 0.5, keeping the result a probability-like score.
    threshold = float(parameters.get("threshold") or 0.5)
    shifted = 0.5 + (p - threshold) / (2 * max(threshold, 1 - threshold))
    shifted = float(np.clip(shifted, 0.0, 1.0))
    verdict, confidence = verdict_from_probability(
        shifted, band=float(parameters.get("uncertainty_band", UNCERTAIN_BAND)))
    name, version = model_identity(path)
    return MethodResult(
        method="model", ai_probability=shifted, is_ai_generated=verdict,
        confidence=round(confidence, 4), processing_time=time.perf_counter() - started,
        details={"model_name": name, "model_version": version, "raw_probability": round(p, 5),
                 "threshold": threshold, "feature_importance": importance, **details},
    )


#: The sample :func:`_flat` tries first: every FLAT_SAMPLE_STEP-th row and column.
FLAT_SAMPLE_STEP = 8


def _flat(pixels: np.ndarray) -> bool:
    """``float(pixels.std()) < FLAT_STD``, the same answer for a fraction of the work.

    The squared deviations of a sample about its own mean never exceed their sum about the
    whole image's mean, so a sample whose sum already reaches ``FLAT_STD² × pixels.size``
    (with a margin far above rounding) proves the whole is not flat: 1/64 of the pixels
    instead of a float copy of all of them (``np.std`` of a 1 MP view: 9 ms). Anything else
    asks ``np.std`` itself."""
    sample = pixels[::FLAT_SAMPLE_STEP, ::FLAT_SAMPLE_STEP].astype(np.float64)
    sample -= sample.mean()
    sample *= sample  # not np.vdot: BLAS would wake its thread pool for this
    if float(sample.sum()) >= FLAT_STD * FLAT_STD * pixels.size * (1 + 1e-6):
        return False
    return float(pixels.std()) < FLAT_STD


def _probe_probability(encoder, output: str, head, views: np.ndarray) -> float:
    """P(AI) of the head over the encoder's features of one view, ``(1, 3, S, S)``."""
    features = probe_features(encoder, views, output).astype(np.float32)
    return _probability(head.run(None, {head.get_inputs()[0].name: features})[0])


def _probability(output) -> float:
    """P(AI) of a one-image head output: (1, 2) → column 1; (1, 1) → the only column."""
    out = np.asarray(output, dtype=np.float64)
    p = float(out[0, 1] if out.shape[1:] == (2,) else out.reshape(-1)[0])
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"model output {p} is not a probability")
    return p


def _run(*, neutral_pixels: np.ndarray, config: dict, neutral_features: dict,
         settings) -> MethodResult:
    # The map costs ~8x the model: drawn where it is shown (SKYGATE_MODEL_HEATMAP).
    return detect_model(neutral_pixels, config, shared=neutral_features,
                        heatmap=settings.model_heatmap)


def _section(r: MethodResult | None) -> dict:
    if r is None or not r.details.get("model_name"):
        return {}
    return {"model_results": [ModelResult(
        model_name=r.details["model_name"], model_version=r.details["model_version"],
        is_ai_generated=r.is_ai_generated, confidence=confidence_of(r),
        processing_time=round(r.processing_time, 4),
        feature_importance=r.details.get("feature_importance", {}),
        # The voting model's map (pipeline/attribution.py): the report draws it.
        attribution=r.details.get("attribution"),
    )]}


# The forensic variant reads the prnu and texture features those methods read: computed once.
METHOD = Method(name="model",
                needs=frozenset({NEUTRAL_PIXELS, CONFIG, NEUTRAL_FEATURES, SETTINGS}),
                run=_run, document_section=_section, config_type="model",
                feature_groups=("prnu", "texture"),
                # Only the forensic variant reads them; the CLIP probe reads pixels.
                votes_with_features=lambda config: not (config or {}).get("encoder_path"),
                warm_up=warm_up)
