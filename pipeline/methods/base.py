"""What a detection method is: a name, the inputs it reads, a pure ``run``, a document section.

A method module (``pipeline/methods/<name>.py``) holds its maths, its ``detect_*`` function
and a ``METHOD = Method(...)``; :mod:`pipeline.methods.registry` lists the modules. The service
reads ``needs`` to decide what to decode and cache once per upload (``prepare``) and what to
load for each method, so ``run`` never touches storage: it gets keyword arguments named after
its needs and returns a :class:`Finding`.

Adding an input kind is a constant here, in :data:`INPUTS`, and a producer in
service/detection.py. Every input lives only as long as the canvas (prepare makes it,
aggregate deletes it): what stays per upload is the original, the thumbnail, the pictures,
the heatmap, the rows and the document.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.calibration import calibrated_probability, calibration_usable, load_calibration
from pipeline.imaging import MIN_SIDE
from schemas.results import EVEN_ODDS, UNCERTAIN_BAND, MethodResult, verdict_from_probability

# --- what a method may read ------------------------------------------------------------------
ORIGINAL_BYTES = "original_bytes"  # the file exactly as uploaded (bytes)
# The decoded image's central window of at most pipeline.imaging.MAX_SIDE squared, at native
# resolution, (M, N, 3) uint8: every native statistic reads only that window, so the full
# image is never cached nor copied per method.
NATIVE_PIXELS = "native_pixels"
NEUTRAL_PIXELS = "neutral_pixels"  # its neutral view (pipeline.imaging.neutralise)
# The calibrated features of the neutral view, computed once per canvas for the groups of
# every active method's ``feature_groups`` (pipeline.features.shared_features): a dict
# {"features": {name: value}, "groups": [computed groups], "errors": {group: reason},
# "abstain": reason or None}. A group no active method votes with is not computed.
NEUTRAL_FEATURES = "neutral_features"
CONFIG = "config"  # parameters (dict) of the active system_configuration of Method.config_type
SETTINGS = "settings"  # schemas.settings.Settings
INPUTS = frozenset({ORIGINAL_BYTES, NATIVE_PIXELS, NEUTRAL_PIXELS, NEUTRAL_FEATURES, CONFIG,
                    SETTINGS})


@dataclass(frozen=True)
class Picture:
    """A picture a method made for a person (the ELA image): stored by the service."""

    data: bytes
    suffix: str = ".png"


@dataclass
class Finding:
    """What ``run`` returns: the result, plus pictures by kind (see ``Method.pictures``)."""

    result: MethodResult
    pictures: dict[str, Picture] = field(default_factory=dict)


def suspicious(r: MethodResult | None) -> bool | None:
    return None if r is None or r.abstained else bool(r.ai_probability > EVEN_ODDS)


def confidence_of(r: MethodResult | None) -> float | None:
    return None if r is None or r.abstained else r.confidence


def generic_section(result: MethodResult | None) -> dict:
    """The document section of a method without its own: ``method_results.<name>``."""
    if result is None:
        return {}
    return {"method_results": {result.method: {
        "status": result.status, "ai_probability": result.ai_probability,
        "is_suspicious": suspicious(result), "confidence": confidence_of(result),
        "details": result.details, "error": result.error,
    }}}


@dataclass(frozen=True)
class Method:
    """One detection method.

    name : the ``detection_methods.method_name`` row and the task ``skygate.detect.<name>``.
    needs : the :data:`INPUTS` ``run`` reads; ``run(**{need: value})`` returns a
        :class:`Finding` (or a bare :class:`MethodResult`) and is pure.
    document_section : ``(result or None) -> dict``, a partial ``detection_metadata``
        document (nested dicts, models, lists) merged with the other methods' sections.
    pictures : picture kind → the ``details`` key the stored picture's blob key is written to.
    config_type : the ``system_configuration`` type read as :data:`CONFIG`; with no active
        configuration of that type the method is skipped.
    in_heatmap : its ``block_map`` feeds the combined heatmap.
    feature_groups : the groups of :data:`NEUTRAL_FEATURES` it reads (``prnu``, ``texture``,
        ``ela``); prepare computes the union once per canvas.
    votes_with_features : ``(config parameters or None) -> bool``: whether, under this
        configuration, the method's vote reads its feature groups (None: always). Groups no
        method votes with are not computed: they cost more than every method's own
        statistics on a small image and would be evidence of nothing.
    warm_up : ``(config parameters or None) -> None``: loads what ``run`` would load on its
        first call (a model file), so a worker pays it when it starts, not on its first
        image; raises what that first call would raise.
    evidence_only : ``(config parameters or None) -> bool``: whether, under this
        configuration, nothing the method computes can decide (it always abstains): its
        statistics and pictures are then computed when a person first asks for them
        (``Settings.evidence``, service/evidence.py). None: it may always decide.
    stacked : its log-odds are a term of the ensemble's stacking fit (scripts/train_model.py
        fits its weight); False for a method that votes otherwise (exif: declared provenance).
    """

    name: str
    needs: frozenset[str]
    run: Callable[..., Finding | MethodResult]
    document_section: Callable[[MethodResult | None], dict] = generic_section
    pictures: Mapping[str, str] = field(default_factory=dict)
    config_type: str | None = None
    in_heatmap: bool = False
    feature_groups: tuple[str, ...] = ()
    votes_with_features: Callable[[dict | None], bool] | None = None
    warm_up: Callable[[dict | None], None] | None = None
    evidence_only: Callable[[dict | None], bool] | None = None
    stacked: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.needs) - INPUTS
        if unknown:
            raise ValueError(f"method {self.name!r} needs unknown inputs {sorted(unknown)}")
        if (NEUTRAL_FEATURES in self.needs) != bool(self.feature_groups):
            raise ValueError(f"method {self.name!r}: needs {NEUTRAL_FEATURES!r} iff it names "
                             "feature_groups")
        if (CONFIG in self.needs) != (self.config_type is not None):
            raise ValueError(f"method {self.name!r}: needs {CONFIG!r} iff it has a config_type")

    def execute(self, inputs: Mapping[str, Any]) -> Finding:
        """``run`` on exactly the inputs it declared, its output as a :class:`Finding`."""
        out = self.run(**{need: inputs[need] for need in self.needs})
        return out if isinstance(out, Finding) else Finding(out)


# --- helpers the calibrated pixel methods share ----------------------------------------------


def vote(method: str, features: dict, calibration: dict | None) -> tuple:
    """(P(AI) or None, verdict, confidence, abstain reason) from the method's calibration."""
    cal = (calibration or load_calibration())["methods"].get(method)
    p, reason = calibrated_probability(features, cal)
    verdict, confidence = verdict_from_probability(p, band=(cal or {}).get("band",
                                                                          UNCERTAIN_BAND))
    return p, verdict, confidence, reason


def scored(method: str, features: dict, names: list[str], calibration: dict | None,
           started: float, details: dict, block_map: np.ndarray) -> MethodResult:
    """Calibrated vote on the neutral view's features, with the method's own details."""
    p, verdict, confidence, reason = vote(method, features, calibration)
    details = {**details, "is_suspicious": bool(verdict)}
    if any(k in features for k in names):  # absent when no calibration reads them
        details["features"] = {k: round(features[k], 5) for k in names if k in features}
    if reason:
        details["abstain_reason"] = reason
    return MethodResult(
        method=method, ai_probability=p, is_ai_generated=verdict,
        confidence=round(confidence, 4), processing_time=time.perf_counter() - started,
        details=details, block_map=np.round(block_map, 3).tolist(),
    )


def group_features(shared: dict, group: str) -> dict[str, float] | None:
    """One group's features from :data:`NEUTRAL_FEATURES`: None when the image is too small
    to judge, ``{}`` when prepare did not compute the group (no calibration votes with it);
    a feature computation that failed in prepare fails the method here, with its reason (as
    it would have failed computing them itself)."""
    if shared.get("abstain"):
        return None
    if group in shared.get("errors", {}):
        raise RuntimeError(f"{group} features failed: {shared['errors'][group]}")
    if group not in shared.get("groups", [group]):  # manifests before "groups": all computed
        return {}
    return shared["features"]


def calibration_votes(method: str) -> Callable[[dict | None], bool]:
    """``Method.votes_with_features`` of a calibrated pixel method: its calibration is usable."""
    return lambda _config: calibration_usable(method)


def uncalibrated(method: str) -> Callable[[dict | None], bool]:
    """``Method.evidence_only`` of a calibrated pixel method: its calibration is not usable,
    so it only ever abstains (a usable one brings its full run back, no code change)."""
    return lambda _config: not calibration_usable(method)


#: ``details.evidence`` of a result whose statistics and pictures were left for later.
ON_REQUEST = "on_request"


def evidence_only(method: Method, config: dict | None) -> bool:
    """Whether nothing ``method`` computes can decide under this configuration (see
    ``Method.evidence_only``)."""
    return method.evidence_only is not None and method.evidence_only(config)


def left_for_later(method: str) -> MethodResult:
    """The result of an evidence-only method whose statistics and pictures are computed when
    a person first asks for them: the same abstention its full run would give (the
    calibration's reason), with ``details.evidence`` saying the rest is on request."""
    reason = vote(method, {}, None)[3] or "evidence only"
    return MethodResult(method=method, details={"abstain_reason": reason,
                                                "evidence": ON_REQUEST})


def abstain(method: str, reason: str, started: float, **details) -> MethodResult:
    return MethodResult(method=method, processing_time=time.perf_counter() - started,
                        details={"abstain_reason": reason, **details})


def too_small_reason() -> str:
    return f"image smaller than {MIN_SIDE} px"


def rounded(d: dict) -> dict:
    """Float values rounded to 5 places, ``block_map`` left out (details are JSON)."""
    return {k: (round(float(v), 5) if isinstance(v, float | np.floating) else v)
            for k, v in d.items() if k != "block_map"}
