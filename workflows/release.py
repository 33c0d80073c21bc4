"""``vigil release``: the only way to the ``production`` alias.

For one registered model version: verify the artefact (checksum against the registry, the run's recorded ONNX
parity, never a model trained on synthetic data), check the performance floors, run the fairness audit on the
evaluation data, judge it with the versioned release policy, run the safety-invariant suite (any violation fails
the release), write the result as MLflow tags and a report, and move ``production`` only when every check passes.
Composes the packages; holds no metric logic.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.safety_report import safety_tags, write_safety_report
from fairness.audit import audit
from fairness.audit_spec import AuditSpec
from fairness.gate import gate
from fairness.policy import load_policy
from fairness.report import write_reports
from models.errors import DataSourceError, ModelArtifactError
from models.intended_use import FindingRelease
from models.registry import IMAGING_MODEL, MODEL_NAMES, Tag
from training.tracking import fetch_model_version, record_release_decision
from workflows.release_card import scope_card_section, write_release_card
from workflows.release_checks import (
    DECIDING,
    IMAGING_AUDIT_DATA,
    TRIAGE_AUDIT_DATA,
    Check,
    FindingDecision,
    ReleaseOutcome,
    artefact_checks,
    audit_scope,
    floor_checks,
    imaging_audit_frames,
    imaging_findings_decision,
    intended_use_of,
    non_inferiority_checks,
    production_record,
    triage_audit_frames,
)
from workflows.release_safety import (
    SAFETY_CHECK,
    SAFETY_KERMANY_FILMS,
    SAFETY_N_GRID,
    SafetySuiteUnavailableError,
    imaging_safety_film_set,
    imaging_safety_films,
    run_safety_suite,
    safety_check,
    unstable_findings,
)
from workflows.triage import work_dir

__all__ = [
    "DECIDING",
    "IMAGING_AUDIT_DATA",
    "POLICY_PATH",
    "SAFETY_CHECK",
    "SAFETY_KERMANY_FILMS",
    "SAFETY_N_GRID",
    "TRIAGE_AUDIT_DATA",
    "Check",
    "FindingDecision",
    "ReleaseOutcome",
    "SafetySuiteUnavailableError",
    "artefact_checks",
    "audit_scope",
    "floor_checks",
    "imaging_audit_frames",
    "imaging_findings_decision",
    "imaging_safety_film_set",
    "imaging_safety_films",
    "intended_use_of",
    "non_inferiority_checks",
    "production_record",
    "release",
    "run_safety_suite",
    "safety_check",
    "scope_card_section",
    "triage_audit_frames",
    "unstable_findings",
    "write_release_card",
]

log = logging.getLogger(__name__)

POLICY_PATH = Path(__file__).resolve().parents[1] / "fairness" / "release_policy.yaml"


def release(
    ref: str,
    *,
    data_dir: Path | None = None,
    policy_path: Path = POLICY_PATH,
    n_boot: int | None = None,
    out_dir: Path | None = None,
    triage_data: tuple[tuple[str, tuple[str, ...]], ...] = TRIAGE_AUDIT_DATA,
    safety_n_grid: int = SAFETY_N_GRID,
) -> ReleaseOutcome:
    """Run every release check for ``ref`` (``NAME/VERSION`` or ``NAME@ALIAS``) and record the decision."""
    base = work_dir()
    policy = load_policy(policy_path)
    record = fetch_model_version(ref, base)
    out_dir = out_dir or base / "releases" / f"{record.name}-v{record.version}"
    out_dir.mkdir(parents=True, exist_ok=True)
    outcome = ReleaseOutcome(record.name, record.version, "fail")
    outcome.checks += artefact_checks(record)
    if record.name not in MODEL_NAMES:
        raise ModelArtifactError(f"no release procedure for model {record.name!r}")
    tampered = any(c.status == "fail" and c.name == "onnx checksum" for c in outcome.checks)
    imaging = record.name == IMAGING_MODEL
    floors = policy.performance_floors.get(record.name)
    decision: FindingDecision | None = None
    if not floors:
        outcome.checks.append(Check("performance floors", "fail", f"the policy sets no floors for {record.name}"))
    elif imaging and not tampered:
        from models.onnx_file import open_onnx_model

        findings = tuple(open_onnx_model(record.onnx_path)[1].features["findings"])
        floor_results = floor_checks(record, dict(floors))
        decision = imaging_findings_decision(record, policy, findings, floor_results)
        # A floor decides its finding only (FindingDecision), not the model.
        outcome.checks += [
            dataclasses.replace(c, status="not released") if c.status == "fail" else c for c in floor_results
        ]
    else:
        outcome.checks += floor_checks(record, dict(floors))
    frames: list[tuple[str, pd.DataFrame, list[str], list[tuple[str, ...]], Any]] = []
    if tampered:
        outcome.checks.append(Check("fairness", "fail", "not audited: the ONNX file failed its checksum"))
    elif decision is not None:
        for data in sorted(set(decision.validated_on.values())):
            mine = tuple(f for f, d in decision.validated_on.items() if d == data and f not in decision.not_released)
            if not mine:
                outcome.checks.append(
                    Check(f"fairness {data}", "not run", "no finding validated on it passed its floor")
                )
            elif data not in IMAGING_AUDIT_DATA:
                why = (
                    f"insufficient evidence: the {data} data record no sex or age per image, so the policy's "
                    f"required attributes ({', '.join(policy.required_attributes)}) cannot be audited"
                )
                outcome.checks.append(Check(f"fairness {data}", "not released", f"{', '.join(mine)}: {why}"))
                for f in mine:
                    decision.not_released[f] = f"fairness audit {why}"
            else:
                try:
                    frames += [
                        (name, frame, attrs, inter, mine)
                        for name, frame, attrs, inter in imaging_audit_frames(record, data_dir, mine)
                    ]
                except DataSourceError as exc:
                    outcome.checks.append(
                        Check(f"fairness {data}", "not released", f"evaluation data not available: {exc}")
                    )
                    for f in mine:
                        decision.not_released[f] = f"fairness audit not run: evaluation data not available ({exc})"
    else:
        try:
            frames = [
                (*f, None)
                for f in (
                    triage_audit_frames(record, data_dir, triage_data)
                    if not imaging
                    else imaging_audit_frames(record, data_dir)
                )
            ]
        except DataSourceError as exc:
            outcome.checks.append(Check("fairness", "insufficient evidence", f"evaluation data not available: {exc}"))
    # Family-wise control over the whole release: alpha is split equally across the audits that gate it.
    gated = [f for f in frames if audit_scope(policy, record.name, f[0].split(" ")[0]) is None]
    audit_policy = dataclasses.replace(policy, alpha=policy.alpha / max(1, len(gated)))
    gates: dict[str, Any] = {}
    audits_by_name: dict[str, Any] = {}
    for name, frame, attributes, intersections, finding_set in frames:
        outside = audit_scope(policy, record.name, name.split(" ")[0])
        spec = AuditSpec(
            y_true="y_true",
            y_score="y_score",
            y_flag="y_flag",
            sensitive_attributes=attributes,
            acuity_true="acuity_true" if "acuity_true" in frame else None,
            acuity_pred="acuity_pred" if "acuity_pred" in frame else None,
            cluster="cluster" if "cluster" in frame else None,
            intersections=intersections,
            min_group_n=policy.min_group_n,
            min_group_positives=policy.min_group_positives,
            pool_adjacent=policy.pool_adjacent,
            n_boot=n_boot or 1000,
            alpha=audit_policy.alpha,
            seed=0,
        )
        result = audit(frame, spec)
        judged = gate(result, audit_policy)
        gates[name] = judged
        audits_by_name[name] = result
        slug = name.replace(":", "_").replace(" ", "_")
        outcome.reports += write_reports(result, judged, out_dir / slug, f"{record.name} v{record.version}: {name}")
        order = {"fail": 0, "insufficient evidence": 1}
        failing = sorted((c for c in judged.checks if c.status != "pass"), key=lambda c: order.get(c.status, 2))
        reason = "; ".join(c.reason for c in failing[:5]) or "every group within the policy's tolerances"
        reason += (
            f" (family-wise alpha {audit_policy.alpha:g}: {policy.alpha:g} over {max(1, len(gated))} gated audits)"
        )
        if outside is not None:
            outcome.checks.append(
                Check(f"fairness {name}", "reported", f"{judged.status}, not gating: {outside.rstrip('.')}. {reason}")
            )
        elif finding_set is not None and decision is not None:
            status = "pass" if judged.status == "pass" else "not released"
            outcome.checks.append(
                Check(f"fairness {name}", status, f"{', '.join(finding_set)}: {judged.status}: {reason}")
            )
            if judged.status != "pass":
                for f in finding_set:
                    decision.not_released[f] = f"fairness audit {name}: {judged.status}"
        else:
            outcome.checks.append(Check(f"fairness {name}", judged.status, reason))
    comparisons: list[Any] = []
    production = None if tampered or policy.non_inferiority is None else production_record(record.name, base)
    if production is not None and production.version != record.version and frames:
        try:
            ni_checks, comparisons = non_inferiority_checks(
                record, policy, production, frames, data_dir, triage_data, n_boot or 1000
            )
        except (DataSourceError, ModelArtifactError, ValueError) as exc:
            ni_checks = [
                Check(
                    "non-inferiority", "fail", f"production version {production.version} could not be compared: {exc}"
                )
            ]
        outcome.checks += ni_checks
    finding_release: FindingRelease | None = None
    safety, safety_reason = None, ""
    if decision is not None and decision.released and not tampered:
        # Per finding, the stability invariants too: a finding whose flag or probability a routine window,
        # contrast or orientation change moves is not released; the suite is run again on what remains.
        try:
            safety = run_safety_suite(
                record.onnx_path,
                data_dir,
                n_grid=safety_n_grid,
                release=decision.release(),
                validated_on=decision.validated_on,
            )
        except SafetySuiteUnavailableError as exc:
            safety_reason = str(exc)
        unstable = unstable_findings(safety) if safety is not None else {}
        for f, why in unstable.items():
            decision.not_released[f] = why
        if unstable and decision.released:
            safety = None  # run again below on the findings that remain
    if decision is not None:
        finding_release = decision.release()
        for f in findings:
            outcome.checks.append(
                Check(
                    f"finding {f}",
                    "pass" if f in finding_release.released else "not released",
                    f"released for {decision.populations[f].description}"
                    if f in finding_release.released
                    else decision.not_released[f],
                )
            )
        if not finding_release.released:
            outcome.checks.append(
                Check(
                    "released findings",
                    "fail",
                    "no finding passed its floor, its population's "
                    "fairness audit, its stability invariants and "
                    "has a declared intended use",
                )
            )
    if tampered:
        safety_reason = "the ONNX file failed its checksum"
    elif safety is None and not safety_reason:
        suite_release = finding_release
        if decision is not None and not decision.released:
            # Nothing to release: run the suite as if every declared finding were released in its population, so
            # the card still says how the model behaves.
            suite_release = FindingRelease(dict(decision.populations), {})
        try:
            safety = run_safety_suite(
                record.onnx_path,
                data_dir,
                n_grid=safety_n_grid,
                release=suite_release,
                validated_on=decision.validated_on if decision is not None else None,
            )
        except SafetySuiteUnavailableError as exc:
            safety_reason = str(exc)
    outcome.checks.append(safety_check(safety, safety_reason))
    if safety is not None:
        outcome.reports += write_safety_report(safety, out_dir)
    statuses = {c.status for c in outcome.checks if c.status in DECIDING}
    outcome.status = (
        "fail" if "fail" in statuses else ("insufficient evidence" if "insufficient evidence" in statuses else "pass")
    )
    outcome.promoted = outcome.status == "pass"
    use = intended_use_of(policy, record.name)
    outcome.reports.append(
        write_release_card(
            record,
            outcome,
            audits_by_name,
            out_dir,
            safety=safety,
            safety_reason=safety_reason,
            use=use,
            findings=finding_release,
            comparisons=comparisons,
            production_version=production.version if production else None,
        )
    )
    summary_path = out_dir / "release_decision.json"
    summary_path.write_text(json.dumps(outcome.to_dict(), indent=2, default=str), encoding="utf-8")
    outcome.reports.append(summary_path)
    summary = "; ".join(f"{c.name}: {c.status}" for c in outcome.checks)
    tags = dict(safety_tags(safety, safety_reason))
    if use is not None:
        tags[Tag.GATE_INTENDED_USE] = use.to_json()
    if finding_release is not None:
        tags[Tag.GATE_FINDINGS] = finding_release.to_json()
    record_release_decision(
        base,
        record,
        status=outcome.status,
        policy_version=policy.policy_version,
        summary=summary,
        reports=outcome.reports,
        promote=outcome.promoted,
        extra_tags=tags,
    )
    return outcome
