"""What every detection method returns, and what aggregate produces."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

#: |p − 0.5| below this is "uncertain": no verdict (a calibration or configuration may
#: override it per method).
UNCERTAIN_BAND = 0.15
#: The decision point: above it a probability says "AI".
EVEN_ODDS = 0.5


class MethodResult(BaseModel):
    """One method's finding for one image.

    ``ai_probability`` is the method's probability that the image is AI-generated, or
    ``None`` when it abstains ("no evidence" is not 0.5). ``is_ai_generated`` is the verdict
    it would give alone (``None`` when unsure), ``confidence`` the probability of that verdict
    (0 when abstaining).
    """

    method: str
    status: Literal["ok", "error", "skipped"] = "ok"
    ai_probability: float | None = None
    is_ai_generated: bool | None = None
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    processing_time: float = 0.0
    details: dict[str, Any] = Field(default_factory=dict)
    # Per-block suspiciousness in [0, 1] (rows of columns) for the heatmap; small (≤ 32×32).
    block_map: list[list[float]] | None = None
    error: str | None = None

    @property
    def abstained(self) -> bool:
        return self.status != "ok" or self.ai_probability is None


def verdict_from_probability(p: float | None, *, band: float = UNCERTAIN_BAND
                             ) -> tuple[bool | None, float]:
    """Map a probability to (verdict, confidence); inside ``0.5 ± band`` the verdict is None."""
    if p is None:
        return None, 0.0
    confidence = max(p, 1.0 - p)
    if abs(p - EVEN_ODDS) < band:
        return None, confidence
    return p > EVEN_ODDS, confidence
