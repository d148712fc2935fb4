"""``skygate eval``: judge the detector on the user's own labelled images.

Labelled files come from folders (``PATH/real/…`` and ``PATH/ai/…``) or from a CSV
(``path,label``). They run through the same in-process pipeline as ``skygate scan``
(:func:`skygate.batch.run_embedded`, on the configured database, so a re-run only reads the
stored verdicts back), or with ``stored=True`` the verdicts already stored for the same
SHA-256 are read without running anything. The final P(AI) of each file is read back from
its ``detection_metadata`` document (``aggregated_results.ai_probability``). The metrics
of the rows are :mod:`skygate.eval_report`'s.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from schemas.records import JUDGED_STATUSES as JUDGED
from schemas.records import verdict_word

# Deferred imports: service, storage and the batch runner load when an evaluation runs.

LABELS = {"ai": 1, "real": 0}
LABEL_NAMES = {1: "ai", 0: "real"}


class EvalError(Exception):
    """A usage error: no labelled files, a bad CSV, a missing folder (exit 2)."""


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    label: int  # 1 = AI, 0 = real
    group: str


# --- collecting labelled files ------------------------------------------------------------


def _visible_files(folder: Path) -> list[Path]:
    from skygate.batch import not_judged, walk

    # Sidecars, RAW files and dangling links are not images: no label to score.
    return [f for f in walk([str(folder)], recursive=True)
            if not any(part.startswith(".") for part in f.relative_to(folder).parts)
            and not_judged(f) is None]


def collect_folders(paths: Iterable[str | Path]) -> list[LabelledFile]:
    """Files under ``PATH/real`` and ``PATH/ai`` for each PATH, grouped by the first folder
    below the label folder (``ai/comfy``), or the label itself for files directly in it."""
    found: list[LabelledFile] = []
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise EvalError(f"no such file or folder: {raw}")
        if not root.is_dir():
            raise EvalError(f"{raw} is not a folder (expected real/ and ai/ inside it)")
        if not any((root / name).is_dir() for name in LABELS):
            raise EvalError(f"{raw} has neither a real/ nor an ai/ folder")
        for name, label in LABELS.items():
            folder = root / name
            if not folder.is_dir():
                continue
            for f in _visible_files(folder):
                parts = f.relative_to(folder).parts
                group = f"{name}/{parts[0]}" if len(parts) > 1 else name
                found.append(LabelledFile(f, label, group))
    return found


def _csv_group(path: Path, base: Path, label: str) -> str:
    """For a CSV row: mirror the folder layout when the path is below ``base``."""
    try:
        parts = path.relative_to(base).parts[:-1]
    except ValueError:
        return label
    if not parts or ".." in parts:
        return label
    if parts[0].lower() in LABELS:
        return "/".join(parts[:2])
    return parts[0]


def collect_csv(csv_path: str | Path) -> list[LabelledFile]:
    """Rows of a CSV with a ``path`` (or ``file``) column and a ``label`` column (ai|real);
    relative paths are relative to the CSV's folder. An optional ``group`` column names
    the row's group; otherwise the first folder of the path (``real_web``, or ``ai/comfy``
    below a label folder), or the label."""
    csv_path = Path(csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"cannot read labels file {csv_path}: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    columns = {c.strip().lower(): c for c in (reader.fieldnames or []) if c}
    path_col = columns.get("path") or columns.get("file")
    label_col = columns.get("label")
    if not path_col or not label_col:
        raise EvalError(f"{csv_path}: needs the columns path,label "
                        f"(found: {', '.join(reader.fieldnames or []) or 'none'})")
    group_col = columns.get("group")
    base = csv_path.resolve().parent
    found = []
    for line, row in enumerate(reader, start=2):
        raw_path = (row.get(path_col) or "").strip()
        label = (row.get(label_col) or "").strip().lower()
        if not raw_path and not label:
            continue
        if not raw_path:
            raise EvalError(f"{csv_path}:{line}: empty path")
        if label not in LABELS:
            raise EvalError(f"{csv_path}:{line}: label must be ai or real, not {label!r}")
        path = Path(raw_path).expanduser()
        if not path.is_absolute():
            path = base / path
        group = (row.get(group_col) or "").strip() if group_col else ""
        found.append(LabelledFile(path, LABELS[label],
                                  group or _csv_group(path, base, label)))
    return found


def collect(paths: Iterable[str | Path] = (), labels_csv: str | Path | None = None
            ) -> list[LabelledFile]:
    """Folders and a CSV together, each file once (first label wins)."""
    files = collect_folders(paths)
    if labels_csv is not None:
        files += collect_csv(labels_csv)
    out, seen = [], set()
    for f in files:
        key = str(f.path.resolve()) if f.path.exists() else str(f.path)
        if key not in seen:
            seen.add(key)
            out.append(f)
    if not out:
        raise EvalError("no labelled files found (expected PATH/real/… and PATH/ai/…, "
                        "or --labels F.csv with columns path,label)")
    return out


# --- running or reading back --------------------------------------------------------------


async def _probability(storage, settings, upload_id: int | None) -> float | None:
    """The final P(AI) of an upload, from its detection_metadata document."""
    from storage import repository as repo

    if upload_id is None:
        return None
    result = await repo.result_for_upload(storage.engine, upload_id)
    if result is None:
        return None
    doc = await storage.documents.get_detection_metadata(result["result_id"])
    if doc is None or doc.aggregated_results is None:
        return None
    p = doc.aggregated_results.ai_probability
    return None if p is None else float(p)


async def _stored_record(storage, settings, path: str) -> dict:
    from skygate.batch import read_or_skip, record_for
    from storage import repository as repo

    data = await read_or_skip(storage, path)
    if not isinstance(data, bytes):
        return data
    sha = hashlib.sha256(data).hexdigest()
    upload = await repo.find_upload_by_sha(storage.engine, sha256=sha, user_id=None)
    if upload is None:
        return await record_for(storage.engine, storage.documents, path=path, sha256=sha,
                                upload_id=None,
                                status="missing", error="no stored verdict for this SHA-256")
    status = upload["status"]
    record = await record_for(storage.engine, storage.documents, path=path, sha256=sha,
                              upload_id=upload["upload_id"],
                              status="duplicate" if status == "done" else status,
                              error=upload["error"])
    if record["status"] not in (*JUDGED, "failed"):
        record.update(status="missing", error=f"stored upload is {status}, not judged yet")
    return record


async def _schema_revision(storage, settings) -> str | None:
    from storage import migrate

    return await migrate.current_revision(storage.engine)


def check_stored(settings) -> None:
    """Raise :class:`EvalError` when the configured database holds no SkyGate schema."""
    from service.runtime import process_loop

    where = settings.sqlalchemy_url.split("@")[-1]
    hint = "run `skygate eval` without --stored (or `skygate scan`) first"
    url = settings.sqlalchemy_url
    if url.startswith("sqlite") and ":///" in url:
        db_file = Path(url.split(":///", 1)[1])
        if not db_file.is_file():
            raise EvalError(f"no stored verdicts: {db_file} does not exist; {hint}")
    try:
        revision = process_loop.run(_schema_revision)
    except Exception as exc:  # noqa: BLE001 - any connection failure: say where and why
        process_loop.shutdown()
        raise EvalError(f"cannot read stored verdicts from {where}: {exc}") from None
    if revision is None:
        process_loop.shutdown()
        raise EvalError(f"no stored verdicts: {where} has no SkyGate schema; {hint}")


def _records(files: list[LabelledFile], *, stored: bool, workers: int) -> Iterable[dict]:
    from service.runtime import process_loop

    if stored:
        for f in files:
            yield process_loop.run(_stored_record, str(f.path))
        return
    from skygate.batch import run_embedded

    # run_embedded reports a file that cannot be read as "skipped"; scan does the same.
    yield from run_embedded([f.path for f in files], workers=workers)


def run(files: list[LabelledFile], *, stored: bool = False, workers: int = 1,
        on_record: Callable[[dict], None] | None = None) -> list[dict]:
    """Per-file rows (path, label, group, ai_probability, verdict, status, error), in the
    order of ``files``. Runs the pipeline (or reads stored verdicts with ``stored``)."""
    from service.runtime import process_loop

    by_path = {str(f.path): f for f in files}
    records: dict[str, dict] = {}
    stream = _records(files, stored=stored, workers=workers)
    try:
        for record in stream:
            records[record["path"]] = record
            if on_record is not None:
                on_record(record)
    finally:
        if hasattr(stream, "close"):
            stream.close()
    rows = []
    try:
        for name, f in by_path.items():
            record = records.get(name) or {"status": "missing", "is_ai_generated": None,
                                           "confidence": None, "upload_id": None,
                                           "error": "no result"}
            judged = record["status"] in JUDGED
            p = process_loop.run(_probability, record.get("upload_id")) if judged else None
            if p is None and judged and record["is_ai_generated"] is not None:
                # No document: a decided verdict's confidence is P(its side).
                c = record["confidence"]
                p = c if record["is_ai_generated"] else 1.0 - c
            rows.append({
                "path": name, "label": LABEL_NAMES[f.label], "group": f.group,
                "ai_probability": p,
                "verdict": verdict_word(record["is_ai_generated"]).value if judged else None,
                "status": "failed" if record["status"] == "skipped" else record["status"],
                "error": record.get("error"),
            })
    finally:
        process_loop.shutdown()
    return rows
