"""Images -> torchvision -> ONNX (parity, INT8 decision) -> evaluation -> registry, on synthetic images;
then DICOM bytes -> second-read flags through the exported model on real fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from models.imaging.onnx import ImagingOnnxModel
from models.labels import IMAGING_FINDINGS
from training.config import load_imaging_config

pytestmark = pytest.mark.slow  # trains an imaging model end to end

FIXTURES = (
    Path(os.environ.get("VIGIL_DATA_DIR", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
    / "imaging"
    / "dicom_fixtures"
)


@pytest.fixture(scope="module")
def imaging_run(tmp_path_factory, isolated_env):
    with isolated_env(tmp_path_factory.mktemp("work")) as work:
        from workflows.imaging import run_imaging

        # Saturation augmentation and the saturation average off: this module checks the pipeline, and the
        # synthetic blobs sit in the tails that they saturate (tests/training/test_train_imaging.py and
        # tests/models/test_imaging_saturation_average.py test them; the session's small model averages).
        cfg = load_imaging_config(
            overrides={
                "epochs": 10,
                "patience": 10,
                "synthetic_n": 600,
                "image_size": 64,
                "saturation_jitter": 0.0,
                "saturation_average": 0.0,
                "batch_size": 32,
                "bootstrap_resamples": 20,
                # One thread, as every training in the suite: the slow tier runs 4 workers on 2 cores, and 2 torch
                # threads per worker tripled this module's CPU time (150 s against 50 s) by oversubscription.
                "threads": 1,
            }
        )
        result = run_imaging(cfg, progress=False)
        yield work, result, cfg


def test_synthetic_run_says_so_and_parity_holds(imaging_run):
    _, result, _ = imaging_run
    assert result.synthetic is True
    assert result.parity_max_abs_diff < 1e-4
    card = (result.report_dir / "imaging_model_card.md").read_text()
    assert "SYNTHETIC DATA ONLY" in card and "does not replace the judgement of a clinician" in card


def test_int8_decision_is_recorded_and_consistent(imaging_run):
    _, result, _ = imaging_run
    int8 = json.loads((result.report_dir / "int8.json").read_text())
    assert set(int8["auroc_change"]) == {"validation", "test"}
    assert int8["accuracy_holds"] == (int8["worst_validation_change"] <= 0.005)
    assert result.shipped_precision == ("int8" if int8["accuracy_holds"] else "fp32")
    card = json.loads((result.report_dir / "imaging_model_card.json").read_text())
    assert set(card["metrics"]["validation_auroc"]) == set(IMAGING_FINDINGS)  # every finding has validation positives
    assert all(0.0 <= v <= 1.0 for v in card["metrics"]["validation_auroc"].values())


def test_exported_model_outputs_and_thresholds(imaging_run):
    _, result, _ = imaging_run
    model = ImagingOnnxModel(result.shipped_path)
    assert model.findings == IMAGING_FINDINGS and set(model.thresholds) == set(IMAGING_FINDINGS)
    images = np.random.default_rng(0).standard_normal((3, 1, 64, 64)).astype(np.float32)
    probs, maps = model.run(images)
    assert probs.shape == (3, len(IMAGING_FINDINGS)) and maps.shape == (3, len(IMAGING_FINDINGS), 64, 64)
    assert ((probs >= 0) & (probs <= 1)).all() and maps.min() >= 0 and maps.max() <= 1 + 1e-5
    flags = model.flags(probs)
    assert np.array_equal(flags, probs >= np.array([model.thresholds[f] for f in IMAGING_FINDINGS]))


def test_evaluation_and_registry(imaging_run):
    """The evaluation scores the shipped model on the held-out synthetic patients: its AUROCs are those an
    independent computation (scikit-learn on the shipped ONNX file's outputs for the same split) gives, and the
    model is better than chance across the findings.

    (Until 2026-12-07 this asserted effusion's AUROC > 0.6 alone. Ten epochs on 600 synthetic films learn single
    findings unevenly and machine by machine: effusion 0.70 on the machine of 2026-12-02, 0.54 here with 2 threads and
    0.62 with 1. The mean over the findings was 0.63 and 0.65 in those two runs.)"""
    from sklearn.metrics import roc_auc_score

    from training.data.imaging import synthetic_imaging

    work, result, cfg = imaging_run
    ev = result.evaluations["synthetic"]
    assert ev.bootstrap_unit == "patient" and ev.to_dict()["bootstrap_unit"] == "patient"
    test = synthetic_imaging(cfg.synthetic_n, cfg.image_size, cfg.seed).split("test")
    probs, _ = ImagingOnnxModel(result.shipped_path, threads=cfg.threads).run(test.images)
    estimates = {f: ev.to_dict()["findings"][f]["auroc"]["estimate"] for f in IMAGING_FINDINGS}
    assert ev.auroc() == estimates
    oracle = {f: roc_auc_score(test.labels[:, j], probs[:, j]) for j, f in enumerate(IMAGING_FINDINGS)}
    assert estimates == pytest.approx(oracle, abs=1e-9)
    assert float(np.mean(list(estimates.values()))) > 0.6
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    version = client.get_model_version_by_alias("vigil-cxr", "candidate")
    assert str(version.version) == result.registered_version
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert {
        "imaging_synthetic.json",
        "imaging_synthetic.md",
        "imaging_synthetic_roc.png",
        "int8.json",
        "imaging_model_card.md",
    } <= names


@pytest.mark.realdata
def test_dicom_bytes_to_flags_on_real_fixture(imaging_run):
    _, result, _ = imaging_run
    path = FIXTURES / "chest" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    if not path.is_file():
        pytest.skip(f"DICOM fixtures not found at {FIXTURES}")
    model = ImagingOnnxModel(result.shipped_path)
    read = model.second_read_dicom(path.read_bytes())
    assert set(read.probabilities) == set(IMAGING_FINDINGS)
    assert read.flagged == any(read.flags.values())
    assert read.heatmaps.shape == (len(IMAGING_FINDINGS), 64, 64)
    assert read.source["sop_instance_uid"] == "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"


@pytest.mark.realdata
def test_cli_second_read_writes_sr_heatmap_and_json(imaging_run, tmp_path):
    _, result, _ = imaging_run
    path = FIXTURES / "chest" / "RG1_JLSN.dcm"  # MONOCHROME1, JPEG-LS
    if not path.is_file():
        pytest.skip(f"DICOM fixtures not found at {FIXTURES}")
    from typer.testing import CliRunner

    from models.imaging.sr_read import read_second_read_sr
    from vigil.cli import app

    res = CliRunner().invoke(
        app, ["second-read", "--model", str(result.shipped_path), "--dicom", str(path), "--out", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "second_read.json").read_text())
    sr = read_second_read_sr((tmp_path / "second_read_sr.dcm").read_bytes())
    assert sr["any_flagged"] == summary["flagged"]
    for finding, entry in summary["findings"].items():
        assert sr["findings"][finding]["probability"] == pytest.approx(entry["probability"], abs=1e-12)
        assert sr["findings"][finding]["flagged"] == entry["flag"]
    assert (tmp_path / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "decision support" in summary["statement"].lower()


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("negative/Fake_MONOHR1.dcm", "PhotometricInterpretation contradicts"),
        ("negative/966.dcm", "could not be decoded"),
        ("other_cr/RG3_J2KR.dcm", "BodyPartExamined"),
    ],
)
def test_cli_second_read_refuses_bad_instances_clearly(imaging_run, tmp_path, name, error):
    _, result, _ = imaging_run
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"DICOM fixtures not found at {FIXTURES}")
    from typer.testing import CliRunner

    from vigil.cli import app

    res = CliRunner().invoke(
        app, ["second-read", "--model", str(result.shipped_path), "--dicom", str(path), "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and error in res.output and "Traceback" not in res.output
    assert not (tmp_path / "second_read_sr.dcm").exists()


@pytest.mark.realdata
def test_cli_evaluate_imaging_on_nih_held_out_patients(imaging_run, tmp_path):
    _, result, _ = imaging_run
    if not (FIXTURES.parent / "nih_cxr14_1000_64px").is_dir():
        pytest.skip("NIH images not found")
    from typer.testing import CliRunner

    from vigil.cli import app

    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(result.shipped_path),
            "--data",
            "nih",
            "--out",
            str(tmp_path),
            "--bootstrap",
            "20",
            "--data-dir",
            str(FIXTURES.parents[1]),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["bootstrap_unit"] == "patient" and report["n_images"] > 100
    assert set(report["findings"]) == {
        "effusion",
        "cardiomegaly",
        "pneumothorax",
        "atelectasis",
        "nodule_mass",
        "consolidation_infiltration",
    }  # NIH carries no pneumonia label here
    res = CliRunner().invoke(app, ["evaluate", "--model", str(result.shipped_path), "--data", "ktas"])
    assert res.exit_code == 2 and "is not a triage model" in res.output
