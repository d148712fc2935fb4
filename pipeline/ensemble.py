"""Combine the methods' votes into one verdict: AI, real, or uncertain."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from schemas.results import MethodResult

ALGORITHM_VERSION = "skygate-1.0"
AI_AT = 0.70  # final P(AI) at or above: AI
REAL_AT = 0.30  # at or below: real; in between: uncertain (stored as NULL)
_CLIP = 0.02  # no single pixel method may claim more than 98 %


def _logit(p: float) -> float:
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


def aggregate(results: list[MethodResult], weights: dict[str, float]) -> Verdict:
    """Weighted log-odds of the methods that voted; declared provenance dominates.

    The pixel methods share information (they read the same pixels), so their log-odds are
    averaged with the weights rather than summed: agreement of correlated methods must not
    multiply into false certainty.
    """
    factors = []
    num = 0.0
    den = 0.0
    declared = None
    for r in sorted(results, key=lambda r: r.method):
        w = float(weights.get(r.method, 0.0))
        if r.abstained or w <= 0:
            reason = r.error or r.details.get("abstain_reason") or (
                "inactive" if w <= 0 else "no evidence")
            factors.append({"factor": r.method, "weight": w, "contribution": 0.0,
                            "status": r.status, "note": reason})
            continue
        contribution = w * _logit(r.ai_probability)
        num += contribution
        den += w
        factors.append({"factor": r.method, "weight": w, "contribution": round(contribution, 4),
                        "status": r.status, "ai_probability": round(r.ai_probability, 4)})
        if r.method == "exif" and r.details.get("declared") and r.ai_probability >= 0.95:
            declared = r
    if declared is not None:
        p = declared.ai_probability
        summary = "declared AI provenance: " + "; ".join(declared.details.get("evidence", []))
    elif den > 0:
        p = 1.0 / (1.0 + math.exp(-num / den))
        summary = ""
    else:
        p = 0.5
        summary = "no method found evidence either way"
    if p >= AI_AT:
        verdict = True
    elif p <= REAL_AT:
        verdict = False
    else:
        verdict = None
    if not summary:
        voters = [f["factor"] for f in factors if f["contribution"]]
        word = {True: "AI-generated", False: "real photograph", None: "uncertain"}[verdict]
        summary = f"{word} (P(AI)={p:.2f}) from {', '.join(voters)}"
    confidence = round(max(p, 1 - p), 4)
    return Verdict(is_ai_generated=verdict, ai_probability=round(p, 4), confidence=confidence,
                   contributing_factors=factors, summary=summary)
