"""``skygate eval``: labelled folders or a CSV through the real embedded pipeline."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from testkit.images import SD_PARAMETERS, encode, noisy_photo, smooth_scene
from tests.conftest import ROOT, corpus_dir

CAMERA_EXIF = {0x010F: "SkyGate Test Camera Co.", 0x0110: "TC-1",
               0x0132: "2024:05:04 10:30:00"}


def skygate_eval(*args, data_dir, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    env["SKYGATE_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "skygate.cli", "eval", *map(str, args)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """corpus/real (two camera JPEGs, a corrupt one), corpus/real/phone (one JPEG),
    corpus/ai/sd (two PNGs declaring Stable Diffusion), corpus/ai (a clean render)."""
    root = tmp_path_factory.mktemp("eval") / "corpus"
    for sub in ("real/phone", "ai/sd"):
        (root / sub).mkdir(parents=True)
    for i, name in enumerate(["real/cam1.jpg", "real/cam2.jpg", "real/phone/p1.jpg"]):
        (root / name).write_bytes(encode(noisy_photo(seed=10 + i, sigma=4.0), fmt="JPEG",
                                         exif=CAMERA_EXIF))
    corrupt = bytearray(encode(noisy_photo(seed=20), fmt="JPEG"))
    corrupt[300:] = b"\x00" * (len(corrupt) - 300)
    (root / "real" / "corrupt.jpg").write_bytes(bytes(corrupt))
    for i in range(2):
        (root / "ai" / "sd" / f"sd{i}.png").write_bytes(
            encode(smooth_scene(seed=30 + i), text={"parameters": SD_PARAMETERS}))
    (root / "ai" / "render.png").write_bytes(encode(smooth_scene(seed=40)))
    return root


@pytest.fixture(scope="module")
def first_run(labelled):
    work = labelled.parent
    out, plot = work / "report.json", work / "roc.png"
    result = skygate_eval(labelled, "--out", out, "--plot", plot, "--workers", "2",
                          data_dir=work / "var")
    return {"result": result, "out": out, "plot": plot, "data_dir": work / "var",
            "root": labelled}


@pytest.mark.slow
def test_eval_prints_metrics_and_groups(first_run):
    result = first_run["result"]
    assert result.returncode == 0, result.stderr
    table = result.stdout
    for metric in ("AUC", "accuracy (decided)", "TPR at 5 % FPR", "ECE (10 bins)",
                   "real photos called AI", "uncertain", "failed"):
        assert metric in table, metric
    assert "files 7 (AI 3, real 4): judged 6, failed 1" in table
    lines = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    for group, files in [("ai", "1"), ("ai/sd", "2"), ("real", "3"), ("real/phone", "1")]:
        assert lines[group][1] == files, (group, table)
    assert lines["real"][2] == "1"  # the corrupt JPEG is counted as failed in its group
    assert "corrupt.jpg" in table.split("failed (1):")[1]


@pytest.mark.slow
def test_eval_json_has_rows_and_sensible_values(first_run):
    assert first_run["result"].returncode == 0, first_run["result"].stderr
    report = json.loads(first_run["out"].read_text())
    rows = {os.path.relpath(r["path"], first_run["root"]): r for r in report["files"]}
    assert set(rows) == {"real/cam1.jpg", "real/cam2.jpg", "real/phone/p1.jpg",
                         "real/corrupt.jpg", "ai/sd/sd0.png", "ai/sd/sd1.png", "ai/render.png"}
    for row in rows.values():
        assert set(row) == {"path", "label", "group", "ai_probability", "verdict", "status",
                            "error"}
    for name in ("ai/sd/sd0.png", "ai/sd/sd1.png"):
        assert rows[name]["verdict"] == "ai" and rows[name]["ai_probability"] >= 0.95
        assert rows[name]["group"] == "ai/sd" and rows[name]["label"] == "ai"
    assert rows["real/phone/p1.jpg"]["group"] == "real/phone"
    assert rows["real/cam1.jpg"]["group"] == "real"
    bad = rows["real/corrupt.jpg"]
    assert bad["status"] == "failed" and bad["ai_probability"] is None and bad["error"]
    assert bad["verdict"] is None
    for name, row in rows.items():
        if name != "real/corrupt.jpg":
            assert row["status"] == "done" and 0.0 <= row["ai_probability"] <= 1.0, name
            assert row["verdict"] in ("ai", "real", "uncertain")
    o = report["overall"]
    assert o["files"] == 7 and o["failed"] == 1 and o["judged"] == o["scored"] == 6
    assert 0.0 <= o["auc"] <= 1.0 and 0.0 <= o["ece"] <= 1.0
    assert 0.0 <= o["tpr_at_5pct_fpr"] <= 1.0
    # Accuracy is of decided verdicts only; the shares are of judged files.
    decided = [r for r in rows.values() if r["verdict"] in ("ai", "real")]
    assert o["accuracy"] == pytest.approx(
        sum(r["verdict"] == r["label"] for r in decided) / len(decided))
    assert o["uncertain_share"] == pytest.approx(
        sum(r["verdict"] == "uncertain" for r in rows.values()) / 6)
    assert o["real_called_ai"] == pytest.approx(
        sum(r["verdict"] == "ai" for r in rows.values() if r["label"] == "real") / 3)
    assert report["groups"]["ai/sd"]["called_ai"] == 2
    assert report["failures"] == [{"path": bad["path"], "status": "failed",
                                   "error": bad["error"]}]
    assert sum(report["reliability"]["count"]) == 6 and len(report["reliability"]["count"]) == 10
    assert report["roc"]["fpr"][0] == 0.0 and report["roc"]["tpr"][-1] == 1.0


@pytest.mark.slow
def test_eval_plot_is_a_png(first_run):
    assert first_run["result"].returncode == 0, first_run["result"].stderr
    with Image.open(first_run["plot"]) as img:
        assert img.format == "PNG" and img.width > 2 * 300 and img.height >= 300
        img.verify()


@pytest.mark.slow
def test_eval_stored_and_labels_csv_read_the_same_verdicts(first_run, tmp_path):
    assert first_run["result"].returncode == 0, first_run["result"].stderr
    first = {r["path"]: r for r in json.loads(first_run["out"].read_text())["files"]}
    root = first_run["root"]

    stored = skygate_eval(root, "--stored", "--json", data_dir=first_run["data_dir"])
    assert stored.returncode == 0, stored.stderr
    again = {r["path"]: r for r in json.loads(stored.stdout)["files"]}
    assert set(again) == set(first)
    for path, row in again.items():
        assert row["ai_probability"] == first[path]["ai_probability"], path
        assert row["verdict"] == first[path]["verdict"], path
        assert row["status"] == ("failed" if "corrupt" in path else "duplicate"), path

    # A CSV beside the folders: relative paths, groups mirror the folder layout.
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerow(["real/cam1.jpg", "real"])
        writer.writerow(["real/phone/p1.jpg", "REAL"])
        writer.writerow(["ai/sd/sd0.png", "ai"])
        writer.writerow([str(root / "ai" / "render.png"), "ai"])
        writer.writerow(["real/corrupt.jpg", "real"])
    out = tmp_path / "csv.json"
    result = skygate_eval("--labels", labels, "--out", out, "--workers", "1",
                          data_dir=first_run["data_dir"])
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    groups = {os.path.relpath(r["path"], root): r["group"] for r in report["files"]}
    assert groups == {"real/cam1.jpg": "real", "real/phone/p1.jpg": "real/phone",
                      "ai/sd/sd0.png": "ai/sd", "ai/render.png": "ai",
                      "real/corrupt.jpg": "real"}
    assert report["overall"]["files"] == 5 and report["overall"]["failed"] == 1
    by_name = {os.path.relpath(r["path"], root): r for r in report["files"]}
    assert by_name["ai/sd/sd0.png"]["verdict"] == "ai"
    assert by_name["ai/sd/sd0.png"]["status"] == "duplicate"  # judged once, by the first run


@pytest.mark.slow
def test_eval_stored_marks_unknown_files_missing(first_run, tmp_path):
    assert first_run["result"].returncode == 0, first_run["result"].stderr
    new = tmp_path / "never_scanned.jpg"
    new.write_bytes(encode(noisy_photo(seed=99), fmt="JPEG"))
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label\n{new},real\n{first_run['root'] / 'ai/sd/sd1.png'},ai\n")
    result = skygate_eval("--labels", labels, "--stored", "--json",
                          data_dir=first_run["data_dir"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {os.path.basename(r["path"]): r for r in report["files"]}
    assert rows["never_scanned.jpg"]["status"] == "missing"
    assert rows["never_scanned.jpg"]["ai_probability"] is None
    assert rows["sd1.png"]["status"] == "duplicate" and rows["sd1.png"]["verdict"] == "ai"
    assert report["overall"]["missing"] == 1 and report["overall"]["judged"] == 1


def test_eval_stored_without_a_database_is_a_usage_error(labelled, tmp_path):
    result = skygate_eval(labelled, "--stored", data_dir=tmp_path / "var")
    assert result.returncode == 2, result.stdout
    assert "no stored verdicts" in result.stderr and "without --stored" in result.stderr
    assert not (tmp_path / "var").exists()  # nothing created by looking


def test_eval_usage_errors_exit_2(tmp_path):
    data_dir = tmp_path / "var"
    missing = skygate_eval(tmp_path / "nowhere", data_dir=data_dir)
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    (tmp_path / "empty" / "real").mkdir(parents=True)
    empty = skygate_eval(tmp_path / "empty", data_dir=data_dir)
    assert empty.returncode == 2 and "no labelled files found" in empty.stderr
    (tmp_path / "plain").mkdir()
    plain = skygate_eval(tmp_path / "plain", data_dir=data_dir)
    assert plain.returncode == 2 and "neither a real/ nor an ai/ folder" in plain.stderr
    nothing = skygate_eval(data_dir=data_dir)
    assert nothing.returncode == 2 and "--labels" in nothing.stderr

    bad_label = tmp_path / "bad.csv"
    bad_label.write_text("path,label\nx.jpg,fake\n")
    result = skygate_eval("--labels", bad_label, data_dir=data_dir)
    assert result.returncode == 2 and "label must be ai or real" in result.stderr
    no_columns = tmp_path / "cols.csv"
    no_columns.write_text("name,kind\nx.jpg,ai\n")
    result = skygate_eval("--labels", no_columns, data_dir=data_dir)
    assert result.returncode == 2 and "path,label" in result.stderr
    result = skygate_eval("--labels", tmp_path / "absent.csv", data_dir=data_dir)
    assert result.returncode == 2 and "cannot read labels file" in result.stderr
    # Usage errors touch no database.
    assert not data_dir.exists()


def test_labels_csv_columns_and_groups(tmp_path):
    from skygate.evaluate import collect_csv

    # The shared corpus's manifest names its path column `file` and has more columns.
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,label,notes\nreal_web/a.png,real,\"x, y\"\nai/b.png,ai,\n"
                        "ai/comfy/c.png,AI,\nd.jpg,real,\n/elsewhere/e.jpg,ai,\n\n")
    got = [(f.path, f.label, f.group) for f in collect_csv(manifest)]
    assert got == [(tmp_path / "real_web/a.png", 0, "real_web"), (tmp_path / "ai/b.png", 1, "ai"),
                   (tmp_path / "ai/comfy/c.png", 1, "ai/comfy"), (tmp_path / "d.jpg", 0, "real"),
                   (Path("/elsewhere/e.jpg"), 1, "ai")]
    grouped = tmp_path / "grouped.csv"
    grouped.write_text("path,label,group\nx.jpg,real,phones\n")
    assert collect_csv(grouped)[0].group == "phones"


def test_matplotlib_is_imported_only_for_plot():
    code = ("import sys, skygate.cli, skygate.evaluate, pipeline.metrics; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.corpus
@pytest.mark.slow
def test_eval_on_a_corpus_subset(tmp_path):
    corpus = corpus_dir()
    manifest = corpus / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"no manifest.csv in {corpus}")
    with open(manifest, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if (corpus / r["file"]).is_file()]
    picked = ([r for r in rows if r["label"] == "ai"][:5]
              + [r for r in rows if r["label"] == "real"][:5])
    assert len(picked) == 10
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        for r in picked:
            writer.writerow([str(corpus / r["file"]), r["label"]])
    out = tmp_path / "corpus.json"
    result = skygate_eval("--labels", labels, "--out", out, "--workers", "2",
                          data_dir=tmp_path / "var", timeout=1200)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    o = report["overall"]
    assert o["files"] == 10 and o["ai_files"] == 5 and o["real_files"] == 5
    assert o["judged"] + o["failed"] == 10
    for key in ("auc", "accuracy", "tpr_at_5pct_fpr", "ece", "real_called_ai",
                "uncertain_share"):
        assert key in o
    judged_labels = {r["label"] for r in report["files"] if r["status"] != "failed"}
    if judged_labels == {"ai", "real"}:
        assert 0.0 <= o["auc"] <= 1.0 and 0.0 <= o["ece"] <= 1.0
    assert len(report["files"]) == 10
    assert all(r["status"] in ("done", "duplicate", "failed") for r in report["files"])
    assert sum(g["files"] for g in report["groups"].values()) == 10
    for line in ("AUC", "TPR at 5 % FPR", "ECE"):
        assert line in result.stdout
