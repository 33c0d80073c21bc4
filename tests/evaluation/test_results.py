"""Typed evaluation results: what evaluate_triage / evaluate_imaging return, their JSON and their metric keys."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from evaluation.baselines import NURSE_BASELINE, BaselinePredictions
from evaluation.imaging_report import evaluate_imaging
from evaluation.imaging_report import to_markdown as imaging_markdown
from evaluation.metrics.discrimination import auroc
from evaluation.results import MODEL_ALONE, MODEL_NAME, WITH_FLOOR
from evaluation.triage_report import evaluate_triage, write_report
from models.registry import IMAGING_MODEL, TRIAGE_MODEL, parse_metric_key
from models.triage.onnx import TriagePrediction

N_BOOT = 20


@pytest.fixture(scope="module")
def triage_case():
    rng = np.random.default_rng(0)
    n = 300
    admitted = rng.integers(0, 2, n)
    critical = (rng.random(n) < 0.2).astype(int)
    acuity = rng.integers(1, 6, n).astype(float)
    acuity[:40] = np.nan  # rows without a reference level are not scored for acuity
    frame = pd.DataFrame({"admitted": admitted, "critical": critical, "acuity": acuity})
    p_adm = np.clip(0.5 * admitted + 0.5 * rng.random(n), 0.01, 0.99)
    p_crit = np.clip(0.4 * critical + 0.6 * rng.random(n), 0.01, 0.99)
    model_level = rng.integers(1, 6, n)
    recommended = np.minimum(model_level, rng.integers(1, 6, n))
    prediction = TriagePrediction(
        acuity_probs=np.full((n, 5), 0.2),
        model_level=model_level,
        recommended_level=recommended,
        floor_raised=recommended < model_level,
        p_admitted=p_adm,
        p_critical=p_crit,
        news2_score=np.zeros(n),
        news2_floor=np.full(n, 5),
    )
    news2 = BaselinePredictions("NEWS2", {"admitted": rng.random(n), "critical": rng.random(n)}, None)
    nurse = BaselinePredictions(NURSE_BASELINE, {"admitted": None, "critical": None}, rng.integers(1, 6, n))
    result = evaluate_triage(frame, prediction, [news2, nurse], dataset="case", n_boot=N_BOOT, seed=1)
    return frame, prediction, result


def test_triage_result_is_typed_and_matches_the_metric(triage_case):
    frame, prediction, result = triage_case
    admitted = result.outcomes["admitted"]
    assert admitted.vigil is admitted.models[MODEL_NAME]
    assert admitted.vigil.auroc.estimate == pytest.approx(auroc(frame["admitted"], prediction.p_admitted))
    assert set(admitted.models) == {MODEL_NAME, "NEWS2"}  # the nurse predicts no risk
    assert set(admitted.auroc_difference_vs) == {"NEWS2"}
    assert result.acuity.n == 260 and result.acuity.with_floor is not None
    assert set(result.acuity.baselines) == {NURSE_BASELINE}
    assert result.floor_raised_count == int(prediction.floor_raised.sum())


def test_triage_json_keeps_the_report_shape(triage_case, tmp_path):
    _, _, result = triage_case
    result = replace(result, data_digest="abc", synthetic_data=True)
    write_report(result, tmp_path, "evaluation", "Case")
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert set(report) == {
        "dataset",
        "n",
        "bootstrap_resamples",
        "outcomes",
        "acuity",
        "news2_floor",
        "data_digest",
        "synthetic_data",
    }
    entry = report["outcomes"]["admitted"]
    assert set(entry) == {
        "positives",
        "prevalence",
        "models",
        "auroc_difference_vs",
        "net_benefit",
        "calibration_curve",
    }
    assert set(entry["models"]["Vigil"]) == {
        "auroc",
        "auprc",
        "ece",
        "calibration_slope",
        "calibration_intercept",
        "observed_expected",
    }
    assert set(entry["models"]["Vigil"]["auroc"]) >= {"estimate", "low", "high"}
    assert set(entry["net_benefit"]) == {"thresholds", "Vigil", "treat all", "NEWS2"}
    assert set(report["acuity"]) == {"n", WITH_FLOOR, MODEL_ALONE, NURSE_BASELINE, "confusion_with_floor"}
    assert report["news2_floor"]["raised_count"] == result.floor_raised_count
    markdown = (tmp_path / "evaluation.md").read_text()
    assert "| Vigil |" in markdown and f"| {WITH_FLOOR} |" in markdown and f"| {NURSE_BASELINE} |" in markdown


def test_triage_metrics_are_registry_keys(triage_case):
    _, _, result = triage_case
    metrics = result.metrics("test")
    assert metrics["test.admitted.auroc"] == result.outcomes["admitted"].vigil.auroc.estimate
    assert len(metrics) == 6
    for key in metrics:
        parse_metric_key(TRIAGE_MODEL, key)  # raises for a key the release policy could not name


def test_imaging_result_json_and_metrics():
    rng = np.random.default_rng(2)
    n = 120
    findings = ("effusion", "pneumonia")
    labels = rng.integers(0, 2, (n, 2)).astype(float)
    labels[:, 1] = 0  # one class only: no AUROC for this finding
    mask = np.ones((n, 2))
    probs = np.clip(0.5 * labels + 0.5 * rng.random((n, 2)), 0, 1)
    patients = np.arange(n) // 2
    result = evaluate_imaging(
        labels, mask, probs, {"effusion": 0.5, "pneumonia": 0.5}, patients, findings, dataset="nih", n_boot=N_BOOT
    )
    effusion, pneumonia = result.findings["effusion"], result.findings["pneumonia"]
    assert effusion.auroc is not None and effusion.auroc.estimate == pytest.approx(auroc(labels[:, 0], probs[:, 0]))
    assert pneumonia.auroc is None and pneumonia.note is not None
    report = result.to_dict()
    assert report["n_patients"] == 60 and report["bootstrap_unit"] == "patient"
    assert set(report["findings"]["effusion"]) == {
        "n",
        "positives",
        "threshold",
        "flag_rate",
        "auroc",
        "sensitivity",
        "specificity",
        "ece",
    }
    assert report["findings"]["pneumonia"]["note"].startswith("one class only")
    assert "auroc" not in report["findings"]["pneumonia"]
    metrics = result.metrics("nih")
    assert metrics == {"test.nih.effusion.auroc": effusion.auroc.estimate}
    parse_metric_key(IMAGING_MODEL, next(iter(metrics)))
    assert "| pneumonia | 120 | 0 | n/a |" in imaging_markdown(result, "t")
