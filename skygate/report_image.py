"""One image's page in a report folder: the picture at screen size with the voting model's
map over it (an opacity slider), the ELA picture of the same region, why the verdict is what
it is (the methods that voted and those that did not), the declared provenance and a link to
the original file. Static HTML: every value of the data is escaped; the one script moves the
overlay's opacity."""

from __future__ import annotations

import html
import pathlib

from schemas.records import VerdictWord
from skygate.report_pictures import ImagePictures

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222;max-width:1700px}
h1{font-size:1.2em;word-break:break-all}.AI{color:#b00020}.Real{color:#1b5e20}
.Uncertain{color:#8a6d00}.stage{position:relative;display:inline-block;max-width:100%}
.stage img.pic{display:block;max-width:100%;height:auto}
.stage img.map{position:absolute;image-rendering:auto;pointer-events:none}
.legend{height:10px;width:320px;background:linear-gradient(90deg,rgb(30,90,220),#fff,
rgb(200,30,40));border:1px solid #999}.cols{display:flex;flex-wrap:wrap;gap:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 8px;
font-size:90%;text-align:left;vertical-align:top}.note{color:#555;font-size:90%}
"""

# The slider sets the overlay's opacity; no data reaches the script.
SCRIPT = ("document.getElementById('op').addEventListener('input',e=>{"
          "for(const m of document.querySelectorAll('img.map'))m.style.opacity=e.target.value/100;"
          "document.body.dataset.opacity=e.target.value;});")


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _p(value) -> str:
    return "—" if value is None else f"{float(value):.2f}"


def _rows(pairs: list[tuple[str, object]]) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs
                   if v not in (None, "", []))


def _picture(name: str, pics: ImagePictures) -> str:
    if not pics.screen:
        return "<p class='note'>The picture could not be read.</p>"
    file, w, h = pics.screen
    overlay = ""
    if pics.overlay and pics.box:
        b = pics.box
        overlay = (f"<img class='map' id='map' alt='the voting model map' src='{_e(pics.overlay)}' "
                   f"style='left:{b['x'] * 100:.3f}%;top:{b['y'] * 100:.3f}%;"
                   f"width:{b['w'] * 100:.3f}%;height:{b['h'] * 100:.3f}%;opacity:.6'>")
    stage = (f"<div class='stage'><img class='pic' id='pic' alt='{_e(name)}' src='{_e(file)}' "
             f"width='{w}' height='{h}'>{overlay}</div>")
    if not overlay:
        return stage + "<p class='note'>No map: the voting model drew none for this image.</p>"
    return stage + (
        "<p><label>Map opacity <input id='op' type='range' min='0' max='100' value='60'>"
        "</label></p><div class='legend'></div><p class='note'>Blue: the region's fine detail "
        f"pulls the model towards a photograph; red: towards AI; full colour ±{pics.scale} "
        "log-odds of P(AI) (each region blurred in turn, the model run again). Outside the "
        "marked square the model saw nothing: it reads the central square of the image's "
        "central 1024 px.</p>")


def _why(x: dict) -> str:
    voted = "".join(f"<tr><td>{_e(v['method'])}</td><td>{_p(v['ai_probability'])}</td>"
                    f"<td>{_e(v['weight'])}</td><td>{v['contribution']:+.2f}</td></tr>"
                    for v in x.get("voted", []))
    others = "".join(f"<tr><td>{_e(n['method'])}</td><td>{_p(n.get('ai_probability'))}</td>"
                     f"<td colspan='2'>{_e(n['reason'])}</td></tr>"
                     for n in x.get("not_voting", []))
    return (f"<h2>Why</h2><p>Decided by: <b>{_e(x.get('decided_by'))}</b></p>"
            "<table id='votes'><tr><th>method</th><th>P(AI)</th><th>weight</th>"
            f"<th>contribution (log-odds)</th></tr>{voted}"
            f"<tr><th colspan='4'>not voting (evidence only)</th></tr>{others}</table>")


def _provenance(x: dict) -> str:
    prov = x.get("provenance") or {}
    c2pa = prov.get("c2pa") or {}
    rows = _rows([
        ("C2PA claim generator", c2pa.get("claim_generator")),
        ("C2PA signer", c2pa.get("signer")), ("C2PA signed at", c2pa.get("signed_at")),
        ("C2PA validity", c2pa.get("validation_state")
         or ("unreadable" if c2pa.get("readable") is False else None)),
        ("C2PA validation codes", ", ".join(c2pa.get("validation_errors") or [])),
        ("C2PA actions", ", ".join(c2pa.get("actions") or [])),
        ("C2PA assertions", ", ".join(c2pa.get("assertions") or [])),
        ("IPTC DigitalSourceType", ", ".join(prov.get("digital_source_types") or [])),
        ("generator chunks", ", ".join(prov.get("generator_chunks") or [])),
        ("declared", "; ".join(prov.get("declared_evidence") or [])),
        ("camera", prov.get("camera")), ("software", prov.get("software")),
    ])
    return ("<h2>Provenance and metadata</h2><table id='provenance'>"
            f"{rows or '<tr><td>none declared</td></tr>'}</table>")


def original_link(path: str) -> str:
    """A link to the scanned file: its file: URI (a relative path is taken from the working
    directory of the scan, which writes the report)."""
    try:
        return pathlib.Path(path).absolute().as_uri()
    except ValueError:  # not a local path (a name the API was given): no link to make
        return path


def image_page(*, name: str, record: dict, explanation: dict, pics: ImagePictures,
               index_href: str) -> str:
    word = VerdictWord.of(record.get("is_ai_generated")).label
    x = explanation
    model = x.get("model") or {}
    facts = _rows([("verdict", word), ("P(AI)", _p(x.get("ai_probability"))),
                   ("confidence", _p(record.get("confidence"))),
                   ("summary", record.get("summary")),
                   ("model", " ".join(filter(None, (model.get("name"), model.get("version"))))),
                   ("algorithm", x.get("algorithm_version"))])
    ela = (f"<div><h2>ELA of the same region</h2><img id='ela' alt='ELA' src='{_e(pics.ela)}'"
           " style='max-width:512px;width:100%'><p class='note'>Error level analysis: "
           "bright where a JPEG re-save changes the pixels most (evidence only).</p></div>"
           if pics.ela else "")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(name)} — SkyGate</title><style>{STYLE}</style></head><body>"
        f"<p><a id='back' href='{_e(index_href)}'>‹ report</a> · "
        f"<a id='original' href='{_e(original_link(name))}'>original file</a></p>"
        f"<h1>{_e(name)}</h1><p class='{word}' id='verdict'><b>{_e(word)}</b> — P(AI) "
        f"{_p(x.get('ai_probability'))}</p>"
        f"<div class='cols'><div>{_picture(name, pics)}</div>{ela}</div>"
        f"<div class='cols'><div>{_why(x)}</div><div>{_provenance(x)}</div>"
        f"<div><h2>Result</h2><table id='facts'>{facts}</table></div></div>"
        f"<script>{SCRIPT if pics.overlay else ''}</script></body></html>")
