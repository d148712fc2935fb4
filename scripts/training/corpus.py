"""The labelled corpus as training rows: label, source group and generator family."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

# Generator families for leave-one-generator-out: variants of one model share a family so a
# held-out family is really unseen.
_FAMILIES = [
    ("gemini", "Gemini"), ("flux", "FLUX"), ("kolors", "Kolors"), ("midjourney", "Midjourney"),
    ("hidream", "HiDream"), ("auraflow", "AuraFlow"), ("chroma", "Chroma"), ("qwen", "Qwen"),
    ("cascade", "Stable Cascade"), ("sdxl", "SDXL"), ("cosxl", "SDXL"), ("sd3", "SD3"),
    ("sd 3", "SD3"), ("lumina", "Lumina"), ("omnigen", "OmniGen"), ("cosmos", "Cosmos"),
    ("z-image", "Z-Image"), ("firefly", "Firefly"), ("sd2", "SD2"), ("sd 2", "SD2"),
    ("wd ", "SD2"), ("wd-", "SD2"), ("anything", "SD1"), ("lcm", "SD1"), ("sd1", "SD1"),
    ("stable diffusion", "SD1"), ("sd ", "SD1"), ("sd (", "SD1"),
]


def generator_family(name: str) -> str:
    low = name.lower()
    for needle, family in _FAMILIES:
        if needle in low:
            return family
    return re.sub(r"\W+", "_", low)[:20] or "unknown"


@dataclass(frozen=True)
class Row:
    path: Path
    file: str
    label: int  # 1 = AI
    source: str  # repository (or package) the file came from
    family: str  # generator family for AI, "real" for photos
    folder: str  # top folder in the corpus (real, real_web, real_dataset, ai)


def load_rows(corpus: Path) -> list[Row]:
    rows = []
    with open(corpus / "manifest.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["label"] not in ("ai", "real") or r["file"].startswith("c2pa/"):
                continue
            ai = r["label"] == "ai"
            rows.append(Row(path=corpus / r["file"], file=r["file"], label=int(ai),
                            source=r["source_repo"],
                            family=generator_family(r["generator_or_camera"]) if ai else "real",
                            folder=r["file"].split("/")[0]))
    return rows


def load_labels(labels: Path) -> list[Row]:
    """Rows of a labels file (``skygate feedback export``, or any CSV ``skygate eval
    --labels`` reads): columns path,label; paths relative to the file; an optional
    ``source`` column names the leave-one-source-out group (default: the file's name).
    ``.jsonl`` files hold one such object a line."""
    text = labels.read_text(encoding="utf-8-sig")
    if labels.suffix.lower() == ".jsonl":
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        records = list(csv.DictReader(text.splitlines()))
    rows = []
    for r in records:
        label = str(r.get("label") or "").strip().lower()
        name = str(r.get("path") or r.get("file") or "").strip()
        if label not in ("ai", "real") or not name:
            continue
        path = Path(name).expanduser()
        path = path if path.is_absolute() else labels.resolve().parent / path
        source = str(r.get("source") or "").strip() or f"labels:{labels.stem}"
        rows.append(Row(path=path, file=f"{source}/{name}", label=int(label == "ai"),
                        source=source,
                        family=source if label == "ai" else "real",
                        folder=f"{source}/{label}"))
    return rows
