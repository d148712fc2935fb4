"""Why a verdict: what a person reads wherever one is shown (the API result, ``skygate
results``, the scan records and the HTML report), built from the stored document.

:func:`explain` gives one plain dict: P(AI), the verdict word, the methods that voted with
their contribution (weight × log-odds), those that did not with their reason, the declared
provenance (C2PA claim generator, signer, validity, assertions; IPTC DigitalSourceType;
generator chunks; camera), the model and the algorithm version, and which map the heatmap
is. :func:`explanation_lines` is the same as short lines of text.
"""

from __future__ import annotations

from typing import Any

from pipeline.document import waiting_in
from schemas.documents import DetectionMetadata
from schemas.records import VerdictWord

#: A method with weight 0 votes in no verdict: why, in words.
EVIDENCE_ONLY = "evidence only: weight 0 in the fitted vote"
#: The exif method's weight is 0: it decides only through declared provenance.
PROVENANCE_ONLY = "decides only when the file declares AI provenance (none here)"


def _extra(model, name: str, default=None):
    """A field of a document part that may be declared or carried as an extra."""
    value = getattr(model, name, None)
    if value is None and getattr(model, "model_extra", None):
        value = model.model_extra.get(name)
    return default if value is None else value


def _factor(f) -> dict:
    data = f.model_dump() if hasattr(f, "model_dump") else dict(f)
    return {k: data.get(k) for k in ("factor", "weight", "contribution", "ai_probability",
                                     "status", "note")}


def _votes(factors: list) -> tuple[list[dict], list[dict]]:
    voted, not_voting = [], []
    for f in map(_factor, factors):
        p = f.get("ai_probability")
        if f.get("note") is None and (f.get("weight") or 0) > 0:
            voted.append({"method": f["factor"], "weight": f["weight"],
                          "contribution": f["contribution"], "ai_probability": p})
            continue
        reason = str(f.get("note") or "no evidence")
        if reason.startswith("weight 0"):
            reason = PROVENANCE_ONLY if f["factor"] == "exif" else EVIDENCE_ONLY
        entry = {"method": f["factor"], "reason": reason}
        if p is not None:
            entry["ai_probability"] = p
        not_voting.append(entry)
    return voted, not_voting


def provenance(doc: DetectionMetadata | None) -> dict:
    """What the file declares about its origin, as stored by the exif method."""
    if doc is None:
        return {}
    e = doc.exif_data
    c2pa = _extra(e, "c2pa") or None
    out: dict[str, Any] = {
        "c2pa": None,
        "digital_source_types": list(_extra(e, "digital_source_types", [])),
        "generator_chunks": list(_extra(e, "generator_chunks", [])),
        "camera": " ".join(t for t in (e.camera_make, e.camera_model) if t) or None,
        "software": e.software,
        "declared_evidence": list(_extra(e, "evidence", [])),
    }
    if c2pa:
        out["c2pa"] = {k: c2pa.get(k) for k in (
            "readable", "claim_generator", "signer", "signed_at", "validation_state",
            "validation_errors", "assertions", "actions", "digital_source_types", "error")
            if c2pa.get(k) not in (None, [], "")}
    return out


def explain(doc: DetectionMetadata | None, *, is_ai_generated: bool | None,
            ai_probability: float | None = None, algorithm_version: str | None = None) -> dict:
    """The explanation of one stored verdict (``doc`` may be missing: then what SQL holds)."""
    agg = doc.aggregated_results if doc is not None else None
    if ai_probability is None and agg is not None:
        ai_probability = _extra(agg, "ai_probability")
    voted, not_voting = _votes(agg.contributing_factors if agg is not None else [])
    models = doc.model_results if doc is not None else []
    summary = str(_extra(agg, "summary", "")) if agg is not None else ""
    return {
        "verdict": VerdictWord.of(is_ai_generated).value,
        "ai_probability": None if ai_probability is None else round(float(ai_probability), 4),
        "decided_by": "declared provenance" if summary.startswith("declared") else
                      ", ".join(v["method"] for v in voted) or "nothing (no method voted)",
        "voted": voted,
        "not_voting": not_voting,
        "provenance": provenance(doc),
        "model": ({"name": models[0].model_name, "version": models[0].model_version}
                  if models else None),
        "algorithm_version": algorithm_version or (_extra(agg, "algorithm_version")
                                                   if agg is not None else None),
        # A heatmap left for its first request will be the forensic methods' map.
        "heatmap": (_extra(doc.visual_anomalies, "heatmap_source")
                    or ("forensic" if waiting_in(doc) else None)) if doc is not None else None,
    }


def _pct(p) -> str:
    return "—" if p is None else f"{float(p):.2f}"


def explanation_lines(x: dict) -> list[str]:
    """The explanation as short lines of text (``skygate results``)."""
    word = VerdictWord(x["verdict"])
    lines = [f"verdict: {word.upper()}  P(AI) {_pct(x['ai_probability'])}  "
             f"decided by: {x['decided_by']}"]
    for v in x["voted"]:
        lines.append(f"  voted: {v['method']}  P(AI) {_pct(v['ai_probability'])}  weight "
                     f"{v['weight']}  contribution {v['contribution']:+.2f} log-odds")
    for n in x["not_voting"]:
        p = f"  (P(AI) {_pct(n['ai_probability'])})" if "ai_probability" in n else ""
        lines.append(f"  not voting: {n['method']}: {n['reason']}{p}")
    prov = x.get("provenance") or {}
    c2pa = prov.get("c2pa")
    if c2pa:
        state = c2pa.get("validation_state") or "unreadable"
        actions = f"; actions {', '.join(c2pa['actions'])}" if c2pa.get("actions") else ""
        lines.append(f"  C2PA: {c2pa.get('claim_generator') or 'unknown generator'}; signed by "
                     f"{c2pa.get('signer') or 'unknown'}; {state}{actions}")
    for key, label in (("digital_source_types", "IPTC DigitalSourceType"),
                       ("generator_chunks", "generator chunks")):
        if prov.get(key):
            lines.append(f"  {label}: {', '.join(prov[key])}")
    if prov.get("camera"):
        lines.append(f"  camera: {prov['camera']}")
    if not (c2pa or prov.get("digital_source_types") or prov.get("generator_chunks")):
        lines.append("  provenance: none declared")
    if x.get("model"):
        lines.append(f"  model: {x['model']['name']} {x['model']['version']}")
    lines.append(f"  algorithm: {x.get('algorithm_version') or '—'}")
    return lines
