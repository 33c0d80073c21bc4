"""The soak benchmark (benchmarks/soak.py) runs end to end on a few seconds of load, so that the command whose
figures docs/reliability_soak.md records keeps working. Its memory bound is the benchmark's business, not this
test's: a 4 s run says nothing about growth, so the bound is set wide here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the soak benchmark against a served model

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO.parent / "shared" / "data" / "imaging" / "dicom_fixtures" / "chest" / "CR-MONO1-10-chest"


def test_soak_runs_reports_windows_and_checks_the_audit(registered, tmp_path):
    shutil.copy(registered.work / "mlflow.db", tmp_path / "mlflow.db")  # artefacts stay where they were logged
    out = tmp_path / "soak.md"
    argv = [
        sys.executable,
        str(REPO / "benchmarks" / "soak.py"),
        "--work-dir",
        str(tmp_path),
        "--duration",
        "4",
        "--window",
        "2",
        "--data",
        "synthetic",
        "--records",
        "20",
        "--rss-bound-mib",
        "1024",
        "--imaging-every",
        "5" if FIXTURE.is_file() else "0",
        "--out",
        str(out),
    ]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert [w["window"] for w in result["windows"]] == [1, 2]
    assert result["totals"]["errors"] == 0 and result["totals"]["ok"] > 10
    assert all(w["rss_mib"] > 50 for w in result["windows"])  # the server's memory was really read
    audit = result["audit"]
    assert audit["every_prediction_audited"] and audit["chain_verifies"]
    assert result["totals"]["ok"] + 2 <= audit["records_written"] <= result["totals"]["ok"] + 2 + 2 * 4
    assert "**Verdict: PASS**" in out.read_text()
