"""``vigil release``: the only way to the ``production`` alias.

For one registered model version: verify the artefact (checksum against the registry, the run's recorded ONNX
parity, never a model trained on synthetic data), check the performance floors, run the fairness audit on the
evaluation data, judge it with the versioned release policy, run the safety-invariant suite (any violation fails
the release), write the result as MLflow tags and a report, and move ``production`` only when every check passes.
Composes the packages; holds no metric logic.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.safety import SafetyReport
from evaluation.safety_report import safety_card_section, safety_tags, write_safety_report
from fairness.audit import audit
from fairness.audit_types import AuditSpec
from fairness.policy import gate, load_policy
from fairness.report import card_groups, write_reports
from models.errors import DataSourceError, ModelArtifactError, VigilError
from models.onnx_runtime import sha256_file
from training.tracking import ModelVersionRecord, fetch_model_version, record_release_decision
from vigil.pipeline import PARITY_TOLERANCE, work_dir

log = logging.getLogger(__name__)

POLICY_PATH = Path(__file__).resolve().parents[1] / "fairness" / "release_policy.yaml"

#: Perturbed records of the triage safety-invariant suite at release.
SAFETY_N_GRID = 10_000
SAFETY_CHECK = "safety invariants"


class SafetySuiteUnavailableError(VigilError):
    """The safety-invariant suite cannot run on a model: no suite for its task in this build, or no films."""


@dataclass
class Check:
    """One release check: data, never an exception."""

    name: str
    status: str  # pass | fail | insufficient evidence
    reason: str


@dataclass
class ReleaseOutcome:
    """Everything ``vigil release`` decided, and why."""

    model: str
    version: str
    status: str
    checks: list[Check] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)
    promoted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "status": self.status, "promoted": self.promoted,
                "checks": [c.__dict__ for c in self.checks], "reports": [str(p) for p in self.reports]}


def artefact_checks(record: ModelVersionRecord) -> list[Check]:
    """Checksum against the registry, ONNX parity recorded at export, and real (not synthetic) training data."""
    checks = []
    expected = record.tags.get("onnx_sha256") or record.run_tags.get("onnx_sha256")
    actual = sha256_file(record.onnx_path)
    checks.append(Check("onnx checksum", "pass" if expected == actual else "fail",
                        "ONNX file matches the registry's sha256" if expected == actual else
                        f"ONNX sha256 {actual[:12]}... does not match the registry's {str(expected)[:12]}..."))
    parity = record.run_metrics.get("parity_max_abs_diff")
    ok = parity is not None and parity <= PARITY_TOLERANCE
    checks.append(Check("onnx parity", "pass" if ok else "fail",
                        f"max |onnxruntime - torch| at export {parity:.1e} (tolerance {PARITY_TOLERANCE:g})"
                        if parity is not None else "the run recorded no ONNX parity check"))
    synthetic = record.run_tags.get("synthetic_data", "true") != "false"
    checks.append(Check("real training data", "fail" if synthetic else "pass",
                        "trained on synthetic data: never released" if synthetic else "trained on real data"))
    return checks


def floor_checks(record: ModelVersionRecord, floors: dict[str, float]) -> list[Check]:
    """Performance floors of the policy against the metrics the training run logged on its test data."""
    checks = []
    for metric, minimum in sorted(floors.items()):
        value = record.run_metrics.get(metric)
        if value is None or not np.isfinite(value):
            checks.append(Check(f"floor {metric}", "fail", f"{metric} was not recorded by the training run"))
        else:
            ok = value >= minimum
            checks.append(Check(f"floor {metric}", "pass" if ok else "fail",
                                f"{metric} = {value:.3f} ({'>=' if ok else '<'} floor {minimum})"))
    return checks


#: Evaluation data of the triage audit and the sensitive attributes each holds.
TRIAGE_AUDIT_DATA: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("nhamcs:2020", ("sex", "age_band", "ethnicity", "payer")),
    ("ktas", ("sex", "age_band")),
)


def triage_audit_frames(record: ModelVersionRecord, data_dir: Path | None,
                        datasets: tuple[tuple[str, tuple[str, ...]], ...] = TRIAGE_AUDIT_DATA,
                        ) -> list[tuple[str, pd.DataFrame, list[str], list[tuple[str, ...]]]]:
    """(name, frame, sensitive attributes, intersections) for each triage audit.

    Admission is audited with under-triage on the visits that have a reference level; critical care (rarer)
    on every visit of a dataset that has at least 100 critical events.
    """
    from models.onnx_runtime import TriageOnnxModel
    from training.data import load_dataset

    model = TriageOnnxModel(record.onnx_path)
    thresholds = model.card.decision_rule.get("outcome_thresholds")
    if not thresholds:
        raise ModelArtifactError(f"{record.name} version {record.version} records no outcome operating thresholds "
                                 "in its model card (trained before they existed): retrain it with `vigil run`")
    audits = []
    for dataset, attributes in datasets:
        frame = load_dataset(dataset, data_dir).frame.reset_index(drop=True)
        pred = model.predict(frame)
        base = pd.DataFrame({
            "sex": frame["sex"].astype(str), "age_band": frame["age_band"].astype(str),
            "ethnicity": frame["ethnicity"].fillna("unknown").astype(str),
            "payer": frame["payer"].fillna("unknown").astype(str),
            "acuity_true": frame["acuity"].astype("float"), "acuity_pred": pred.recommended_level.astype(float),
        })
        outcomes = ("admitted", "critical") if int(frame["critical"].sum()) >= 100 else ("admitted",)
        for outcome in outcomes:
            p = pred.p_admitted if outcome == "admitted" else pred.p_critical
            f = base.assign(y_true=frame[outcome].astype(int).to_numpy(), y_score=p,
                            y_flag=(p >= thresholds[outcome]).astype(int))
            if outcome == "admitted":
                # Under-triage needs a reference level: audit the visits that have one.
                f = f[f["acuity_true"].notna()].reset_index(drop=True)
            else:
                f = f.drop(columns=["acuity_true", "acuity_pred"])
            audits.append((f"{dataset} {outcome}", f, list(attributes), [("sex", "age_band")]))
    return audits


def imaging_audit_frames(record: ModelVersionRecord, data_dir: Path | None,
                         ) -> list[tuple[str, pd.DataFrame, list[str], list[tuple[str, ...]]]]:
    """Study-level audit on NIH held-out patients: abnormal (any finding) vs flagged for second read."""
    from models.imaging_onnx import ImagingOnnxModel
    from training.data import resolve_data_dir
    from training.data.imaging import load_nih

    model = ImagingOnnxModel(record.onnx_path)
    seed = int(model.card.training["config"]["seed"])
    test = load_nih(resolve_data_dir(data_dir), model.image_size, seed).split("test")
    probs, _ = model.run(test.images)
    known = test.mask.max(axis=0) > 0  # the findings NIH labels
    flags = model.flags(probs)[:, known]
    abnormal = (test.labels[:, known] * test.mask[:, known]).max(axis=1)
    age = test.meta["age_years"]
    frame = pd.DataFrame({
        "y_true": abnormal.astype(int), "y_score": probs[:, known].max(axis=1),
        "y_flag": flags.any(axis=1).astype(int), "cluster": test.meta["patient_id"].to_numpy(),
        "sex": test.meta["sex"].astype(str), "view": test.meta["view"].astype(str),
        "age_band": pd.cut(age, [0, 39.999, 59.999, 79.999, 200], labels=["18-39", "40-59", "60-79", "80+"])
        .astype(str),
    })
    return [("nih study-level", frame, ["sex", "age_band", "view"], [("sex", "age_band")])]


def imaging_safety_films(model: Any, data_dir: Path | None) -> list[Path]:
    """Films for the imaging safety suite: the NIH images of the model's own validation patients (its patient
    split, never its test patients) and every file of ``imaging/dicom_fixtures/chest``."""
    from training.data import resolve_data_dir
    from training.data.imaging import NIH_DIR, nih_patient_split

    root = resolve_data_dir(data_dir)
    films: list[Path] = []
    table = root / NIH_DIR / "derived" / "nih1000_joined_labels_demographics.csv"
    if table.is_file():
        frame = pd.read_csv(table)
        seed = int(model.card.training["config"]["seed"])
        _, split = nih_patient_split(frame, seed)
        films += [root / NIH_DIR / p for p in frame.loc[split == "validation", "staged_path"]]
    else:
        log.warning("imaging safety suite without NIH validation films: %s not found", table)
    chest = root / "imaging" / "dicom_fixtures" / "chest"
    films += sorted(p for p in chest.glob("*") if p.is_file()) if chest.is_dir() else []
    if not films:
        raise SafetySuiteUnavailableError(f"no films for the imaging safety suite under {root} (NIH validation split "
                                          "or imaging/dicom_fixtures/chest)")
    return films


def run_safety_suite(onnx_path: Path, data_dir: Path | None = None, *, n_grid: int = SAFETY_N_GRID,
                     seed: int = 0) -> SafetyReport:
    """The safety-invariant suite of a triage or chest X-ray ONNX model (told apart by its card).

    Raises
    ------
    SafetySuiteUnavailableError
        An imaging model and no imaging suite in this build, or no films to run it on.
    ModelArtifactError
        The file is not a Vigil model.
    """
    from models.onnx_runtime import open_onnx_model

    _, card, _ = open_onnx_model(onnx_path)
    if "pixel_path_version" not in card.features:
        from evaluation.safety_triage import run_triage_safety_suite
        from models.onnx_runtime import TriageOnnxModel

        return run_triage_safety_suite(TriageOnnxModel(onnx_path), n_grid=n_grid, seed=seed)
    from models.imaging_onnx import ImagingOnnxModel

    try:
        from evaluation.safety_imaging import run_imaging_safety_suite
    except ImportError as exc:
        raise SafetySuiteUnavailableError("the imaging safety suite (evaluation.safety_imaging) is not in this "
                                          "build") from exc
    model = ImagingOnnxModel(onnx_path)
    return run_imaging_safety_suite(model, imaging_safety_films(model, data_dir), seed=seed)


def safety_check(report: SafetyReport | None, reason: str = "") -> Check:
    """Pass only when every invariant ran and held; a violation, or a suite that did not run, fails."""
    if report is None:
        return Check(SAFETY_CHECK, "fail", f"not run: {reason}")
    return Check(SAFETY_CHECK, "pass" if report.passed else "fail", report.summary())


def _group_summary(result: Any) -> dict[str, Any]:
    """Per attribute and group: n, positives, evaluation and point estimates (the card's 'metrics by group'); a
    group with insufficient evidence is listed as "not evaluated", never as a pass."""
    return card_groups(result)


def write_release_card(record: ModelVersionRecord, outcome: ReleaseOutcome, audits: dict[str, Any],
                       out_dir: Path, *, safety: SafetyReport | None = None, safety_reason: str = "") -> Path:
    """The model card (Mitchell et al. 2019) of this version, completed at release: the card shipped in the
    ONNX file (intended use, data, training, limitations) plus metrics by group, the safety invariants (each
    one's result, violations with examples) and the gate result."""
    from models.onnx_runtime import open_onnx_model

    checks = "\n".join(f"- **{c.status}** {c.name}: {c.reason}" for c in outcome.checks)
    safety_md = safety_card_section(safety, safety_reason)
    path = out_dir / "model_card.md"
    try:
        _, card, _ = open_onnx_model(record.onnx_path)
    except ModelArtifactError as exc:  # a tampered or corrupt artefact has no trustworthy card
        path.write_text(f"# Model card: {record.name} version {record.version}\n\nUnavailable: {exc}\n\n"
                        f"## Release gate\nStatus: {outcome.status}\n\n## Release gate checks\n\n{checks}\n\n"
                        f"{safety_md}",
                        encoding="utf-8")
        return path
    card.metrics = {**card.metrics, "test (training run)": {k: v for k, v in sorted(record.run_metrics.items())
                                                           if k.startswith("test.")},
                    "by_group": {name: _group_summary(result) for name, result in audits.items()}}
    card.release_gate = {"status": outcome.status, "promoted": outcome.promoted,
                         "checks": [c.__dict__ for c in outcome.checks],
                         "safety_invariants": safety.to_dict() if safety is not None
                         else {"status": "not run", "reason": safety_reason}}
    text = card.to_markdown() + "\n## Release gate checks\n\n" + checks + "\n\n" + safety_md
    path.write_text(text, encoding="utf-8")
    (out_dir / "model_card.json").write_text(card.to_json(), encoding="utf-8")
    return path


def release(ref: str, *, data_dir: Path | None = None, policy_path: Path = POLICY_PATH, n_boot: int | None = None,
            out_dir: Path | None = None,
            triage_data: tuple[tuple[str, tuple[str, ...]], ...] = TRIAGE_AUDIT_DATA,
            safety_n_grid: int = SAFETY_N_GRID) -> ReleaseOutcome:
    """Run every release check for ``ref`` (``NAME/VERSION`` or ``NAME@ALIAS``) and record the decision."""
    base = work_dir()
    policy = load_policy(policy_path)
    record = fetch_model_version(ref, base)
    out_dir = out_dir or base / "releases" / f"{record.name}-v{record.version}"
    out_dir.mkdir(parents=True, exist_ok=True)
    outcome = ReleaseOutcome(record.name, record.version, "fail")
    outcome.checks += artefact_checks(record)
    floors = policy.performance_floors.get(record.name)
    if not floors:
        outcome.checks.append(Check("performance floors", "fail", f"the policy sets no floors for {record.name}"))
    else:
        outcome.checks += floor_checks(record, dict(floors))
    if any(c.status == "fail" and c.name == "onnx checksum" for c in outcome.checks):
        frames = []  # never run a model whose bytes are not the registered ones
        outcome.checks.append(Check("fairness", "fail", "not audited: the ONNX file failed its checksum"))
    elif record.name not in ("vigil-triage", "vigil-cxr"):
        raise ModelArtifactError(f"no release procedure for model {record.name!r}")
    else:
        try:
            frames = (triage_audit_frames(record, data_dir, triage_data) if record.name == "vigil-triage"
                      else imaging_audit_frames(record, data_dir))
        except DataSourceError as exc:
            frames = []
            outcome.checks.append(Check("fairness", "insufficient evidence", f"evaluation data not available: {exc}"))
    gates: dict[str, Any] = {}
    audits_by_name: dict[str, Any] = {}
    for name, frame, attributes, intersections in frames:
        spec = AuditSpec(
            y_true="y_true", y_score="y_score", y_flag="y_flag", sensitive_attributes=attributes,
            acuity_true="acuity_true" if "acuity_true" in frame else None,
            acuity_pred="acuity_pred" if "acuity_pred" in frame else None,
            cluster="cluster" if "cluster" in frame else None, intersections=intersections,
            min_group_n=policy.min_group_n, min_group_positives=policy.min_group_positives,
            pool_adjacent=policy.pool_adjacent, n_boot=n_boot or 1000, alpha=policy.alpha, seed=0,
        )
        result = audit(frame, spec)
        judged = gate(result, policy)
        gates[name] = judged
        audits_by_name[name] = result
        slug = name.replace(":", "_").replace(" ", "_")
        outcome.reports += write_reports(result, judged, out_dir / slug, f"{record.name} v{record.version}: {name}")
        order = {"fail": 0, "insufficient evidence": 1}
        failing = sorted((c for c in judged.checks if c.status != "pass"), key=lambda c: order.get(c.status, 2))
        reason = "; ".join(c.reason for c in failing[:5]) or "every group within the policy's tolerances"
        outcome.checks.append(Check(f"fairness {name}", judged.status, reason))
    safety, safety_reason = None, ""
    if any(c.status == "fail" and c.name == "onnx checksum" for c in outcome.checks):
        safety_reason = "the ONNX file failed its checksum"
    else:
        try:
            safety = run_safety_suite(record.onnx_path, data_dir, n_grid=safety_n_grid)
        except SafetySuiteUnavailableError as exc:
            safety_reason = str(exc)
    outcome.checks.append(safety_check(safety, safety_reason))
    if safety is not None:
        outcome.reports += write_safety_report(safety, out_dir)
    statuses = {c.status for c in outcome.checks}
    outcome.status = "fail" if "fail" in statuses else ("insufficient evidence" if "insufficient evidence" in statuses
                                                       else "pass")
    outcome.promoted = outcome.status == "pass"
    outcome.reports.append(write_release_card(record, outcome, audits_by_name, out_dir, safety=safety,
                                              safety_reason=safety_reason))
    summary_path = out_dir / "release_decision.json"
    summary_path.write_text(json.dumps(outcome.to_dict(), indent=2, default=str), encoding="utf-8")
    outcome.reports.append(summary_path)
    summary = "; ".join(f"{c.name}: {c.status}" for c in outcome.checks)
    record_release_decision(base, record, status=outcome.status, policy_version=policy.policy_version, summary=summary,
                            reports=outcome.reports, promote=outcome.promoted,
                            extra_tags=safety_tags(safety, safety_reason))
    return outcome
