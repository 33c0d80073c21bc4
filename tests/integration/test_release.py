"""vigil release: the only way to @production; a refused release is recorded, never an exception."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from vigil.cli import app

pytestmark = pytest.mark.slow  # the session's triage run (tests/integration/conftest.py) and the release gate

SYNTHETIC_AUDIT = (("synthetic:n=4000,seed=21", ("sex", "age_band", "ethnicity")),)

LENIENT_POLICY = (
    'policy_version: "test-lenient"\nalpha: 0.05\nstraddle_rule: estimate\nmin_group_n: 100\n'
    "min_group_positives: 20\nrequired_attributes: []\nmax_gap:\n  under_triage_rate: 1.0\n"
    "  false_negative_rate: 1.0\nmin_group:\n  auroc: 0.0\nmax_group:\n  ece: 1.0\n"
    "performance_floors:\n  vigil-triage:\n    test.admitted.auroc: 0.5\n"
)


def _safety_report(n_violations: int):
    """A stand-in safety report: one invariant, violated ``n_violations`` times."""
    from evaluation.safety import InvariantResult, SafetyReport

    examples = tuple({"case": k, "violation": 1.0} for k in range(min(n_violations, 5)))
    result = InvariantResult(
        "triage.stand_in",
        "a stand-in invariant",
        "tests",
        n_cases=100,
        n_violations=n_violations,
        examples=examples,
        worst=1.0 if n_violations else 0.0,
    )
    return SafetyReport("vigil-triage", "test", "triage", (result,))


@pytest.fixture(scope="module")
def registered(triage_run):
    """The session's shared triage run (tests/integration/conftest.py), in this module's own work folder."""
    return triage_run


def _client(work):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{work / 'mlflow.db'}")


def test_synthetic_model_is_refused_and_the_refusal_recorded(registered):
    work, result = registered
    from workflows.release import release

    outcome = release(f"vigil-triage/{result.registered_version}", n_boot=100, triage_data=SYNTHETIC_AUDIT)
    assert outcome.status == "fail" and not outcome.promoted
    by_name = {c.name: c for c in outcome.checks}
    assert by_name["real training data"].status == "fail"
    assert by_name["onnx checksum"].status == "pass" and by_name["onnx parity"].status == "pass"
    assert any(name.startswith("fairness synthetic") for name in by_name)
    client = _client(work)
    tags = client.get_model_version("vigil-triage", result.registered_version).tags
    assert tags["release_gate.status"] == "fail" and tags["release_gate.policy_version"]
    aliases = client.get_registered_model("vigil-triage").aliases
    assert "production" not in aliases
    decision = json.loads((outcome.reports[-1]).read_text())
    assert decision["promoted"] is False
    html = [p for p in outcome.reports if p.suffix == ".html"]
    assert html and "sex" in html[0].read_text()
    card = next(p for p in outcome.reports if p.name == "model_card.md").read_text()
    assert "## Intended use" in card and "## Limitations" in card and "Status: fail" in card
    assert "by_group" in card and "ethnicity" in card and "real training data" in card
    # The safety-invariant suite ran on the candidate: a check, reports, registry tags and the card.
    safety = by_name["safety invariants"]
    assert safety.status in ("pass", "fail") and "safety-invariants/" in safety.reason
    names = {p.name for p in outcome.reports}
    assert {"safety_invariants.json", "safety_invariants.md"} <= names
    report = json.loads(next(p for p in outcome.reports if p.name == "safety_invariants.json").read_text())
    assert len(report["results"]) == 8 and all(r["id"].startswith("triage.") for r in report["results"])
    assert tags["safety_invariants.status"] == ("pass" if report["passed"] else "fail")
    assert tags["safety_invariants.suite_version"] == report["suite_version"]
    assert tags["safety_invariants.violations"] == "none" or not report["passed"]
    assert "## Safety invariants" in card and "triage.deterioration_never_lowers_risk" in card
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "release_gate")}
    logged = {f.path.rsplit("/", 1)[-1] for a in artifacts for f in client.list_artifacts(result.run_id, a)}
    assert "safety_invariants.json" in logged and "safety_invariants.md" in logged


def test_tampered_onnx_fails_the_checksum(registered, monkeypatch):
    _work, result = registered
    from training import tracking
    from workflows.release import release

    original = tracking.fetch_model_version

    def tampered(ref, base):
        record = original(ref, base)
        record.onnx_path.write_bytes(record.onnx_path.read_bytes() + b"\0")
        return record

    monkeypatch.setattr("workflows.release.fetch_model_version", tampered)
    outcome = release(f"vigil-triage/{result.registered_version}", n_boot=100, triage_data=SYNTHETIC_AUDIT)
    checksum = next(c for c in outcome.checks if c.name == "onnx checksum")
    assert checksum.status == "fail" and "does not match" in checksum.reason
    safety = next(c for c in outcome.checks if c.name == "safety invariants")
    assert safety.status == "fail" and safety.reason.startswith("not run: the ONNX file failed its checksum")
    assert not outcome.promoted
    card = next(p for p in outcome.reports if p.name == "model_card.md").read_text()
    assert "Unavailable" in card and "Status: fail" in card


def test_cli_release_exit_codes(registered):
    work, _result = registered
    res = CliRunner().invoke(app, ["release", "vigil-triage/999"], env={"VIGIL_WORK_DIR": str(work)})
    assert res.exit_code == 2 and "registry has no model version" in res.output
    res = CliRunner().invoke(app, ["release", "not a model ref"], env={"VIGIL_WORK_DIR": str(work)})
    assert res.exit_code == 2 and "model must be NAME/VERSION or NAME@ALIAS" in res.output


def test_missing_evaluation_data_is_insufficient_evidence_not_a_crash(registered):
    _, result = registered
    from workflows.release import release

    outcome = release(f"vigil-triage/{result.registered_version}", n_boot=100)  # VIGIL_DATA_DIR has no data
    fairness = next(c for c in outcome.checks if c.name == "fairness")
    assert fairness.status == "insufficient evidence" and "evaluation data not available" in fairness.reason
    assert outcome.status == "fail" and not outcome.promoted  # synthetic training data fails as well


def test_a_safety_violation_alone_blocks_release(registered, tmp_path, monkeypatch):
    """Every other check passes (lenient policy, run marked real); one violated invariant fails the release."""
    work, result = registered
    from workflows.release import release

    policy = tmp_path / "lenient.yaml"
    policy.write_text(LENIENT_POLICY)
    monkeypatch.setattr("workflows.release.run_safety_suite", lambda *a, **k: _safety_report(3))
    client = _client(work)
    client.set_tag(result.run_id, "synthetic_data", "false")
    try:
        outcome = release(
            f"vigil-triage/{result.registered_version}", n_boot=100, policy_path=policy, triage_data=SYNTHETIC_AUDIT
        )
    finally:
        client.set_tag(result.run_id, "synthetic_data", "true")
    failing = [c for c in outcome.checks if c.status != "pass"]
    assert [c.name for c in failing] == ["safety invariants"], failing
    assert failing[0].status == "fail" and "triage.stand_in (3/100)" in failing[0].reason
    assert outcome.status == "fail" and not outcome.promoted
    assert "production" not in client.get_registered_model("vigil-triage").aliases
    tags = client.get_model_version("vigil-triage", result.registered_version).tags
    assert tags["safety_invariants.status"] == "fail"
    assert tags["safety_invariants.violations"] == "triage.stand_in (3/100)"
    card = next(p for p in outcome.reports if p.name == "model_card.md").read_text()
    assert "**triage.stand_in** violated" in card and '"case": 0' in card
    res = CliRunner().invoke(
        app,
        ["release", f"vigil-triage/{result.registered_version}", "--policy", str(policy), "--bootstrap", "100"],
        env={"VIGIL_WORK_DIR": str(work)},
    )
    assert res.exit_code == 1 and "[fail] safety invariants" in res.output


def test_a_model_that_passes_every_check_is_promoted(registered, tmp_path, monkeypatch):
    """The promote path, with a lenient policy, the run marked as trained on real data (then restored) and a
    stand-in safety report without violations (the small synthetic model's own is not required to pass)."""
    work, result = registered
    from workflows.release import release

    policy = tmp_path / "lenient.yaml"
    policy.write_text(LENIENT_POLICY)
    monkeypatch.setattr("workflows.release.run_safety_suite", lambda *a, **k: _safety_report(0))
    client = _client(work)
    client.set_tag(result.run_id, "synthetic_data", "false")
    try:
        outcome = release(
            f"vigil-triage/{result.registered_version}", n_boot=100, policy_path=policy, triage_data=SYNTHETIC_AUDIT
        )
    finally:
        client.set_tag(result.run_id, "synthetic_data", "true")
    assert outcome.status == "pass", [c for c in outcome.checks if c.status != "pass"]
    assert outcome.promoted
    assert str(client.get_registered_model("vigil-triage").aliases["production"]) == result.registered_version
    tags = client.get_model_version("vigil-triage", result.registered_version).tags
    assert tags["release_gate.status"] == "pass" and tags["release_gate.policy_version"] == "test-lenient"
    assert tags["safety_invariants.status"] == "pass" and tags["safety_invariants.violations"] == "none"
    decision = json.loads(next(p for p in outcome.reports if p.name == "release_decision.json").read_text())
    assert decision["promoted"] is True
    card_md = next(p for p in outcome.reports if p.name == "model_card.md")
    assert '"promoted": true' in (card_md.parent / "model_card.json").read_text()


def test_cli_safety_runs_the_suite_on_a_ref_or_a_file(registered, tmp_path, monkeypatch):
    work, result = registered
    env = {"VIGIL_WORK_DIR": str(work)}
    out = tmp_path / "by-ref"
    res = CliRunner().invoke(
        app,
        ["safety", "--model", f"vigil-triage/{result.registered_version}", "--out", str(out), "--n-grid", "2000"],
        env=env,
    )
    report = json.loads((out / "safety_invariants.json").read_text())
    assert res.exit_code == (0 if report["passed"] else 1), res.output
    assert len(report["results"]) == 8 and "triage.red_flags_give_their_level" in res.output
    assert (out / "safety_invariants.md").read_text().startswith("# Safety invariants")
    res = CliRunner().invoke(
        app,
        ["safety", "--model", str(result.onnx_path), "--out", str(tmp_path / "by-file"), "--n-grid", "2000"],
        env=env,
    )
    assert json.loads((tmp_path / "by-file" / "safety_invariants.json").read_text())["results"] == report["results"]
    res = CliRunner().invoke(app, ["safety", "--model", "not a model ref"], env=env)
    assert res.exit_code == 2 and "model must be NAME/VERSION or NAME@ALIAS" in res.output
    for n_violations, code in ((0, 0), (2, 1)):
        monkeypatch.setattr("workflows.release.run_safety_suite", lambda *a, n=n_violations, **k: _safety_report(n))
        res = CliRunner().invoke(
            app, ["safety", "--model", str(result.onnx_path), "--out", str(tmp_path / "fake")], env=env
        )
        assert res.exit_code == code, res.output
        assert ("FAIL" in res.output) == bool(n_violations)


def test_imaging_safety_films_are_the_validation_patients_and_the_chest_fixtures(tmp_path):
    from types import SimpleNamespace

    from training.data.imaging import NIH_DIR, patient_split
    from workflows.release import SafetySuiteUnavailableError, imaging_safety_films

    model = SimpleNamespace(card=SimpleNamespace(training={"config": {"seed": 7}}))
    with pytest.raises(SafetySuiteUnavailableError, match="no films for the imaging safety suite"):
        imaging_safety_films(model, tmp_path)
    table = tmp_path / NIH_DIR / "derived" / "nih1000_joined_labels_demographics.csv"
    table.parent.mkdir(parents=True)
    patients = [f"{k // 2}" for k in range(40)]  # two films per patient
    table.write_text("staged_path,Patient ID\n" + "".join(f"NIH1000/x/{k}.png,{p}\n" for k, p in enumerate(patients)))
    chest = tmp_path / "imaging" / "dicom_fixtures" / "chest"
    chest.mkdir(parents=True)
    for name in ("b.dcm", "a-no-suffix"):
        (chest / name).write_bytes(b"")
    films = imaging_safety_films(model, tmp_path)
    split = patient_split(("nih-" + pd.Series(patients)).to_numpy(), (0.6, 0.2, 0.2), 7)
    expected = [tmp_path / NIH_DIR / f"NIH1000/x/{k}.png" for k in range(40) if split[k] == "validation"]
    assert 0 < len(expected) < 40 and films == [*expected, chest / "a-no-suffix", chest / "b.dcm"]


def test_an_imaging_model_without_its_suite_fails_closed(monkeypatch):
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    from workflows.release import SafetySuiteUnavailableError, run_safety_suite, safety_check

    card = SimpleNamespace(features={"pixel_path_version": "any"})
    monkeypatch.setattr("models.onnx_file.open_onnx_model", lambda path: (None, card, "sha"))
    monkeypatch.setitem(sys.modules, "evaluation.safety_imaging", None)  # import raises ImportError
    with pytest.raises(SafetySuiteUnavailableError, match="imaging safety suite") as caught:
        run_safety_suite(Path("cxr.onnx"))
    check = safety_check(None, str(caught.value))
    assert check.name == "safety invariants" and check.status == "fail" and check.reason.startswith("not run: ")


def _cxr_record(metrics: dict[str, float]):
    from pathlib import Path

    from training.tracking import ModelVersionRecord

    return ModelVersionRecord("vigil-cxr", "3", "run", Path("cxr.onnx"), {}, {}, metrics)


def test_the_imaging_gate_decides_each_finding_on_its_floor_and_declared_population():
    from fairness.policy import load_policy
    from models.labels import IMAGING_FINDINGS
    from workflows.release import imaging_findings_decision

    policy = load_policy()
    metrics = {
        "test.kermany.pneumonia.auroc": 0.99,
        "test.nih.effusion.auroc": 0.74,
        "test.nih.cardiomegaly.auroc": 0.69,
        "test.nih.pneumothorax.auroc": 0.50,
        "test.nih.atelectasis.auroc": 0.55,
        "test.nih.consolidation_infiltration.auroc": float("nan"),
    }
    decision = imaging_findings_decision(_cxr_record(metrics), policy, IMAGING_FINDINGS)
    assert set(decision.released) == {"pneumonia", "effusion"}
    assert decision.validated_on["pneumonia"] == "kermany" and decision.validated_on["effusion"] == "nih"
    assert decision.released["pneumonia"].max_age_years == 6.0 and decision.released["effusion"].min_age_years == 18
    assert "0.690 (< floor 0.7)" in decision.not_released["cardiomegaly"]
    assert "was not recorded" in decision.not_released["nodule_mass"]
    assert "was not recorded" in decision.not_released["consolidation_infiltration"]  # NaN is not a value
    release = decision.release()
    assert set(release.not_validated) == set(IMAGING_FINDINGS) - {"pneumonia", "effusion"}


def test_a_finding_without_a_declared_population_is_never_released():
    import dataclasses

    from fairness.policy import load_policy
    from workflows.release import imaging_findings_decision

    policy = load_policy()
    use = policy.intended_use["vigil-cxr"]
    findings = {f: v for f, v in use.findings.items() if f != "effusion"}
    policy = dataclasses.replace(
        policy, intended_use={**policy.intended_use, "vigil-cxr": dataclasses.replace(use, findings=findings)}
    )
    decision = imaging_findings_decision(_cxr_record({"test.nih.effusion.auroc": 0.99}), policy, ("effusion",))
    assert decision.released == {} and "declares no intended population" in decision.not_released["effusion"]


def test_audits_outside_the_intended_use_are_reported_not_gated():
    from fairness.policy import load_policy
    from workflows.release import audit_scope, intended_use_of

    policy = load_policy()
    assert audit_scope(policy, "vigil-triage", "nhamcs:2020") is None
    assert "outside the intended use" in audit_scope(policy, "vigil-triage", "ktas")
    assert audit_scope(policy, "vigil-other", "ktas") is None  # no declaration: everything gates
    use = intended_use_of(policy, "vigil-triage")
    assert use is not None and use.not_validated_for[0]["name"] == "ktas"


def test_a_candidate_is_compared_with_the_version_in_production(registered, tmp_path, monkeypatch):
    """The version at @production (here: the same ONNX file under another version number) is scored on the same
    rows; the comparison is a check and a section of the card."""
    import dataclasses

    from training import tracking
    from workflows.release import release

    work, result = registered
    policy = tmp_path / "lenient.yaml"
    policy.write_text(
        LENIENT_POLICY + "non_inferiority:\n  auroc_margin: 0.01\n  under_triage_tolerance: 0.02\n  reason: test\n"
    )
    candidate = tracking.fetch_model_version(f"vigil-triage/{result.registered_version}", work)
    monkeypatch.setattr(
        "workflows.release.production_record", lambda name, base: dataclasses.replace(candidate, version="0")
    )
    monkeypatch.setattr("workflows.release.run_safety_suite", lambda *a, **k: _safety_report(0))
    outcome = release(
        f"vigil-triage/{result.registered_version}", n_boot=100, policy_path=policy, triage_data=SYNTHETIC_AUDIT
    )
    compared = [c for c in outcome.checks if c.name.startswith("non-inferiority")]
    assert [c.name for c in compared] == ["non-inferiority synthetic:n=4000,seed=21 admitted"]
    assert compared[0].status == "pass" and "difference +0.000" in compared[0].reason
    card = next(p for p in outcome.reports if p.name == "model_card.md").read_text()
    assert "## Against the model in production (version 0)" in card and "non-inferior" in card
    assert "## Release scope" in card
