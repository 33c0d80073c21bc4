"""Train -> export -> parity -> evaluate -> MLflow registry, end to end on the seeded synthetic generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from models.triage.onnx import TriageOnnxModel
from vigil.cli import app

pytestmark = pytest.mark.slow  # the session's triage run (tests/integration/conftest.py), end to end


@pytest.fixture(scope="module")
def pipeline_run(triage_run):
    """The session's shared triage run (tests/integration/conftest.py), in this module's own work folder."""
    return triage_run


def test_runs_on_synthetic_and_says_so(pipeline_run):
    _, result = pipeline_run
    assert result.synthetic is True
    card = (result.report_dir / "model_card.md").read_text()
    assert "SYNTHETIC DATA ONLY" in card
    assert "does not replace the judgement of a clinician" in card
    report = json.loads((result.report_dir / "evaluation_test.json").read_text())
    assert report["synthetic_data"] is True


def test_onnx_parity_and_dynamic_batch(pipeline_run):
    _, result = pipeline_run
    assert result.parity_max_abs_diff < 1e-4
    model = TriageOnnxModel(result.onnx_path)
    from training.data import load_dataset

    frame = load_dataset("synthetic:n=50,seed=7").frame
    for n in (1, 37):
        acuity, outcomes = model.run_encoded(model.encoder.transform(frame.iloc[:n]))
        assert acuity.shape == (n, 5) and outcomes.shape == (n, 2)
        np.testing.assert_allclose(acuity.sum(axis=1), 1.0, atol=1e-5)
    assert model.card.synthetic_data is True and model.card.features["version"] == "triage-features/2"


def test_model_learns_signal_and_baselines_share_rows(pipeline_run):
    _, result = pipeline_run
    test = result.evaluations["test"]
    admitted = test.outcomes["admitted"].models
    assert admitted["Vigil"].auroc.estimate > 0.7
    assert {"NEWS2", "logistic regression", "gradient boosting"} <= set(admitted)
    assert test.acuity.with_floor is not None and test.acuity.with_floor["exact_agreement"] > 0.3
    # the JSON report keeps the display names a reader of evaluation_test.json knows
    report = test.to_dict()
    assert report["outcomes"]["admitted"]["models"]["Vigil"]["auroc"] == admitted["Vigil"].auroc.to_dict()
    assert report["acuity"]["Vigil (with NEWS2 floor)"] == test.acuity.with_floor
    assert test.metrics("test")["test.admitted.auroc"] == admitted["Vigil"].auroc.estimate


def test_recommendation_never_below_news2_floor(pipeline_run):
    _, result = pipeline_run
    from training.data import load_dataset

    model = TriageOnnxModel(result.onnx_path)
    frame = load_dataset("synthetic:n=800,seed=11").frame
    pred = model.predict(frame)
    floor = pred.news2_floor
    assert np.all(pred.recommended_level <= floor)
    assert np.all(pred.recommended_level <= pred.model_level)
    assert np.array_equal(pred.floor_raised, pred.recommended_level < pred.model_level)


def test_registered_with_candidate_alias_and_tracked(pipeline_run):
    work, result = pipeline_run
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    version = client.get_model_version_by_alias("vigil-triage", "candidate")
    assert str(version.version) == result.registered_version and version.run_id == result.run_id
    run = client.get_run(result.run_id)
    assert run.data.params["seed"] == "20261123"
    assert {"git_commit", "train_digest", "test_digest", "onnx_sha256", "synthetic_data"} <= set(run.data.tags)
    assert "test.admitted.auroc" in run.data.metrics and "parity_max_abs_diff" in run.data.metrics
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert {
        "model_card.md",
        "model_card.json",
        "evaluation_test.json",
        "evaluation_test.md",
        "evaluation_test_admitted.png",
        "evaluation_test_acuity_confusion.png",
    } <= names
    history = client.get_metric_history(result.run_id, "member0.val_loss")
    assert len(history) >= 1


def test_cli_evaluate_registry_alias_and_site_csv(pipeline_run, tmp_path):
    work, _ = pipeline_run
    from training.data import load_dataset
    from training.data.canonical_csv import write_canonical_csv

    csv = tmp_path / "site.csv"
    write_canonical_csv(load_dataset("synthetic:n=400,seed=3"), csv)
    runner = CliRunner()
    out = tmp_path / "eval"
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            "models:/vigil-triage@candidate",
            "--data",
            f"csv:{csv}",
            "--out",
            str(out),
            "--bootstrap",
            "20",
        ],
        env={"VIGIL_WORK_DIR": str(work)},
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "evaluation.json").read_text())
    assert report["n"] == 400 and "NEWS2" not in report["outcomes"]["admitted"]["models"]
    assert (out / "evaluation.md").read_text().startswith("# Triage evaluation")


def test_cli_evaluate_bad_csv_names_row_and_field(pipeline_run, tmp_path):
    _, result = pipeline_run
    bad = tmp_path / "bad.csv"
    bad.write_text("age_years,sex,heart_rate,admitted,critical\n40,male,80,0,0\n50,female,900,1,0\n")
    res = CliRunner().invoke(
        app, ["evaluate", "--model", str(result.onnx_path), "--data", f"csv:{bad}", "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2
    assert "row 2" in res.output and "'heart_rate' must be in [20, 300]" in res.output


def test_cli_bad_config_and_missing_model(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 0\n")
    res = CliRunner().invoke(app, ["run", "--config", str(cfg)])
    assert res.exit_code == 2 and "config key 'epochs' must be in [1, 500]; got 0" in res.output
    res = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path / "none.onnx"), "--data", "ktas"])
    assert res.exit_code == 2 and "model file not found" in res.output


def test_corrupt_onnx_refused(tmp_path, pipeline_run):
    _, result = pipeline_run
    from models.errors import ModelArtifactError

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(result.onnx_path.read_bytes()[:5000])
    with pytest.raises(ModelArtifactError, match="could not be loaded"):
        TriageOnnxModel(broken)
    with pytest.raises(ModelArtifactError, match="checksum mismatch"):
        TriageOnnxModel(result.onnx_path, expected_sha256="0" * 64)


def test_a_parity_failure_is_a_named_error_not_a_traceback(tmp_path, isolated_env, monkeypatch):
    """An exported graph that disagrees with the trained model stops `vigil run` with exit 2 and a sentence."""
    import workflows.triage

    monkeypatch.setattr(workflows.triage, "PARITY_TOLERANCE", -1.0)  # any difference, even 0, now fails
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("epochs: 1\nsynthetic_train_n: 300\nsynthetic_test_n: 200\nbootstrap_resamples: 10\n")
    with isolated_env(tmp_path / "work"):
        res = CliRunner().invoke(app, ["run", "--only", "triage", "--skip-release", "--config", str(cfg)])
    assert res.exit_code == 2, res.output
    assert "ONNX parity check failed" in res.output and "nothing was registered" in res.output
    assert "Traceback" not in res.output
