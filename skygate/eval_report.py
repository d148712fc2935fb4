"""The report of a ``skygate eval`` run: metrics overall and per group (AUC, accuracy, TPR at
a fixed FPR, calibration), as JSON, as plain text, and as a PNG of the ROC curve and the
reliability diagram. Input: the per-file rows of :func:`skygate.evaluate.run`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipeline import metrics
from schemas.records import JUDGED_STATUSES as JUDGED
from skygate.evaluate import LABELS

# Deferred imports: matplotlib (the [plot] extra) loads only for --plot.

FPR_TARGET = 0.05
BINS = 10


def _share(num: int, den: int) -> float:
    return num / den if den else float("nan")


def _summary(rows: list[dict]) -> dict:
    """Counts and verdict shares of some rows (no ranking metrics)."""
    judged = [r for r in rows if r["status"] in JUDGED]
    decided = [r for r in judged if r["verdict"] in LABELS]
    real = [r for r in judged if r["label"] == "real"]
    probs = [r["ai_probability"] for r in judged if r["ai_probability"] is not None]
    return {
        "files": len(rows),
        "ai_files": sum(r["label"] == "ai" for r in rows),
        "real_files": sum(r["label"] == "real" for r in rows),
        "judged": len(judged),
        "failed": sum(r["status"] == "failed" for r in rows),
        "missing": sum(r["status"] == "missing" for r in rows),
        "called_ai": sum(r["verdict"] == "ai" for r in judged),
        "called_real": sum(r["verdict"] == "real" for r in judged),
        "uncertain": sum(r["verdict"] == "uncertain" for r in judged),
        "accuracy": _share(sum(r["verdict"] == r["label"] for r in decided), len(decided)),
        "real_called_ai": _share(sum(r["verdict"] == "ai" for r in real), len(real)),
        "uncertain_share": _share(sum(r["verdict"] == "uncertain" for r in judged),
                                  len(judged)),
        "mean_ai_probability": float(np.mean(probs)) if probs else float("nan"),
    }


def build_report(rows: list[dict]) -> dict:
    """All metrics of a run: overall, per group, the curves, the failures and the rows."""
    scored = [r for r in rows if r["status"] in JUDGED and r["ai_probability"] is not None]
    y = np.array([LABELS[r["label"]] for r in scored], dtype=np.int8)
    p = np.array([r["ai_probability"] for r in scored], dtype=np.float64)
    fpr, tpr, thresholds = metrics.roc_curve(y, p)
    mean_pred, observed, counts = metrics.reliability_bins(y, p, BINS)
    overall = _summary(rows)
    overall.update({
        "scored": len(scored),
        "auc": metrics.roc_auc(y, p),
        f"tpr_at_{round(FPR_TARGET * 100)}pct_fpr": metrics.tpr_at_fpr(y, p, FPR_TARGET),
        "ece": metrics.expected_calibration_error(y, p, BINS),
    })
    groups = {}
    for name in sorted({r["group"] for r in rows}):
        members = [r for r in rows if r["group"] == name]
        groups[name] = {"label": members[0]["label"]
                        if len({r["label"] for r in members}) == 1 else "mixed",
                        **_summary(members)}
    return {
        "overall": overall,
        "groups": groups,
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist(),
                "thresholds": [None if math.isinf(t) else float(t) for t in thresholds]},
        "reliability": {"bins": BINS, "mean_predicted": mean_pred.tolist(),
                        "observed_rate": observed.tolist(), "count": counts.tolist()},
        "failures": [{"path": r["path"], "status": r["status"], "error": r["error"]}
                     for r in rows if r["status"] not in JUDGED],
        "files": rows,
    }


def _clean(value):
    """JSON without NaN/inf (they become null)."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def to_json(report: dict) -> str:
    return json.dumps(_clean(report), indent=2, default=str)


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f} %"


def _num(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def format_report(report: dict) -> str:
    """The metrics, the per-group table and the failed files, as plain text."""
    o = report["overall"]
    tpr_key = f"tpr_at_{round(FPR_TARGET * 100)}pct_fpr"
    lines = [
        f"files {o['files']} (AI {o['ai_files']}, real {o['real_files']}): judged "
        f"{o['judged']}, failed {o['failed']}" + (f", missing {o['missing']}"
                                                  if o["missing"] else ""),
        "",
        f"  AUC                       {_num(o['auc'])}",
        f"  accuracy (decided)        {_pct(o['accuracy'])}",
        f"  TPR at {round(FPR_TARGET * 100)} % FPR            {_pct(o[tpr_key])}",
        f"  ECE ({BINS} bins)              {_num(o['ece'])}",
        f"  real photos called AI     {_pct(o['real_called_ai'])}",
        f"  uncertain                 {_pct(o['uncertain_share'])}",
        f"  failed                    {o['failed']}",
        "",
    ]
    header = ("group", "files", "failed", "AI", "real", "uncertain", "accuracy", "mean P(AI)")
    table = [header]
    for name, g in report["groups"].items():
        table.append((name, str(g["files"]), str(g["failed"] + g["missing"]),
                      str(g["called_ai"]), str(g["called_real"]), str(g["uncertain"]),
                      _pct(g["accuracy"]), _num(g["mean_ai_probability"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        cells = [row[0].ljust(widths[0]),
                 *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if report["failures"]:
        lines += ["", f"failed ({len(report['failures'])}):"]
        lines += [f"  {f['path']}: {f['error'] or f['status']}" for f in report["failures"]]
    return "\n".join(lines)


def write_plot(report: dict, path: str | Path) -> None:
    """ROC curve and reliability diagram side by side, as a PNG (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    o = report["overall"]
    fig = Figure(figsize=(11, 5), dpi=100)
    FigureCanvasAgg(fig)
    roc, rel = fig.subplots(1, 2)
    fpr, tpr = report["roc"]["fpr"], report["roc"]["tpr"]
    roc.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    if fpr and not any(v is None or math.isnan(v) for v in fpr + tpr):
        roc.plot(fpr, tpr, color="C0", marker=".", label=f"SkyGate (AUC {_num(o['auc'])})")
    roc.axvline(FPR_TARGET, color="C3", linewidth=0.8, linestyle="--",
                label=f"{round(FPR_TARGET * 100)} % FPR")
    roc.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate (real called AI)",
            ylabel="true-positive rate (AI called AI)", title="ROC")
    roc.legend(loc="lower right")

    r = report["reliability"]
    width = 1.0 / r["bins"]
    centres = [(i + 0.5) * width for i in range(r["bins"])]
    observed = [0.0 if v is None or math.isnan(v) else v for v in r["observed_rate"]]
    rel.bar(centres, observed, width=width * 0.9, color="C0", alpha=0.7, label="observed AI share")
    for x, n, v in zip(centres, r["count"], r["observed_rate"], strict=True):
        if n:
            rel.annotate(str(n), (x, v), ha="center", va="bottom", fontsize=7)
    rel.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect calibration")
    rel.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="predicted P(AI)", ylabel="share that is AI",
            title=f"Reliability (ECE {_num(o['ece'])}; numbers: images per bin)")
    rel.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(str(path), format="png")
