"""The HTML report of a scan: one small index page plus one folder beside it.

``write_report(storage, records, path)`` writes ``path`` (e.g. ``report.html``) and
``<stem>_files/`` next to it. The index carries the summary (counts per verdict and per folder,
a histogram of P(AI) as inline SVG) and every row as one compact JSON blob; a small script
renders the current page of rows only (100 at a time), with filter by verdict and folder, sort
by name, confidence or P(AI), a text search and a link that carries the view
(``report.html#filter=AI&sort=conf&folder=…&q=…&page=2``). Each judged file has its own page
in the folder (:mod:`skygate.report_image`): the picture at screen size with the voting
model's map over it, the ELA picture of the same region, why the verdict is what it is and the
declared provenance. Pictures are screen-sized (:mod:`skygate.report_pictures`): a file's
pictures and page together stay under 150 KB; originals are linked, never copied. No CDN, no
network: the page and its folder work offline, copied anywhere together. A picture that cannot
be read is reported as missing, never fatal. File names are hostile input: they reach the
index only as JSON data rendered with ``textContent``, and the image pages escaped.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import logging
import os
import pathlib
import shutil
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import sqlalchemy as sa

from pipeline.explanation import explain
from schemas.records import VerdictWord
from schemas.settings import Settings
from service import evidence
from skygate.report_image import image_page
from skygate.report_page import SCRIPT as _SCRIPT
from skygate.report_page import STYLE as _STYLE
from skygate.report_pictures import make_pictures
from storage.models import detection_results, uploads

log = logging.getLogger("skygate.report")

VERDICTS = (*(w.label for w in VerdictWord), "failed")
PAGE_SIZE = 100
HIST_BINS = 10
_MARKER = ".skygate-report"

def _verdict(rec: dict) -> str:
    status = rec.get("status")
    if status in ("failed", "skipped"):
        return "failed"
    if status == "pending":
        return "pending"
    return VerdictWord.of(rec.get("is_ai_generated")).label


def _folder(path: str) -> str:
    parent = str(pathlib.PurePath(path).parent)
    return parent if parent else "."


def _num(x) -> float | None:
    try:
        return None if x is None else round(float(x), 4)
    except (TypeError, ValueError):
        return None


def _p_ai(rec: dict, doc) -> float | None:
    """P(AI): the document's aggregated probability, else derived from a decided verdict."""
    p = rec.get("ai_probability")
    if p is None and doc is not None:
        p = getattr(doc.aggregated_results, "ai_probability", None)
    if p is None and rec.get("confidence") is not None and rec.get("is_ai_generated") is not None:
        c = float(rec["confidence"])
        p = c if rec["is_ai_generated"] else 1.0 - c
    return _num(p)


def _extra(model, name: str):
    return getattr(model, name, None) or (getattr(model, "model_extra", None) or {}).get(name)


def _why_line(why: dict) -> str:
    """One line of why for the index: who voted and how much, who did not."""
    voted = [f"{v['method']} {v['contribution']:+.2f} log-odds (P(AI) {v['ai_probability']:.2f})"
             for v in why.get("voted", []) if v.get("ai_probability") is not None]
    line = f"decided by {why.get('decided_by')}"
    if voted:
        line += ": " + ", ".join(voted)
    if others := [n["method"] for n in why.get("not_voting", [])]:
        line += "; not voting: " + ", ".join(others)
    return line


def _findings(doc) -> str:
    if doc is None:
        return ""
    e = doc.exif_data
    words = [str(w) for w in (getattr(e, "evidence", None) or [])]
    if c2pa := _extra(e, "c2pa"):
        words.append(f"C2PA: {c2pa.get('claim_generator') or 'unknown generator'} "
                     f"({c2pa.get('validation_state') or 'unreadable'})")
    words += [str(w) for w in e.analysis_result.anomalies]
    if e.camera_make or e.camera_model:
        words.append(f"camera: {e.camera_make or ''} {e.camera_model or ''}".strip())
    return "; ".join(words)


async def _stored(storage, upload_ids: list[int]) -> tuple[dict, dict]:
    """(thumbnail key, original key) per upload and result id per upload, a few hundred ids
    per query."""
    thumbs: dict[int, tuple[str | None, str | None]] = {}
    results: dict[int, int] = {}
    ids = sorted(set(upload_ids))
    async with storage.engine.connect() as conn:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for row in await conn.execute(
                    sa.select(uploads.c.upload_id, uploads.c.thumbnail_path, uploads.c.file_path)
                    .where(uploads.c.upload_id.in_(chunk))):
                thumbs[row.upload_id] = (row.thumbnail_path, row.file_path)
            for row in await conn.execute(
                    sa.select(detection_results.c.upload_id, detection_results.c.result_id)
                    .where(detection_results.c.upload_id.in_(chunk))):
                results[row.upload_id] = row.result_id
    return thumbs, results


def _histogram_svg(probs: list[float]) -> str:
    bins = [0] * HIST_BINS
    for p in probs:
        bins[min(HIST_BINS - 1, max(0, int(p * HIST_BINS)))] += 1
    top = max(bins) or 1
    w, h, bw = 320, 150, 28
    parts = [(f'<svg id="hist" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 34}" '
              f'role="img" aria-label="histogram of P(AI)"><title>P(AI) of {len(probs)} judged '
              f'files</title>')]
    for i, n in enumerate(bins):
        bh = round(h * n / top)
        x = 10 + i * (bw + 2)
        lo, hi = i / HIST_BINS, (i + 1) / HIST_BINS
        colour = "#1b5e20" if hi <= 0.5 else "#b00020"  # noqa: PLR2004 - the middle
        parts.append(f'<rect class="bin" data-count="{n}" x="{x}" y="{h - bh + 14}" width="{bw}" '
                     f'height="{bh}" fill="{colour}"><title>P(AI) {lo:.1f}–{hi:.1f}: {n}</title>'
                     f'</rect><text x="{x + bw / 2}" y="{h - bh + 11}" font-size="10" '
                     f'text-anchor="middle">{n}</text>')
    parts.append(f'<line x1="10" y1="{h + 14}" x2="{10 + HIST_BINS * (bw + 2)}" y2="{h + 14}" '
                 f'stroke="#555"/><text x="10" y="{h + 28}" font-size="10">0</text>'
                 f'<text x="{10 + HIST_BINS * (bw + 2) // 2}" y="{h + 28}" font-size="10" '
                 f'text-anchor="middle">P(AI)</text><text x="{HIST_BINS * (bw + 2)}" '
                 f'y="{h + 28}" font-size="10">1</text></svg>')
    return "".join(parts)


def _counts_table(title: str, counts: dict[str, Counter], columns: list[str], limit: int) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in [title, *columns, "total"])
    ordered = sorted(counts.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    body = "".join(
        f"<tr><td>{esc(name)}</td>" + "".join(f"<td>{c[col]}</td>" for col in columns)
        + f"<td>{sum(c.values())}</td></tr>" for name, c in ordered[:limit])
    more = (f"<tr><td colspan='{len(columns) + 2}'>… {len(ordered) - limit} more (use the "
            f"folder filter)</td></tr>" if len(ordered) > limit else "")
    return f"<table id='{esc(title)}s'><tr>{head}</tr>{body}{more}</table>"


def _json_for_script(value) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' (so no '</script>' or '<!--')."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class _Collector:
    """Rows for the page and the summary counts, one record at a time.

    A row (short keys: the page carries thousands): ``n`` path, ``d`` folder index, ``v``
    verdict word, ``st`` status, ``e`` error; for judged files ``c`` confidence, ``p`` P(AI),
    ``s`` summary, ``m`` metadata findings, ``t2`` method rows ``[method index, verdict,
    confidence, status, error]``, ``t`` the thumbnail ``[file, page file, width, height]``
    (the image's own page: :mod:`skygate.report_image`), ``g`` its page file, ``x`` the labels
    of pictures missing.
    """

    def __init__(self, blobs, folder: pathlib.Path):
        self.blobs, self.folder = blobs, folder
        self.folders: dict[str, int] = {}
        self.methods: dict[str, int] = {}
        self.verdicts: Counter = Counter()
        self.per_folder: dict[str, Counter] = {}
        self.probs: list[float] = []
        self.rows: list[dict] = []
        self.images: dict[str, dict] = {}  # picture stem -> the keys its pictures come from
        self.pages: list[tuple[dict, dict, dict, str]] = []  # (row, record, why, stem)
        self.missing = 0
        self.bytes = 0

    def add(self, rec: dict, doc, keys: tuple[str | None, str | None]) -> None:
        name, verdict = str(rec.get("path")), _verdict(rec)
        folder = _folder(name)
        self.verdicts[verdict] += 1
        self.per_folder.setdefault(folder, Counter())[verdict] += 1
        row: dict = {"n": name, "d": self.folders.setdefault(folder, len(self.folders)),
                     "v": verdict, "st": str(rec.get("status"))}
        self.rows.append(row)
        if verdict in ("failed", "pending"):
            row["e"] = str(rec.get("error") or "")
            return
        row["c"], row["p"] = _num(rec.get("confidence")), _p_ai(rec, doc)
        if row["p"] is not None:
            self.probs.append(row["p"])
        if rec.get("summary"):
            row["s"] = str(rec["summary"])
        if findings := _findings(doc):
            row["m"] = findings
        if table := [[self.methods.setdefault(str(m), len(self.methods)),
                      VerdictWord.of(i.get("is_ai_generated")).label, _num(i.get("confidence")),
                      str(i.get("status") or ""), str(i.get("error") or "")]
                     for m, i in sorted((rec.get("methods") or {}).items())]:
            row["t2"] = table
        thumbnail_key, original_key = keys
        models = doc.model_results if doc is not None else []
        source = {"original_key": original_key, "thumbnail_key": thumbnail_key,
                  "ela_key": doc.pixel_analysis.ela_results.ela_image_path if doc else None,
                  "attribution": _extra(models[0], "attribution") if models else None}
        stem = hashlib.sha256(json.dumps(source, sort_keys=True, default=str).encode()
                              ).hexdigest()[:24]
        self.images.setdefault(stem, source)
        why = rec.get("explanation") or explain(
            doc, is_ai_generated=rec.get("is_ai_generated"), ai_probability=row["p"])
        row["y"] = _why_line(why)
        self.pages.append((row, rec, why, stem))

    async def make_pictures(self, index_name: str) -> None:
        loop = asyncio.get_running_loop()
        jobs = list(self.images.items())
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            done = await asyncio.gather(*(loop.run_in_executor(
                pool, partial(make_pictures, self.blobs, stem, self.folder, **source))
                for stem, source in jobs))
        made = {stem: pics for (stem, _), pics in zip(jobs, done, strict=True)}
        self.bytes = sum(sum(p.files.values()) for p in made.values())
        for row, rec, why, stem in self.pages:
            pics = made[stem]
            page = hashlib.sha256(row["n"].encode()).hexdigest()[:24] + ".html"
            text = image_page(name=row["n"], record=rec, explanation=why, pics=pics,
                              index_href="../" + urllib.parse.quote(index_name))
            (self.folder / page).write_text(text, encoding="utf-8")
            self.bytes += len(text.encode())
            row["g"] = page
            if pics.thumb:
                row["t"] = [pics.thumb[0], page, pics.thumb[1], pics.thumb[2]]
            if pics.missing:
                row["x"] = list(pics.missing)
                self.missing += len(pics.missing)

    def page(self, files_url: str) -> str:
        esc = html.escape
        words = list(VERDICTS) + sorted(set(self.verdicts) - set(VERDICTS))
        summary = ", ".join(f"{k}: {self.verdicts[k]}" for k in words if self.verdicts[k])
        options = "".join(f"<option>{esc(v)}</option>" for v in words)
        per_verdict = "".join(f"<tr><td class='{esc(v)}'>{esc(v)}</td>"
                              f"<td>{self.verdicts[v]}</td></tr>" for v in words)
        data = {"rows": self.rows, "folders": list(self.folders),
                "methods": list(self.methods), "dir": files_url, "pageSize": PAGE_SIZE}
        missing = (f" <span class='miss'>{self.missing} picture(s) could not be read</span>"
                   if self.missing else "")
        pager = ("<button id='prev{0}' type='button'>‹ previous</button><span id='pg{0}'>"
                 "</span> <button id='next{0}' type='button'>next ›</button>")
        return (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>SkyGate report</title><style>{_STYLE}</style></head><body>"
            f"<h1>SkyGate report</h1><p id='summary'>{len(self.rows)} files — {esc(summary)}"
            f"{missing}</p>"
            f"<div class='sum'><div><h2>P(AI)</h2>{_histogram_svg(self.probs)}</div>"
            f"<div><h2>Per verdict</h2><table id='verdicts'><tr><th>verdict</th><th>files</th>"
            f"</tr>{per_verdict}</table></div><div><h2>Per folder</h2>"
            f"{_counts_table('folder', self.per_folder, words, 50)}</div></div>"
            "<div class='bar'>Filter <select id='f'><option>all</option>"
            f"{options}</select> Folder <select id='d'><option value=''>all folders</option>"
            "</select> Sort <select id='s'><option value='name'>name</option>"
            "<option value='conf'>confidence</option><option value='pai'>P(AI)</option>"
            "</select> Search <input id='q' type='search' placeholder='file name'> "
            "<span id='shown'></span> · <span id='pics'></span></div>"
            f"<div class='bar'>{pager.format('')}</div><div id='list'></div>"
            f"<div class='bar'>{pager.format('2')}</div>"
            f"<script type='application/json' id='data'>{_json_for_script(data)}</script>"
            f"<script>{_SCRIPT}</script></body></html>")


def _prepare_folder(folder: pathlib.Path) -> None:
    """An empty ``<stem>_files`` folder: our own earlier one is replaced, a foreign one kept."""
    if folder.exists() and any(folder.iterdir()):
        if not (folder / _MARKER).exists():
            raise FileExistsError(f"{folder} exists and is not a SkyGate report folder; "
                                  "move it away or choose another report name")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _MARKER).write_text("pictures of a SkyGate report; rewritten with it\n")


async def write_report(storage, records: list[dict], path: pathlib.Path, *,
                       settings: Settings | None = None) -> pathlib.Path:
    """Write the report page at ``path`` and its pictures in ``<stem>_files/`` beside it.

    ``records`` are scan/submit output records (``path``, ``status``, ``upload_id``,
    ``is_ai_generated``, ``confidence``, ``summary``, ``methods``, ``error``); the pictures,
    P(AI) and metadata findings are read from ``storage``; with ``settings``, the evidence
    an upload's canvas left for later (service.evidence) is computed first, so its pictures
    are in the report. Returns ``path``. A folder of that
    name that is not an earlier report's is never touched (``FileExistsError``).
    """
    path = pathlib.Path(path)
    folder = path.with_name(f"{path.stem}_files")
    _prepare_folder(folder)
    records = sorted(records, key=lambda r: str(r.get("path")))
    judged = [r["upload_id"] for r in records
              if r.get("upload_id") is not None and _verdict(r) not in ("failed", "pending")]
    if settings is not None:
        await _complete_evidence(storage, settings, judged)
    thumbs, results = await _stored(storage, judged)
    out = _Collector(storage.blobs, folder)
    for rec in records:
        uid = rec.get("upload_id")
        rid = results.get(uid) if _verdict(rec) not in ("failed", "pending") else None
        doc = None
        if rid is not None:
            try:
                doc = await storage.documents.get_detection_metadata(rid)
            except Exception:  # noqa: BLE001 - a lost document leaves the row without pictures
                doc = None
        out.add(rec, doc, thumbs.get(uid, (None, None)))
    await out.make_pictures(path.name)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(out.page(urllib.parse.quote(folder.name) + "/"), encoding="utf-8")
    os.replace(tmp, path)
    return path


async def _complete_evidence(storage, settings: Settings, upload_ids: list[int]) -> None:
    """The pictures the report shows that the canvases left for later, computed now; an
    upload whose evidence cannot be computed is shown without it (and the reason logged)."""
    for upload_id in upload_ids:
        try:
            await evidence.complete(storage, settings, upload_id)
        except Exception as exc:  # noqa: BLE001 - one image's pictures never lose the report
            log.warning("evidence of upload %s not computed for the report: %s: %s",
                        upload_id, type(exc).__name__, exc, extra={"upload_id": upload_id})
