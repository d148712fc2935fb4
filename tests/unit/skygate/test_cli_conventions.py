"""The command line's conventions: --version, -h, --format json|table|csv with --json as its
alias, --quiet, exit codes in --help, and ``scan --fail-on`` (exit 4) to gate a pipeline."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

from skygate.batch import csv_fields
from skygate.sample import make_sample
from tests.conftest import ROOT


def skygate(*args, data_dir, **settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")}
    env["SKYGATE_DATA_DIR"] = str(data_dir)
    env |= {f"SKYGATE_{k.upper()}": v for k, v in settings.items()}
    return subprocess.run([sys.executable, "-m", "skygate.cli", *map(str, args)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """The sample images, scanned once: their verdicts by file name."""
    base = tmp_path_factory.mktemp("conventions")
    folder = base / "sample"
    make_sample(folder)
    data_dir = base / "var"
    result = skygate("scan", folder, "--json", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    records = {os.path.basename(r["path"]): r for r in map(json.loads, result.stdout.splitlines())}
    return folder, data_dir, records


def test_version_and_short_help(tmp_path):
    result = skygate("--version", data_dir=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"skygate, version {version('skygate')}"
    for args in (["-h"], ["scan", "-h"], ["results", "-h"], ["users", "create", "-h"]):
        result = skygate(*args, data_dir=tmp_path)
        assert result.returncode == 0 and result.stdout.startswith("Usage:"), args
    top = skygate("-h", data_dir=tmp_path).stdout
    assert "Exit codes:" in top and "--quiet" in top and "--version" in top
    scan_help = " ".join(skygate("scan", "-h", data_dir=tmp_path).stdout.split())
    assert "--fail-on [ai|uncertain]" in scan_help and "4 --fail-on matched" in scan_help
    assert "--format [table|json|csv]" in scan_help


@pytest.mark.slow
def test_fail_on_exits_4_exactly_when_an_image_is_judged_so(judged):
    folder, data_dir, records = judged
    verdicts = {name: r["is_ai_generated"] for name, r in records.items()}
    assert True in verdicts.values()  # the declared generator: an AI verdict by provenance
    for name, verdict in verdicts.items():
        for fail_on in ("ai", "uncertain"):
            expected = 4 if verdict is True or (fail_on == "uncertain" and verdict is None) else 0
            result = skygate("scan", folder / name, "--fail-on", fail_on, data_dir=data_dir)
            assert result.returncode == expected, (name, verdict, fail_on, result.stderr)
    whole = skygate("scan", folder, "--fail-on", "ai", data_dir=data_dir)
    assert whole.returncode == 4
    assert skygate("scan", folder, "--fail-on", "real", data_dir=data_dir).returncode == 2


@pytest.mark.slow
def test_formats_json_alias_csv_and_quiet(judged):
    folder, data_dir, records = judged
    as_json = skygate("scan", folder, "--json", data_dir=data_dir)
    as_format = skygate("scan", folder, "--format", "json", data_dir=data_dir)
    # The same records (a parallel scan writes them in the order the images finish).
    assert sorted(as_json.stdout.splitlines()) == sorted(as_format.stdout.splitlines())
    assert len(as_json.stdout.splitlines()) == 3
    rows = list(csv.DictReader(io.StringIO(skygate("scan", folder, "--format", "csv",
                                                   data_dir=data_dir).stdout)))
    assert [list(rows[0])] == [list(csv_fields())]
    assert {os.path.basename(r["path"]) for r in rows} == set(records)
    quiet = skygate("--quiet", "scan", folder, data_dir=data_dir)
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    loud = skygate("scan", folder, data_dir=data_dir)
    assert "processed 3" in loud.stdout
    stored_json = skygate("results", "--json", data_dir=data_dir)
    assert len(stored_json.stdout.splitlines()) == 3
    assert stored_json.stdout == skygate("results", "--format", "json", data_dir=data_dir).stdout
    assert skygate("-q", "results", data_dir=data_dir).stdout.count("upload(s)") == 0


ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _json_lines(text: str) -> list[dict]:
    entries = [json.loads(line) for line in text.splitlines()]
    assert all(ISO_UTC.match(e["time"]) for e in entries), entries
    return entries


@pytest.mark.slow
def test_stderr_takes_json_lines_when_not_a_terminal(judged, tmp_path):
    """The command's notes, summaries and causes share stderr with the log records: when
    stderr is not a terminal every line of it is a JSON record (a program parses them all);
    SKYGATE_LOG_FORMAT=text gives the plain lines back."""
    folder, data_dir, _ = judged
    scanned = skygate("scan", folder, "--format", "json", data_dir=data_dir)
    assert scanned.returncode == 0, scanned.stderr
    notes = {e["message"].split(" ")[0]: e for e in _json_lines(scanned.stderr)
             if e["logger"] == "skygate.cli"}
    assert {"store:", "processed"} <= set(notes), scanned.stderr
    assert notes["processed"]["level"] == "INFO" and "already known 3" in \
        notes["processed"]["message"]

    doctor = skygate("doctor", "--json", data_dir=tmp_path,
                     database_url="postgresql://postgres@127.0.0.1:1/skygate")
    assert doctor.returncode == 1
    assert json.loads(doctor.stdout)["causes"] == ["database"]
    errors = [e for e in _json_lines(doctor.stderr) if e["level"] == "ERROR"]
    assert [e["message"].split(":")[0] for e in errors] == ["failed", "cause"], errors

    text = skygate("scan", folder, "--json", data_dir=data_dir, log_format="text")
    assert f"store: {data_dir}" in text.stderr.splitlines()
