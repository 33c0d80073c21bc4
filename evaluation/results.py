"""What an evaluation returns: typed results, and the one place they become JSON and MLflow metric keys.

:func:`evaluation.triage_report.evaluate_triage` returns a :class:`TriageEvaluation` and
:func:`evaluation.imaging_report.evaluate_imaging` an :class:`ImagingEvaluation`. Readers use their attributes
(``result.outcomes["admitted"].vigil.auroc.estimate``), never display strings or flattened names. Each result's
``to_dict`` is its JSON report (the shape of ``<prefix>.json``, unchanged), and ``metrics(split)`` names the
numbers a training run logs through :mod:`models.registry` (``test.admitted.auroc``), so a metric the release
policy's floors can name is the metric a run logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from evaluation.bootstrap import ConfidenceInterval
from models.registry import TRIAGE_METRICS, imaging_metric, triage_metric

__all__ = [
    "MODEL_ALONE",
    "MODEL_NAME",
    "WITH_FLOOR",
    "AcuityEvaluation",
    "FindingEvaluation",
    "ImagingEvaluation",
    "OutcomeEvaluation",
    "RiskMetrics",
    "TriageEvaluation",
]

#: How Vigil is named beside the baselines in a report.
MODEL_NAME: Final = "Vigil"
#: Vigil's recommended level (the model's level raised to the safety floor) and the model's level alone.
WITH_FLOOR: Final = f"{MODEL_NAME} (with NEWS2 floor)"
MODEL_ALONE: Final = f"{MODEL_NAME} (model alone)"
#: An acuity summary (:func:`evaluation.metrics.acuity.acuity_summary`): agreement and under/over-triage rates.
AcuitySummary = dict[str, float]


@dataclass(frozen=True)
class RiskMetrics:
    """Discrimination (bootstrap CIs) and, for calibrated risks, calibration of one risk for one outcome."""

    auroc: ConfidenceInterval
    auprc: ConfidenceInterval
    ece: float | None = None
    calibration_slope: float | None = None
    calibration_intercept: float | None = None
    observed_expected: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"auroc": self.auroc.to_dict(), "auprc": self.auprc.to_dict()}
        if self.ece is not None:
            out.update(
                ece=self.ece,
                calibration_slope=self.calibration_slope,
                calibration_intercept=self.calibration_intercept,
                observed_expected=self.observed_expected,
            )
        return out


@dataclass(frozen=True)
class OutcomeEvaluation:
    """One outcome (admitted or critical): Vigil and each baseline, paired AUROC differences, decision curves."""

    positives: int
    prevalence: float
    #: By display name: :data:`MODEL_NAME` first, then each baseline that predicts this outcome.
    models: dict[str, RiskMetrics]
    #: Vigil's AUROC minus each baseline's, paired bootstrap.
    auroc_difference_vs: dict[str, ConfidenceInterval]
    thresholds: tuple[float, ...]
    #: Net benefit at :attr:`thresholds`, by display name (Vigil, "treat all", each baseline).
    net_benefit: dict[str, list[float]]
    calibration_curve: dict[str, list[float]]

    @property
    def vigil(self) -> RiskMetrics:
        return self.models[MODEL_NAME]

    def to_dict(self) -> dict[str, Any]:
        return {
            "positives": self.positives,
            "prevalence": self.prevalence,
            "models": {name: m.to_dict() for name, m in self.models.items()},
            "auroc_difference_vs": {name: d.to_dict() for name, d in self.auroc_difference_vs.items()},
            "net_benefit": {"thresholds": list(self.thresholds), **self.net_benefit},
            "calibration_curve": self.calibration_curve,
        }


@dataclass(frozen=True)
class AcuityEvaluation:
    """Agreement with the reference acuity, on the rows that have one (``n``; the rest are not scored)."""

    n: int
    with_floor: AcuitySummary | None = None
    model_alone: AcuitySummary | None = None
    #: By baseline name (those that recommend a level).
    baselines: dict[str, AcuitySummary] = field(default_factory=dict)
    confusion_with_floor: list[list[int]] | None = None

    def summaries(self) -> dict[str, AcuitySummary]:
        """Every summary by display name: Vigil with the floor, Vigil alone, then the baselines."""
        ours = {WITH_FLOOR: self.with_floor, MODEL_ALONE: self.model_alone}
        return {**{k: v for k, v in ours.items() if v is not None}, **self.baselines}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, **self.summaries()}
        if self.confusion_with_floor is not None:
            out["confusion_with_floor"] = self.confusion_with_floor
        return out


@dataclass(frozen=True)
class TriageEvaluation:
    """Every triage metric for one dataset."""

    dataset: str
    n: int
    bootstrap_resamples: int
    outcomes: dict[str, OutcomeEvaluation]
    acuity: AcuityEvaluation
    #: How often the safety floor raised the model's level, as a fraction of rows and as a count.
    floor_raised_fraction: float
    floor_raised_count: int
    #: What ``vigil evaluate`` adds (None where not known): the model scored, the columns of the file it does not
    #: use (:meth:`models.triage.features.FeatureEncoder.ignored_summary`), the data's digest, synthetic or not.
    model: dict[str, Any] | None = None
    inputs_not_used: dict[str, dict[str, Any]] | None = None
    data_digest: str | None = None
    synthetic_data: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "n": self.n,
            "bootstrap_resamples": self.bootstrap_resamples,
            "outcomes": {name: o.to_dict() for name, o in self.outcomes.items()},
            "acuity": self.acuity.to_dict(),
            "news2_floor": {"raised_fraction": self.floor_raised_fraction, "raised_count": self.floor_raised_count},
        }
        provenance = {
            "model": self.model,
            "inputs_not_used": self.inputs_not_used,
            "data_digest": self.data_digest,
            "synthetic_data": self.synthetic_data,
        }
        return out | {k: v for k, v in provenance.items() if v is not None}

    def metrics(self, split: str) -> dict[str, float]:
        """Vigil's point estimates as the metric keys a training run logs (``<split>.<outcome>.<metric>``)."""
        out: dict[str, float] = {}
        for outcome, entry in self.outcomes.items():
            ours = entry.vigil
            values = {"auroc": ours.auroc.estimate, "auprc": ours.auprc.estimate, "ece": ours.ece}
            for metric in TRIAGE_METRICS:
                value = values[metric]
                if value is not None:
                    out[triage_metric(split, outcome, metric)] = float(value)
        return out


@dataclass(frozen=True)
class FindingEvaluation:
    """One finding of a chest X-ray test set, at the operating threshold fixed on validation data."""

    n: int
    positives: int
    threshold: float
    flag_rate: float
    #: None where the set holds one class only (then :attr:`note` says so).
    auroc: ConfidenceInterval | None = None
    sensitivity: ConfidenceInterval | None = None
    specificity: ConfidenceInterval | None = None
    ece: float | None = None

    @property
    def note(self) -> str | None:
        if self.auroc is None:
            return "one class only in this set: AUROC, sensitivity and specificity undefined"
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n,
            "positives": self.positives,
            "threshold": self.threshold,
            "flag_rate": self.flag_rate,
        }
        if self.auroc is None:
            out["note"] = self.note
            return out
        out["auroc"] = self.auroc.to_dict()
        if self.sensitivity is not None:
            out["sensitivity"] = self.sensitivity.to_dict()
        if self.specificity is not None:
            out["specificity"] = self.specificity.to_dict()
        out["ece"] = self.ece
        return out


@dataclass(frozen=True)
class ImagingEvaluation:
    """Every imaging metric for one test set (bootstrap by patient)."""

    dataset: str
    n_images: int
    n_patients: int
    bootstrap_resamples: int
    findings: dict[str, FindingEvaluation]
    study_flag_rate: float
    #: Studies with at least one labelled finding present, and the share of them no head flags (None if none).
    abnormal_studies: int | None = None
    false_no_finding_rate: float | None = None
    bootstrap_unit: str = "patient"
    #: Where known: the model scored (name, version, sha256; ``vigil evaluate``), the precision shipped and
    #: whether the data was synthetic (the training run).
    model: dict[str, Any] | None = None
    precision: str | None = None
    synthetic_data: bool | None = None

    def auroc(self) -> dict[str, float]:
        """Each scored finding's AUROC point estimate."""
        return {f: e.auroc.estimate for f, e in self.findings.items() if e.auroc is not None}

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "n_images": self.n_images,
            "n_patients": self.n_patients,
            "bootstrap_resamples": self.bootstrap_resamples,
            "bootstrap_unit": self.bootstrap_unit,
            "findings": {name: e.to_dict() for name, e in self.findings.items()},
            "study_flag_rate": self.study_flag_rate,
        }
        if self.abnormal_studies is not None:
            out["abnormal_studies"] = self.abnormal_studies
            out["false_no_finding_rate"] = self.false_no_finding_rate
        provenance = {"model": self.model, "precision": self.precision, "synthetic_data": self.synthetic_data}
        return out | {k: v for k, v in provenance.items() if v is not None}

    def metrics(self, source: str) -> dict[str, float]:
        """Each finding's AUROC as the metric key a training run logs (``test.<source>.<finding>.auroc``)."""
        return {imaging_metric("test", source, f): value for f, value in self.auroc().items()}
