"""Monitoring after release, first part: what the service answered in a period, and, once outcomes are fed back,
how it did for every group, judged by the release gate's own audit and rules.

:func:`monitor` reads the store (:meth:`serving.store.predictions.PredictionReader.read_predictions`: answered
triage predictions of the period, the coarse groups kept beside each, the outcome fed back for it) and gives, per
model version:

* volume, recommended levels, how often the NEWS2 floor or any safety-floor rule raised the level, inputs missing,
  and counts per group (sex, age band, ethnicity, site);
* with outcomes: the fairness audit of :func:`fairness.audit.audit` (per-group AUROC, calibration as
  observed/expected and ECE, under-triage against the senior clinician's final acuity, each with its bootstrap
  interval) judged by :func:`fairness.gate.gate` under the release policy, so "worse than the release gate allows"
  has one meaning before and after release. Admission and critical care are audited on the predictions whose
  outcome gives them; under-triage on those that also give a final acuity;

and per imaging model version: second reads, flag rates per finding and, against the radiologists' reads fed back,
sensitivity and specificity at the operating threshold (Wilson intervals).

Per triage version it also estimates the AUROC before outcomes arrive, from the calibrated scores
(:func:`evaluation.metrics.discrimination.expected_auroc`, as NannyML's CBPE; valid under covariate shift only),
overall and per group, beside the measured AUROC where outcomes exist.

Not built yet (issue 18): drift against the training distribution, imaging monitoring by group, alerts, the review
page. Decision support: these figures inform a clinical safety officer;
they do not act on their own.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evaluation.metrics.decision import wilson_interval
from evaluation.metrics.discrimination import auroc, expected_auroc
from fairness.audit import audit
from fairness.audit_spec import AuditSpec
from fairness.gate import gate
from fairness.policy import ReleasePolicy
from serving.store.predictions import PredictionRow

log = logging.getLogger(__name__)

__all__ = [
    "GROUP_ATTRIBUTES",
    "ImagingSummary",
    "MonitoringReport",
    "VersionSummary",
    "monitor",
]

#: The groups monitoring reports on (kept beside each triage prediction by the service).
GROUP_ATTRIBUTES = ("sex", "age_band", "ethnicity", "site")
_UNKNOWN = "unknown"


@dataclass
class VersionSummary:
    """What one model version answered in the period, and (with outcomes) its audits and their verdicts."""

    model: str
    version: str
    n: int = 0
    levels: Counter[int] = field(default_factory=Counter)
    news2_floor_raised: int = 0
    safety_floor_raised: int = 0
    missing_inputs: Counter[str] = field(default_factory=Counter)
    groups: dict[str, Counter[str]] = field(default_factory=lambda: {a: Counter() for a in GROUP_ATTRIBUTES})
    n_with_outcome: int = 0
    audits: dict[str, dict[str, Any]] = field(default_factory=dict)
    estimated: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        rate = (lambda k: k / self.n) if self.n else (lambda k: None)
        return {
            "model": self.model,
            "version": self.version,
            "n_predictions": self.n,
            "levels": {str(level): self.levels[level] for level in range(1, 6)},
            "news2_floor_raised_rate": rate(self.news2_floor_raised),
            "safety_floor_raised_rate": rate(self.safety_floor_raised),
            "missing_input_rate": {name: rate(k) for name, k in sorted(self.missing_inputs.items())},
            "groups": {a: dict(sorted(c.items())) for a, c in self.groups.items()},
            "n_with_outcome": self.n_with_outcome,
            "estimated_auroc": self.estimated,
            "audits": self.audits,
        }


_COUNTS = ("evaluated", "flagged", "read", "tp", "fn", "fp", "tn")


@dataclass
class ImagingSummary:
    """What one imaging model version read in the period: flag rates per finding and, against the radiologists'
    reads fed back, sensitivity and specificity at the operating threshold with Wilson 95% intervals. Only findings
    evaluated on the image count (a finding the gate did not release is never flagged: its truth says nothing about
    the service)."""

    model: str
    version: str
    n: int = 0
    flagged: int = 0
    findings: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, output: dict[str, Any], truth: dict[str, int]) -> None:
        self.n += 1
        self.flagged += bool(output.get("flagged"))
        for finding in output.get("findings", []):
            if finding.get("probability") is None:
                continue
            name, flag = finding["finding"], bool(finding["flagged"])
            counts = self.findings.setdefault(name, Counter({k: 0 for k in _COUNTS}))
            counts["evaluated"] += 1
            counts["flagged"] += flag
            if name in truth:
                counts["read"] += 1
                counts[("tp" if flag else "fn") if truth[name] else ("fp" if flag else "tn")] += 1

    def to_dict(self) -> dict[str, Any]:
        def proportion(k: int, n: int) -> dict[str, Any]:
            low, high = wilson_interval(k, n)
            return {"estimate": k / n if n else None, "low": _finite(low), "high": _finite(high), "n": n}

        return {
            "model": self.model,
            "version": self.version,
            "n_second_reads": self.n,
            "flagged_rate": self.flagged / self.n if self.n else None,
            "findings": {
                name: {
                    "n_evaluated": c["evaluated"],
                    "flag_rate": c["flagged"] / c["evaluated"],
                    "n_read_by_radiologist": c["read"],
                    "sensitivity": proportion(c["tp"], c["tp"] + c["fn"]),
                    "specificity": proportion(c["tn"], c["tn"] + c["fp"]),
                }
                for name, c in sorted(self.findings.items())
            },
        }


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else value


@dataclass(frozen=True)
class MonitoringReport:
    """:func:`monitor`'s result; ``to_dict`` is the JSON report; :attr:`breaches` what failed the release policy."""

    since: str
    until: str
    policy_version: str
    n_predictions: int
    versions: tuple[VersionSummary, ...]
    imaging: tuple[ImagingSummary, ...] = ()

    @property
    def breaches(self) -> list[str]:
        """``"<model> v<version> <audit>: <reason>"`` for every check of the period's audits that failed."""
        return [
            f"{v.model} v{v.version} {name}: {reason}"
            for v in self.versions
            for name, found in v.audits.items()
            for reason in found["breaches"]
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "policy_version": self.policy_version,
            "n_predictions": self.n_predictions,
            "versions": [v.to_dict() for v in self.versions],
            "imaging": [v.to_dict() for v in self.imaging],
            "breaches": self.breaches,
            "decision_support": "Monitoring figures for a clinical safety officer; they do not act on their own.",
        }


def _triage_row(row: PredictionRow) -> dict[str, Any] | None:
    """The monitoring columns of one triage answer (None for anything else: a second read)."""
    out = row.output
    if "acuity" not in out or "risks" not in out:
        return None
    groups = row.groups or {}
    outcome = row.outcome if row.outcome_task == "triage" else None
    record: dict[str, Any] = {
        "level": int(out["acuity"]["level"]),
        "p_admitted": float(out["risks"]["admitted"]["probability"]),
        "p_critical": float(out["risks"]["critical"]["probability"]),
        **{a: groups.get(a) or _UNKNOWN for a in GROUP_ATTRIBUTES},
        "admitted": np.nan,
        "critical": np.nan,
        "final_acuity": np.nan,
    }
    if outcome is not None:
        if outcome.get("admitted") is not None:
            record["admitted"] = float(outcome["admitted"])
        died = outcome.get("died_in_ed")
        if outcome.get("critical_care") is not None or died is not None:
            record["critical"] = float(bool(outcome.get("critical_care")) or bool(died))
        if outcome.get("final_acuity") is not None:
            record["final_acuity"] = float(outcome["final_acuity"])
    return record


def _summarise(summary: VersionSummary, row: PredictionRow, record: dict[str, Any]) -> None:
    flags = row.output.get("flags", {})
    summary.n += 1
    summary.levels[record["level"]] += 1
    summary.news2_floor_raised += bool(flags.get("news2_floor_raised_level"))
    summary.safety_floor_raised += bool(flags.get("safety_floor_raised_level"))
    summary.missing_inputs.update(flags.get("missing_inputs", []))
    for attribute in GROUP_ATTRIBUTES:
        summary.groups[attribute][record[attribute]] += 1
    summary.n_with_outcome += any(not np.isnan(record[k]) for k in ("admitted", "critical", "final_acuity"))


_ESTIMATE_NOTE = (
    "expected AUROC from the calibrated scores of every prediction (confidence-based performance estimation, as "
    "NannyML's CBPE): valid only while the scores stay calibrated for these patients (a changed population, not a "
    "changed relation of outcome to inputs); 'measured' is the AUROC on the predictions with that outcome fed back"
)


def _estimates(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per outcome: the expected AUROC overall and per group, beside the measured one where outcomes exist."""
    found: dict[str, dict[str, Any]] = {}
    for outcome, score in (("admitted", "p_admitted"), ("critical", "p_critical")):
        known = frame[frame[outcome].notna()]
        measured = auroc(known[outcome].astype(int), known[score]) if len(known) else float("nan")
        found[outcome] = {
            "estimated": _finite(expected_auroc(frame[score])),
            "measured": _finite(measured),
            "n_measured": len(known),
            "by_group": {
                attribute: {
                    str(group): _finite(expected_auroc(rows[score])) for group, rows in frame.groupby(attribute)
                }
                for attribute in GROUP_ATTRIBUTES
            },
            "note": _ESTIMATE_NOTE,
        }
    return found


def _audits(frame: pd.DataFrame, policy: ReleasePolicy, n_boot: int) -> dict[str, dict[str, Any]]:
    """The fairness audits the outcomes allow, each judged by the release gate under ``policy``."""
    plans: list[tuple[str, pd.DataFrame, str, bool]] = []
    for outcome, score in (("admitted", "p_admitted"), ("critical", "p_critical")):
        known = frame[frame[outcome].notna()]
        if len(known):
            plans.append((outcome, known, score, False))
    triaged = frame[frame["admitted"].notna() & frame["final_acuity"].notna()]
    if len(triaged):
        plans.append(("under-triage", triaged, "p_admitted", True))
    if not plans:
        return {}
    # Family-wise control across the period's audits, as the release gate splits alpha across its audits.
    audit_policy = dataclasses.replace(policy, alpha=policy.alpha / len(plans))
    found: dict[str, dict[str, Any]] = {}
    for name, rows, score, acuity in plans:
        y = "critical" if name == "critical" else "admitted"
        data = pd.DataFrame(
            {
                "y_true": rows[y].astype(int).to_numpy(),
                "y_score": rows[score].to_numpy(),
                **{a: rows[a].astype(str).to_numpy() for a in GROUP_ATTRIBUTES},
                **(
                    {
                        "acuity_true": rows["final_acuity"].to_numpy(),
                        "acuity_pred": rows["level"].astype(float).to_numpy(),
                    }
                    if acuity
                    else {}
                ),
            }
        )
        spec = AuditSpec(
            y_true="y_true",
            y_score="y_score",
            sensitive_attributes=GROUP_ATTRIBUTES,
            acuity_true="acuity_true" if acuity else None,
            acuity_pred="acuity_pred" if acuity else None,
            intersections=[("sex", "age_band")],
            min_group_n=policy.min_group_n,
            min_group_positives=policy.min_group_positives,
            pool_adjacent=policy.pool_adjacent,
            n_boot=n_boot,
            alpha=audit_policy.alpha,
            seed=0,
        )
        result = audit(data, spec)
        verdict = gate(result, audit_policy)
        for check in verdict.failures:
            log.warning("monitoring: %s breaches the release policy %s: %s", name, policy.policy_version, check.reason)
        found[name] = {
            "n": len(data),
            "gate_status": verdict.status,
            "breaches": [c.reason for c in verdict.failures],
            "audit": result.to_dict(),
        }
    return found


def monitor(
    rows: Iterable[PredictionRow], since: str, until: str, policy: ReleasePolicy, *, n_boot: int = 500
) -> MonitoringReport:
    """The monitoring report of the triage predictions and second reads in ``rows`` (from
    :meth:`serving.store.predictions.PredictionReader.read_predictions` for ``since``..``until``), judged under
    ``policy`` (the release policy)."""
    summaries: dict[tuple[str, str], VersionSummary] = {}
    frames: dict[tuple[str, str], list[dict[str, Any]]] = {}
    imaging: dict[tuple[str, str], ImagingSummary] = {}
    for row in rows:
        key = (row.model_name, row.model_version)
        record = _triage_row(row)
        if record is None:
            if "findings" in row.output:
                truth = (row.outcome or {}).get("findings", {}) if row.outcome_task == "imaging" else {}
                imaging.setdefault(key, ImagingSummary(*key)).add(row.output, truth)
            continue
        summary = summaries.setdefault(key, VersionSummary(*key))
        _summarise(summary, row, record)
        frames.setdefault(key, []).append(record)
    for key, summary in summaries.items():
        frame = pd.DataFrame(frames[key])
        summary.estimated = _estimates(frame)
        summary.audits = _audits(frame, policy, n_boot)
    ordered = tuple(summaries[k] for k in sorted(summaries))
    reads = tuple(imaging[k] for k in sorted(imaging))
    return MonitoringReport(since, until, policy.policy_version, sum(s.n for s in ordered), ordered, reads)
