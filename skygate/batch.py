"""Batch runs over files and folders: the embedded runner, and the records both scan and
submit write (one JSON object per input file)."""

from __future__ import annotations

import asyncio
import csv
import fnmatch
import json
import os
import signal
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from pipeline.decode import SUPPORTED_TYPES
from pipeline.explanation import explain
from pipeline.methods.registry import method_names
from schemas.records import JUDGED_STATUSES, RECORD_FIELDS, FileRecord, file_record, verdict_word

# Deferred imports: service and storage load when a scan runs, not when the CLI parses its
# options.


def csv_fields() -> list[str]:
    """The verdict first, as a person reads it; then the record's fields; then each
    registered method's."""
    return ["path", "status", "verdict", "ai_probability", "confidence", "summary",
            *(f for f in RECORD_FIELDS if f not in ("path", "status", "confidence")),
            *(f"{m}_{k}" for m in method_names()
              for k in ("is_ai_generated", "confidence", "status"))]


def _cell(value):
    """A CSV cell: booleans as ``true``/``false`` (as in the JSON lines), None as empty."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def flatten(record: FileRecord) -> dict:
    """One CSV row: the verdict word, P(AI), confidence and summary, the record's fields,
    and ``<method>_<field>`` for each method."""
    flat = {k: record.get(k) for k in RECORD_FIELDS}
    judged = record.get("status") in JUDGED_STATUSES
    flat.update(verdict=verdict_word(record.get("is_ai_generated")).value if judged else "",
                ai_probability=record.get("ai_probability"), summary=record.get("summary"))
    for m, info in (record.get("methods") or {}).items():
        for k in ("is_ai_generated", "confidence", "status"):
            flat[f"{m}_{k}"] = info.get(k)
    return {k: _cell(v) for k, v in flat.items()}


# Files a photo folder holds beside its pictures: never judged, counted as skipped with the
# reason (not failed: nothing is wrong with them).
SIDECARS = {".xmp": "XMP sidecar", ".aae": "Apple Photos edit sidecar", ".thm": "THM sidecar",
            ".txt": "text file", ".md": "text file", ".json": "JSON file", ".csv": "CSV file",
            ".pdf": "PDF document", ".db": "database file", ".ini": "settings file",
            ".lrv": "video proxy", ".mov": "video", ".mp4": "video", ".m4v": "video",
            ".avi": "video", ".mp3": "audio", ".wav": "audio"}
RAW_FORMATS = {".arw", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf", ".3fr", ".iiq", ".k25",
               ".kdc", ".mef", ".mos", ".mrw", ".nef", ".nrw", ".orf", ".pef", ".raf", ".raw",
               ".rw2", ".rwl", ".sr2", ".srf", ".srw", ".x3f"}


def not_judged(path: Path) -> str | None:
    """Why ``path`` is skipped without being read (a sidecar, a camera RAW file, a dangling
    link), or None for a file to judge."""
    if path.is_symlink() and not path.exists():
        return f"dangling link: its target {os.readlink(path)} does not exist"
    suffix = path.suffix.lower()
    if suffix in SIDECARS:
        return f"{SIDECARS[suffix]}, not an image"
    if suffix in RAW_FORMATS:
        return (f"camera RAW file: not read (SkyGate reads {SUPPORTED_TYPES}; judge the JPEG "
                "the camera or editor made of it)")
    return None


def skipped_records(files: list[Path]) -> tuple[list[Path], list[FileRecord]]:
    """(the files to judge, a "skipped" record with its reason for each of the others)."""
    judge, skipped = [], []
    for f in files:
        reason = not_judged(f)
        if reason is None:
            judge.append(f)
        else:
            skipped.append(file_record(path=str(f), status="skipped", error=reason))
    return judge, skipped


def walk(paths: list[str], *, recursive: bool = True, include: tuple[str, ...] = (),
         exclude: tuple[str, ...] = ()) -> list[Path]:
    """Every regular file under ``paths`` (sorted, de-duplicated), filtered by glob patterns;
    dangling links too, so that they are reported (:func:`not_judged`)."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.glob("*")
            found.extend(sorted(f for f in it if (f.is_file() or _dangling(f))
                                and not f.name.startswith(".")))
        else:
            found.append(p)
    out, seen = [], set()
    for f in found:
        name = f.name
        if include and not any(fnmatch.fnmatch(name, g) for g in include):
            continue
        if any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(str(f), g) for g in exclude):
            continue
        key = str(f.resolve()) if f.exists() else str(f.absolute())
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _dangling(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


async def record_for(engine, documents, *, path: str, sha256: str | None,
                     upload_id: int | None, status: str, error: str | None = None
                     ) -> FileRecord:
    """The output record of one file, with the stored verdict when there is one: its rows
    read through ``engine``, its explanation from the metadata document in ``documents`` (a
    DocumentStore; None: from the rows alone, as ``skygate submit``'s follower, which reads
    only SQL)."""
    from storage import repository as repo

    record = file_record(path=path, sha256=sha256, upload_id=upload_id, status=status,
                         error=error)
    if upload_id is None:
        return record
    upload = await repo.get_upload(engine, upload_id)
    if upload and upload["status"] == "failed":
        record.update(status="failed", error=upload["error"])
        return record
    result = await repo.result_for_upload(engine, upload_id)
    if result:
        record.update(is_ai_generated=result["is_ai_generated"],
                      confidence=float(result["confidence_score"]), methods=result["methods"],
                      summary=result["result_summary"])
        why = explain(await _document(documents, result["result_id"]),
                      is_ai_generated=result["is_ai_generated"],
                      algorithm_version=result["algorithm_version"])
        record.update(ai_probability=why["ai_probability"], explanation=why)
        if status == "queued":
            record["status"] = "done"
    return record


async def _document(documents, result_id: int):
    if documents is None:
        return None
    try:
        return await documents.get_detection_metadata(result_id)
    except Exception:  # noqa: BLE001 - a lost document leaves the record without the why
        return None


async def read_or_skip(storage, path: str) -> bytes | FileRecord:
    """The file's bytes, or the record of a file that cannot be read (status "skipped")."""
    try:
        return await asyncio.to_thread(Path(path).read_bytes)
    except OSError as exc:
        return await record_for(storage.engine, storage.documents, path=path, sha256=None,
                                upload_id=None, status="skipped", error=f"cannot read file: {exc}")


async def _scan_one(storage, settings, path: str) -> FileRecord:
    from service import ingest
    from service.dispatch import Dispatcher

    data = await read_or_skip(storage, path)
    if not isinstance(data, bytes):
        return data
    outcome = await ingest.ingest_bytes(storage, settings, data=data,
                                       original_file_name=Path(path).name, user_id=None)
    if outcome.needs_processing:
        await Dispatcher.in_process(settings).start_detection(
            storage, outcome.upload_id, was_undispatched=outcome.redispatch)
    return await record_for(storage.engine, storage.documents, path=path, sha256=outcome.sha256,
                            upload_id=outcome.upload_id, status=outcome.status,
                            error=outcome.error)


def scan_file(path: str) -> FileRecord:
    """Process one file in this process (a pool worker), on the embedded storage."""
    from service.runtime import process_loop

    return process_loop.run(_scan_one, path)


def run_embedded(files: list[Path], *, workers: int):
    """Yield one record per file as they finish, using ``workers`` processes."""
    names = [str(f) for f in files]
    if not names:
        return
    if workers <= 1:
        warm_up()
        for name in names:
            yield scan_file(name)
        return
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_start_process)
    try:
        futures = [pool.submit(scan_file, n) for n in names]
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        # On Ctrl-C: drop the files not started, let the running ones finish and be stored
        # (a re-run reports them as already known).
        pool.shutdown(wait=True, cancel_futures=True)


def warm_up() -> None:
    """Load the active methods' models in this process before its first file (as a worker
    does when it starts); what fails is logged and left to the first file."""
    from service import detection
    from service.runtime import process_loop

    try:
        process_loop.run(detection.warm_up)
    except Exception as exc:  # noqa: BLE001 - storage could not even be built: first use says
        detection.startup_log.warning("methods not loaded ahead (%s: %s)",
                                      type(exc).__name__, exc)


def _start_process() -> None:
    # Ctrl-C reaches the whole process group; only the parent decides what to do with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warm_up()


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


class Outputs:
    """Writes JSONL and CSV as records arrive (so an interrupted run keeps what it did)."""

    def __init__(self, jsonl: Path | None, csv_path: Path | None):
        for path in (jsonl, csv_path):
            if path is not None:  # an output in a folder not made yet: make it
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(jsonl, "w") if jsonl else None  # noqa: SIM115 - closed in close()
        self._csv_file = open(csv_path, "w", newline="") if csv_path else None  # noqa: SIM115
        self._csv = None
        if self._csv_file:
            self._csv = csv.DictWriter(self._csv_file, fieldnames=csv_fields(),
                                       extrasaction="ignore")
            self._csv.writeheader()
        self.counts: Counter = Counter()
        self.records: list[FileRecord] = []

    def add(self, record: FileRecord) -> None:
        self.records.append(record)
        self.counts[record["status"]] += 1
        if record["status"] in JUDGED_STATUSES:
            self.counts[verdict_word(record["is_ai_generated"]).value] += 1
        if self._jsonl:
            self._jsonl.write(json.dumps(record, default=str) + "\n")
            self._jsonl.flush()
        if self._csv:
            self._csv.writerow(flatten(record))
            self._csv_file.flush()

    def close(self) -> None:
        for fh in (self._jsonl, self._csv_file):
            if fh:
                fh.close()


async def stored_records(storage, *, upload_id: int | None = None, since=None,
                         limit: int = 1000) -> list[FileRecord]:
    """Stored uploads as output records (newest first), for ``skygate results``."""
    from storage import listing

    rows, _ = await listing.list_uploads(storage.engine, upload_id=upload_id, since=since,
                                         limit=limit)
    records = []
    for row in rows:
        record = await record_for(storage.engine, storage.documents,
                                  path=row["original_file_name"], sha256=row["sha256"],
                                  upload_id=row["upload_id"], status=row["status"],
                                  error=row["error"])
        record["upload_date"] = row["upload_date"]
        records.append(record)
    return records
