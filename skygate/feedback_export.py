"""``skygate feedback export``: owners' feedback as a labelled set.

One row per image (SHA-256), the file copied out of the blob store to
``<out_dir>/images/<sha256><ext>``, its path written relative to the CSV: exactly what
``skygate eval --labels F.csv`` reads (columns ``path,label``, an optional ``group``) and
what ``scripts/train_model.py --labels F.csv`` adds to its corpus (``source`` names the
leave-one-source-out group). The same image labelled by several users is one row
(``votes``); when their labels disagree it is left out and counted (``conflicting``).

Each row keeps what the model said when the (latest) feedback was given, ``verdict`` and
``ai_probability``, and ``model_wrong`` (true/false; empty when the model was uncertain or
had not judged yet), so the summary can count the disagreements.
"""

from __future__ import annotations

import asyncio
import csv
import json
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from storage import feedback
from storage.blobs import BlobNotFound

FIELDS = ["path", "label", "group", "source", "sha256", "upload_id", "verdict",
          "ai_probability", "model_wrong", "votes", "note", "feedback_at"]
SOURCE = "feedback"
IMAGES = "images"
# A spreadsheet runs a cell starting with one of these as a formula: such notes get a quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MAX_SUFFIX = 6  # ".jpeg", ".tiff": longer is not an image extension
_NAMES_SHOWN = 3


@dataclass
class Summary:
    rows: list[dict] = field(default_factory=list)
    conflicting: int = 0
    missing: list[str] = field(default_factory=list)

    def counts(self) -> dict:
        labels = [r["label"] for r in self.rows]
        wrong = [r for r in self.rows if r["model_wrong"] is True]
        decided = [r for r in self.rows if r["model_wrong"] is not None]
        return {"n": len(self.rows), "ai": labels.count("ai"), "real": labels.count("real"),
                "model_wrong": len(wrong), "model_decided": len(decided),
                "model_uncertain": sum(r["verdict"] == "uncertain" for r in self.rows),
                "not_judged": sum(r["verdict"] is None for r in self.rows),
                "conflicting": self.conflicting, "missing_images": len(self.missing)}

    def text(self, out: Path) -> str:
        c = self.counts()
        lines = [f"{c['n']} labelled image(s) in {out}: {c['ai']} ai, {c['real']} real",
                 f"the model was wrong on {c['model_wrong']} of the {c['model_decided']} it "
                 f"decided ({c['model_uncertain']} uncertain, {c['not_judged']} not judged "
                 "when labelled)"]
        if self.conflicting:
            lines.append(f"{self.conflicting} image(s) left out: users gave different labels")
        if self.missing:
            lines.append(f"{len(self.missing)} image(s) left out: not in the blob store "
                         f"({', '.join(self.missing[:_NAMES_SHOWN])}"
                         f"{'…' if len(self.missing) > _NAMES_SHOWN else ''})")
        return "\n".join(lines)


def _extension(row: dict) -> str:
    suffix = PurePosixPath(row["file_path"] or "").suffix.lower()
    if suffix and len(suffix) <= _MAX_SUFFIX and suffix[1:].isalnum():
        return suffix
    return mimetypes.guess_extension(row["mime_type"] or "") or ".img"


def _model_wrong(label: str, verdict: str | None) -> bool | None:
    return None if verdict not in ("ai", "real") else verdict != label


async def _copy_image(blobs, rows: list[dict], dest_dir: Path, key: str) -> str | None:
    """Copy one of the rows' blobs to ``dest_dir``; its name relative to the export folder."""
    for row in reversed(rows):  # the latest upload's blob first
        name = f"{key}{_extension(row)}"
        dest = dest_dir / name
        if dest.is_file():
            return f"{IMAGES}/{name}"
        try:
            data = await blobs.aget(row["file_path"])
        except BlobNotFound:  # a store that does not answer is an error, not a gap
            continue
        tmp = dest.with_name(dest.name + ".part")
        await asyncio.to_thread(tmp.write_bytes, data)
        tmp.replace(dest)
        return f"{IMAGES}/{name}"
    return None


async def collect(storage, out: Path, *, since=None, username: str | None = None) -> Summary:
    """Read the feedback, copy the images beside ``out`` and return the rows to write."""
    found = await feedback.for_export(storage.engine, since=since, username=username)
    by_image: dict[str, list[dict]] = {}
    for row in found:  # oldest change first: the last of a list is the latest
        by_image.setdefault(row["sha256"] or f"upload-{row['upload_id']}", []).append(row)
    images = out.parent / IMAGES
    images.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    for key, rows in by_image.items():
        if len({r["label"] for r in rows}) > 1:
            summary.conflicting += 1
            continue
        latest = rows[-1]
        path = await _copy_image(storage.blobs, rows, images, key)
        if path is None:
            summary.missing.append(latest["original_file_name"])
            continue
        summary.rows.append({
            "path": path, "label": latest["label"], "group": latest["label"],
            "source": SOURCE, "sha256": latest["sha256"], "upload_id": latest["upload_id"],
            "verdict": latest["verdict"], "ai_probability": latest["ai_probability"],
            "model_wrong": _model_wrong(latest["label"], latest["verdict"]),
            "votes": len(rows), "note": latest["note"],
            "feedback_at": latest["updated_at"].isoformat() if latest["updated_at"] else None,
        })
    return summary


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write(rows: list[dict], out: Path, fmt: str) -> None:
    """The rows as CSV (spreadsheet-safe notes) or JSON lines, replacing ``out`` whole."""
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        if fmt == "jsonl":
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_cell(row[k]) for k in FIELDS})
    tmp.replace(out)
