"""One self-contained HTML report: summary, then each image with its verdict, per-method
breakdown, ELA image, heatmap and metadata findings. Images are inlined; works offline."""

from __future__ import annotations

import base64
import html
import json
from collections import Counter

from storage import repository as repo

_VERDICT = {True: "AI", False: "Real", None: "Uncertain"}

_SCRIPT = """
function apply(){const v=document.getElementById('f').value,s=document.getElementById('s').value;
const cards=[...document.querySelectorAll('.card')];
cards.forEach(c=>c.style.display=(v==='all'||c.dataset.verdict===v)?'':'none');
cards.sort((a,b)=>s==='conf'?b.dataset.conf-a.dataset.conf:a.dataset.name.localeCompare(b.dataset.name));
const list=document.getElementById('list');cards.forEach(c=>list.appendChild(c));
const shown=cards.filter(c=>c.style.display!=='none').length;
document.getElementById('shown').textContent=shown+' of '+cards.length+' shown';
history.replaceState(null,'','#filter='+encodeURIComponent(v)+'&sort='+s);}
// A link can carry the view: report.html#filter=AI&sort=conf
window.addEventListener('load',()=>{
const h=new URLSearchParams(location.hash.slice(1));
if(h.get('filter'))document.getElementById('f').value=h.get('filter');
if(h.get('sort'))document.getElementById('s').value=h.get('sort');
const imgs=[...document.images],ok=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;
document.body.dataset.picturesShown=ok;document.body.dataset.picturesTotal=imgs.length;
document.getElementById('pics').textContent=ok===imgs.length?ok+' pictures':
(imgs.length-ok)+' of '+imgs.length+' pictures could not be shown';
apply();});
"""

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;background:#fafafa;color:#222}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:1em;margin:1em 0}
.imgs img{max-height:200px;margin-right:8px;border:1px solid #ccc}
.AI{color:#b00020}.Real{color:#1b5e20}.Uncertain{color:#8a6d00}.failed{color:#555}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 8px;font-size:90%}
"""


def _img(blobs, key, alt):
    if not key:
        return ""
    try:
        data = blobs.get(key)
    except Exception:  # noqa: BLE001 - a missing picture must not lose the report
        return ""
    mime = "image/png" if key.endswith(".png") else "image/jpeg"
    return (f'<figure style="display:inline-block"><img alt="{html.escape(alt)}" '
            f'src="data:{mime};base64,{base64.b64encode(data).decode()}">'
            f'<figcaption>{html.escape(alt)}</figcaption></figure>')


async def build_report(storage, records: list[dict]) -> str:
    counts = Counter()
    cards = []
    for rec in sorted(records, key=lambda r: r["path"]):
        name = html.escape(rec["path"])
        if rec["status"] in ("failed", "skipped"):
            counts[rec["status"]] += 1
            cards.append(f'<div class="card" data-verdict="failed" data-conf="0" '
                         f'data-name="{name}"><h3>{name}</h3><p class="failed">'
                         f'{rec["status"].upper()}: {html.escape(rec.get("error") or "")}</p></div>')
            continue
        verdict = _VERDICT[rec["is_ai_generated"]]
        counts[verdict] += 1
        upload = await repo.get_upload(storage.engine, rec["upload_id"])
        result = await repo.result_for_upload(storage.engine, rec["upload_id"])
        doc = await storage.documents.get_detection_metadata(result["result_id"]) if result else None
        pictures = _img(storage.blobs, upload and upload["thumbnail_path"], "image")
        findings = ""
        if doc:
            pictures += _img(storage.blobs, doc.pixel_analysis.ela_results.ela_image_path, "ELA")
            pictures += _img(storage.blobs, doc.visual_anomalies.heatmap_path, "heatmap")
            e = doc.exif_data
            words = list(getattr(e, "evidence", None) or []) + list(e.analysis_result.anomalies)
            if e.camera_make or e.camera_model:
                words.append(f"camera: {e.camera_make or ''} {e.camera_model or ''}")
            findings = "; ".join(words) or "no metadata findings"
        rows = "".join(
            f"<tr><td>{html.escape(m)}</td><td>{_VERDICT[i['is_ai_generated']]}</td>"
            f"<td>{i['confidence']:.2f}</td><td>{html.escape(i['status'])}</td>"
            f"<td>{html.escape(i.get('error') or '')}</td></tr>"
            for m, i in sorted((rec.get("methods") or {}).items()))
        conf = rec["confidence"] or 0
        cards.append(
            f'<div class="card" data-verdict="{verdict}" data-conf="{conf}" data-name="{name}">'
            f'<h3>{name}</h3><p class="{verdict}"><b>{verdict}</b> — confidence {conf:.2f}'
            f' ({html.escape(rec.get("summary") or "")})</p><div class="imgs">{pictures}</div>'
            f"<p>Metadata: {html.escape(findings)}</p><table><tr><th>method</th><th>verdict"
            f"</th><th>confidence</th><th>status</th><th>error</th></tr>{rows}</table></div>")
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>SkyGate report</title>"
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
        f"<h1>SkyGate report</h1><p id='summary'>{len(records)} files — "
        f"{html.escape(summary)}</p><p>Filter <select id='f' onchange='apply()'>"
        f"<option>all</option><option>AI</option><option>Real</option><option>Uncertain"
        f"</option><option>failed</option></select> Sort <select id='s' onchange='apply()'>"
        f"<option value='name'>name</option><option value='conf'>confidence</option></select>"
        f" <span id='shown'></span> · <span id='pics'></span>"
        f"</p><div id='list'>{''.join(cards)}</div>"
        f"<script>const DATA={json.dumps([r['path'] for r in records])};</script></body></html>")
