"""Fairness reports: JSON, Markdown and self-contained HTML with the groups, the verdict and no row data."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairness.audit import audit
from fairness.audit_spec import AuditSpec
from fairness.gate import gate
from fairness.policy import load_policy
from fairness.report import write_reports

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    rng = np.random.default_rng(0)
    n = 3000
    ethnicity = rng.choice(["nh_white", "nh_black", "<b>odd</b>"], n, p=[0.6, 0.37, 0.03])
    at = rng.choice([1, 2, 3, 4], n, p=[0.05, 0.25, 0.45, 0.25])
    under = rng.random(n) < np.where(ethnicity == "nh_black", 0.16, 0.10)
    score = rng.beta(2.0, 4.0, n)
    frame = pd.DataFrame(
        {
            "patient_id": [f"PATIENT-{900000 + i}" for i in rng.integers(0, 2000, n)],
            "sex": rng.choice(["F", "M"], n),
            "age_band": rng.choice(["18-64", "65+"], n, p=[0.7, 0.3]),
            "ethnicity": ethnicity,
            "y": (rng.random(n) < score).astype(int),
            "score": np.round(score, 6) + 1e-7,  # distinctive values that must not leak into a report
            "flag": (score > 0.3).astype(int),
            "at": at,
            "ap": at + under,
        }
    )
    spec = AuditSpec(
        y_true="y",
        y_score="score",
        y_flag="flag",
        acuity_true="at",
        acuity_pred="ap",
        cluster="patient_id",
        sensitive_attributes=["sex", "age_band", "ethnicity"],
        intersections=[("sex", "age_band")],
        reference_groups={"ethnicity": "nh_white"},
        pool_adjacent=load_policy().pool_adjacent,
        n_boot=60,
        seed=0,
    )
    audited = audit(frame, spec)
    out = tmp_path_factory.mktemp("fairness") / "nested" / "reports"
    paths = write_reports(audited, gate(audited, load_policy()), out, "Triage model <v3>: fairness audit")
    return paths


def test_three_files_are_written(reports: list[Path]) -> None:
    assert [p.suffix for p in reports] == [".json", ".md", ".html"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in reports)


def test_json_holds_the_verdict_and_the_audit(reports: list[Path]) -> None:
    data = json.loads(reports[0].read_text(encoding="utf-8"))
    assert data["gate"]["status"] == "fail"
    assert {a["attribute"] for a in data["audit"]["attributes"]} == {"sex", "age_band", "ethnicity", "sex|age_band"}


def test_html_is_self_contained_and_names_every_group(reports: list[Path]) -> None:
    text = reports[2].read_text(encoding="utf-8")
    for name in ("nh_white", "nh_black", "sex|age_band", "F|65+", "M|18-64", "under_triage_rate", "Release gate"):
        assert name in text, name
    assert "<b>odd</b>" not in text and "&lt;b&gt;odd&lt;/b&gt;" in text  # labels and title are escaped
    assert "Triage model &lt;v3&gt;" in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) >= 9 + 4  # one per metric, one calibration plot per attribute
    assert all(base64.b64decode(img).startswith(PNG_MAGIC) for img in images)
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing fetched from elsewhere


def test_markdown_explains_the_failure(reports: list[Path]) -> None:
    text = reports[1].read_text(encoding="utf-8")
    assert "**Release gate: FAIL**" in text
    assert "under_triage_rate gap for ethnicity=nh_black vs nh_white" in text


def test_no_row_level_data_in_any_report(reports: list[Path]) -> None:
    for path in reports:
        text = path.read_text(encoding="utf-8")
        assert "PATIENT-9" not in text, path.name
        assert not re.search(r"\d\.\d{6}1\b", text), path.name  # no raw score survives
