"""Combine the methods' votes into one verdict: AI, real, or uncertain.

The combination is a stacking model fitted by scripts/train_model.py: P(AI) =
sigmoid(intercept + Σ weight_m · logit(p_m)) over the methods that voted, where the weights
come from ``detection_methods`` (written there by a migration from the same fit) and the
intercept and the verdict thresholds from ``pipeline/assets/ensemble.json``. The thresholds
were chosen on held-out sources so that few real photos are called AI; between them the
verdict is "uncertain". Declared provenance (C2PA, IPTC DigitalSourceType, generator chunks)
dominates whatever the pixels say.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from schemas.records import VerdictWord
from schemas.results import MethodResult

ASSETS = Path(__file__).parent / "assets"
_CLIP = 0.02  # no single pixel method may claim more than 98 %
DECLARED_AT = 0.95  # an exif probability at least this, with declared=True, decides


@dataclass(frozen=True)
class EnsembleModel:
    """The fitted parts of the ensemble that are not per-method weights."""

    intercept: float = 0.0
    ai_at: float = 0.70  # final P(AI) at or above: AI
    real_at: float = 0.30  # at or below: real; in between: uncertain (stored as NULL)
    algorithm_version: str = "skygate-1.0"


@lru_cache
def load_ensemble(path: str | None = None) -> EnsembleModel:
    """The shipped ensemble parameters (defaults when the file is absent)."""
    file = Path(path) if path else ASSETS / "ensemble.json"
    if not file.is_file():
        return EnsembleModel()
    data = json.loads(file.read_text())
    return EnsembleModel(intercept=float(data["intercept"]), ai_at=float(data["ai_at"]),
                         real_at=float(data["real_at"]),
                         algorithm_version=str(data["algorithm_version"]))


ALGORITHM_VERSION = load_ensemble().algorithm_version


def logit(p: float) -> float:
    p = min(max(p, _CLIP), 1 - _CLIP)
    return math.log(p / (1 - p))


@dataclass
class Verdict:
    is_ai_generated: bool | None
    ai_probability: float
    confidence: float  # probability of the stated leaning, rounded for DECIMAL(5,4)
    contributing_factors: list[dict] = field(default_factory=list)
    summary: str = ""
    algorithm_version: str = ALGORITHM_VERSION


def _declared(r: MethodResult) -> bool:
    return (r.method == "exif" and not r.abstained and bool(r.details.get("declared"))
            and r.ai_probability >= DECLARED_AT)


def aggregate(results: list[MethodResult], weights: dict[str, float],
              model: EnsembleModel | None = None) -> Verdict:
    """Stacked log-odds of the methods that voted; declared provenance dominates.

    A method that abstains, failed, or has weight 0 contributes nothing (its findings stay as
    evidence in the factors). With no voter at all the answer is 0.5, "uncertain": absence of
    evidence is never evidence of a real photo.
    """
    model = model or load_ensemble()
    factors = []
    total = 0.0
    voters = []
    declared = None
    for r in sorted(results, key=lambda r: r.method):
        w = float(weights.get(r.method, 0.0))
        if _declared(r):
            declared = r
        if r.abstained or w <= 0:
            reason = r.error or r.details.get("abstain_reason") or (
                "weight 0: evidence only" if w <= 0 else "no evidence")
            factor = {"factor": r.method, "weight": w, "contribution": 0.0,
                      "status": r.status, "note": reason}
            if not r.abstained:
                factor["ai_probability"] = round(r.ai_probability, 4)
            factors.append(factor)
            continue
        contribution = w * logit(r.ai_probability)
        total += contribution
        voters.append(r.method)
        factors.append({"factor": r.method, "weight": w, "contribution": round(contribution, 4),
                        "status": r.status, "ai_probability": round(r.ai_probability, 4)})
    if declared is not None:
        p = declared.ai_probability
        summary = "declared AI provenance: " + "; ".join(declared.details.get("evidence", []))
    elif voters:
        z = model.intercept + total
        p = 1.0 / (1.0 + math.exp(-z))
        summary = ""
    else:
        p = 0.5
        summary = "no method found evidence either way"
    if p >= model.ai_at:
        verdict = True
    elif p <= model.real_at:
        verdict = False
    else:
        verdict = None
    if not summary:
        word = VerdictWord.of(verdict).phrase
        summary = f"{word} (P(AI)={p:.2f}) from {', '.join(voters)}"
    confidence = round(max(p, 1 - p), 4)
    return Verdict(is_ai_generated=verdict, ai_probability=round(p, 4), confidence=confidence,
                   contributing_factors=factors, summary=summary,
                   algorithm_version=model.algorithm_version)
