"""The release gate's evidence, one check at a time: the artefact (checksum, parity, synthetic data), the
performance floors, the fairness-audit frames of each model, the intended use and the finding-level decision of
an imaging model, and non-inferiority against the version in production. Used by :func:`workflows.release.release`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairness.policy import ReleasePolicy
from models.errors import ModelArtifactError
from models.intended_use import FindingRelease, IntendedUse, Population
from models.onnx_file import sha256_file
from models.registry import IMAGING_MODEL, TRIAGE_MODEL, Tag, parse_metric_key
from training.tracking import ModelVersionRecord, fetch_model_version
from workflows.triage import PARITY_TOLERANCE

log = logging.getLogger(__name__)


@dataclass
class Check:
    """One release check: data, never an exception."""

    name: str
    status: str  # pass | fail | insufficient evidence; or, never deciding: reported | not released | not run
    reason: str


#: Check statuses that decide the release; the others are information (an audit outside the intended use, a finding
#: that is not released while others are, an audit with nothing to audit).
DECIDING = ("pass", "fail", "insufficient evidence")


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
        return {
            "model": self.model,
            "version": self.version,
            "status": self.status,
            "promoted": self.promoted,
            "checks": [c.__dict__ for c in self.checks],
            "reports": [str(p) for p in self.reports],
        }


def artefact_checks(record: ModelVersionRecord) -> list[Check]:
    """Checksum against the registry, ONNX parity recorded at export, and real (not synthetic) training data."""
    checks = []
    expected = record.tags.get(Tag.ONNX_SHA256) or record.run_tags.get(Tag.ONNX_SHA256)
    actual = sha256_file(record.onnx_path)
    checks.append(
        Check(
            "onnx checksum",
            "pass" if expected == actual else "fail",
            "ONNX file matches the registry's sha256"
            if expected == actual
            else f"ONNX sha256 {actual[:12]}... does not match the registry's {str(expected)[:12]}...",
        )
    )
    parity = record.run_metrics.get("parity_max_abs_diff")
    ok = parity is not None and parity <= PARITY_TOLERANCE
    checks.append(
        Check(
            "onnx parity",
            "pass" if ok else "fail",
            f"max |onnxruntime - torch| at export {parity:.1e} (tolerance {PARITY_TOLERANCE:g})"
            if parity is not None
            else "the run recorded no ONNX parity check",
        )
    )
    synthetic = record.run_tags.get(Tag.SYNTHETIC_DATA, "true") != "false"
    checks.append(
        Check(
            "real training data",
            "fail" if synthetic else "pass",
            "trained on synthetic data: never released" if synthetic else "trained on real data",
        )
    )
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
            checks.append(
                Check(
                    f"floor {metric}",
                    "pass" if ok else "fail",
                    f"{metric} = {value:.3f} ({'>=' if ok else '<'} floor {minimum})",
                )
            )
    return checks


#: Evaluation data of the triage audit and the sensitive attributes each holds.
TRIAGE_AUDIT_DATA: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("nhamcs:2020", ("sex", "age_band", "ethnicity", "payer")),
    ("ktas", ("sex", "age_band")),
)


def triage_audit_frames(
    record: ModelVersionRecord,
    data_dir: Path | None,
    datasets: tuple[tuple[str, tuple[str, ...]], ...] = TRIAGE_AUDIT_DATA,
) -> list[tuple[str, pd.DataFrame, list[str], list[tuple[str, ...]]]]:
    """(name, frame, sensitive attributes, intersections) for each triage audit.

    Admission is audited with under-triage on the visits that have a reference level; critical care (rarer)
    on every visit of a dataset that has at least 100 critical events.
    """
    from models.triage.onnx import TriageOnnxModel
    from training.data import load_dataset

    model = TriageOnnxModel(record.onnx_path)
    thresholds = model.card.decision_rule.get("outcome_thresholds")
    if not thresholds:
        raise ModelArtifactError(
            f"{record.name} version {record.version} records no outcome operating thresholds "
            "in its model card (trained before they existed): retrain it with `vigil run`"
        )
    audits: list[tuple[str, pd.DataFrame, list[str], list[tuple[str, ...]]]] = []
    for dataset, attributes in datasets:
        frame = load_dataset(dataset, data_dir).frame.reset_index(drop=True)
        pred = model.predict(frame)
        base = pd.DataFrame(
            {
                "sex": frame["sex"].astype(str),
                "age_band": frame["age_band"].astype(str),
                "ethnicity": frame["ethnicity"].fillna("unknown").astype(str),
                "payer": frame["payer"].fillna("unknown").astype(str),
                "acuity_true": frame["acuity"].astype("float"),
                "acuity_pred": pred.recommended_level.astype(float),
            }
        )
        outcomes = ("admitted", "critical") if int(frame["critical"].sum()) >= 100 else ("admitted",)
        for outcome in outcomes:
            p = pred.p_admitted if outcome == "admitted" else pred.p_critical
            f = base.assign(
                y_true=frame[outcome].astype(int).to_numpy(), y_score=p, y_flag=(p >= thresholds[outcome]).astype(int)
            )
            if outcome == "admitted":
                # Under-triage needs a reference level: audit the visits that have one.
                f = f[f["acuity_true"].notna()].reset_index(drop=True)
            else:
                f = f.drop(columns=["acuity_true", "acuity_pred"])
            audits.append((f"{dataset} {outcome}", f, list(attributes), [("sex", "age_band")]))
    return audits


def imaging_audit_frames(
    record: ModelVersionRecord,
    data_dir: Path | None,
    findings: tuple[str, ...] | None = None,
    *,
    seed: int | None = None,
) -> list[tuple[str, pd.DataFrame, list[str], list[tuple[str, ...]]]]:
    """Study-level audit on NIH held-out patients: abnormal (any of ``findings``, default every finding NIH labels)
    vs flagged for second read by those findings."""
    from models.imaging.onnx import ImagingOnnxModel
    from training.data import resolve_data_dir
    from training.data.imaging import load_nih

    model = ImagingOnnxModel(record.onnx_path)
    seed = int(model.card.training["config"]["seed"]) if seed is None else seed
    test = load_nih(resolve_data_dir(data_dir), model.image_size, seed).split("test")
    probs, _ = model.run(test.images)
    known = test.mask.max(axis=0) > 0  # the findings NIH labels
    if findings is not None:
        known &= np.isin(model.findings, findings)
    flags = model.flags(probs)[:, known]
    abnormal = (test.labels[:, known] * test.mask[:, known]).max(axis=1)
    age = test.meta["age_years"]
    frame = pd.DataFrame(
        {
            "y_true": abnormal.astype(int),
            "y_score": probs[:, known].max(axis=1),
            "y_flag": flags.any(axis=1).astype(int),
            "cluster": test.meta["patient_id"].to_numpy(),
            "sex": test.meta["sex"].astype(str),
            "view": test.meta["view"].astype(str),
            "age_band": pd.cut(age, [0, 39.999, 59.999, 79.999, 200], labels=["18-39", "40-59", "60-79", "80+"]).astype(
                str
            ),
        }
    )
    return [("nih study-level", frame, ["sex", "age_band", "view"], [("sex", "age_band")])]


def audit_scope(policy: ReleasePolicy, model_name: str, dataset: str) -> str | None:
    """None when ``dataset`` is inside the model's intended use (its audits gate the release); otherwise the
    reason it is outside (its audits are reported as "not validated for" and never gate)."""
    use = policy.intended_use.get(model_name)
    outside = {o.name: o for o in use.not_validated_for} if use is not None else {}
    if dataset in outside:
        return f"outside the intended use ({outside[dataset].population}): {outside[dataset].reason}"
    return None


def intended_use_of(policy: ReleasePolicy, model_name: str) -> IntendedUse | None:
    """The intended use the release records on the version (``release_gate.intended_use``), from the policy."""
    use = policy.intended_use.get(model_name)
    if use is None:
        return None
    return IntendedUse(
        use.population,
        tuple({"name": o.name, "population": o.population, "reason": o.reason} for o in use.not_validated_for),
    )


#: Imaging evaluation data with per-image demographics (:func:`imaging_audit_frames`); a finding validated on other
#: data cannot have its fairness audited.
IMAGING_AUDIT_DATA = ("nih",)


@dataclass
class FindingDecision:
    """The gate's per-finding decision for a chest X-ray model: each finding's population, the data it was validated
    on, and, for each finding not released, why."""

    populations: dict[str, Population]
    validated_on: dict[str, str]
    not_released: dict[str, str]

    @property
    def released(self) -> dict[str, Population]:
        return {f: p for f, p in self.populations.items() if f not in self.not_released}

    def release(self) -> FindingRelease:
        return FindingRelease(self.released, dict(self.not_released))


def imaging_findings_decision(
    record: ModelVersionRecord, policy: ReleasePolicy, findings: tuple[str, ...], checks: list[Check] | None = None
) -> FindingDecision:
    """Floors and intended populations per finding (fairness is added by :func:`release`).

    A finding is a candidate when the policy declares its intended population and every floor the policy sets on
    it holds (``test.<data>.<finding>.<metric>``; ``<data>`` is the data it was validated on). A finding the policy
    gives no population or no floor is not released. ``checks``: the :func:`floor_checks` of the whole policy,
    when the caller has them already.
    """
    use = policy.intended_use.get(record.name)
    declared = dict(use.findings) if use is not None else {}
    floors = dict(policy.performance_floors.get(record.name, {}))
    by_name = {c.name: c for c in (checks if checks is not None else floor_checks(record, floors))}
    decision = FindingDecision({}, {}, {})
    for finding in findings:
        mine = {k: v for k, v in floors.items() if parse_metric_key(IMAGING_MODEL, k).target == finding}
        spec = declared.get(finding)
        if spec is not None:
            decision.populations[finding] = Population.from_dict(spec)
        if mine:
            decision.validated_on[finding] = next(iter(mine)).split(".")[1]
        if spec is None:
            decision.not_released[finding] = "the release policy declares no intended population for it"
        elif not mine:
            decision.not_released[finding] = "the release policy sets no performance floor for it"
        failed = [c for c in (by_name[f"floor {metric}"] for metric in mine) if c.status != "pass"]
        if mine and failed:
            decision.not_released.setdefault(
                finding, "below its performance floor: " + "; ".join(c.reason for c in failed)
            )
    return decision


def production_record(name: str, base: Path) -> ModelVersionRecord | None:
    """The version at ``@production``, or None when there is none."""
    try:
        return fetch_model_version(f"{name}@production", base)
    except ModelArtifactError as exc:
        if "registry has no model version" in str(exc):
            return None
        raise


def non_inferiority_checks(
    record: ModelVersionRecord,
    policy: ReleasePolicy,
    production: ModelVersionRecord,
    frames: list[tuple[str, pd.DataFrame, list[str], list[tuple[str, ...]], Any]],
    data_dir: Path | None,
    triage_data: tuple[tuple[str, tuple[str, ...]], ...],
    n_boot: int,
) -> tuple[list[Check], list[Any]]:
    """The candidate against ``production`` on the rows of each gated audit (:mod:`evaluation.noninferiority`)."""
    from evaluation.noninferiority import compare

    assert policy.non_inferiority is not None
    if record.name == TRIAGE_MODEL:
        theirs = {name: frame for name, frame, *_ in triage_audit_frames(production, data_dir, triage_data)}
    else:
        from models.onnx_file import open_onnx_model

        seed = int(open_onnx_model(record.onnx_path)[1].training["config"]["seed"])
        theirs = {}
        for _, _, _, _, findings in frames:
            theirs.update({n: f for n, f, *_ in imaging_audit_frames(production, data_dir, findings, seed=seed)})
    checks, comparisons = [], []
    for name, frame, attributes, _, _ in frames:
        if audit_scope(policy, record.name, name.split(" ")[0]) is not None:
            continue
        other = theirs.get(name)
        if (
            other is None
            or len(other) != len(frame)
            or not (other["y_true"].to_numpy() == frame["y_true"].to_numpy()).all()
        ):
            checks.append(
                Check(
                    f"non-inferiority {name}",
                    "fail",
                    f"production version {production.version} could not be scored on the same rows",
                )
            )
            continue
        joined = frame.assign(y_score_prod=other["y_score"].to_numpy())
        if "acuity_pred" in other:
            joined = joined.assign(acuity_pred_prod=other["acuity_pred"].to_numpy())
        result = compare(
            name,
            joined,
            attributes=attributes,
            auroc_margin=policy.non_inferiority.auroc_margin,
            under_triage_tolerance=policy.non_inferiority.under_triage_tolerance,
            alpha=policy.alpha,
            n_boot=n_boot,
            min_group_n=policy.min_group_n,
        )
        comparisons.append(result)
        checks.append(
            Check(
                f"non-inferiority {name}",
                "pass" if result.passed else "fail",
                f"against production version {production.version}: {result.reason()}",
            )
        )
    return checks, comparisons
