"""Evaluate triage predictions against outcomes and acuity, with baselines on the same rows; write reports.

Reports are JSON (machine-readable, every number), Markdown (for people) and PNG plots (ROC, calibration,
confusion matrix, decision curves).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.baselines import BaselinePredictions
from evaluation.bootstrap import ConfidenceInterval, bootstrap_ci, paired_bootstrap_difference
from evaluation.metrics.acuity import acuity_confusion, acuity_summary
from evaluation.metrics.calibration import (
    calibration_curve,
    calibration_slope_intercept,
    expected_calibration_error,
    observed_expected_ratio,
)
from evaluation.metrics.decision import net_benefit, net_benefit_treat_all
from evaluation.metrics.discrimination import auprc, auroc
from evaluation.results import MODEL_NAME, AcuityEvaluation, OutcomeEvaluation, RiskMetrics, TriageEvaluation
from models.labels import OUTCOMES
from models.triage.onnx import TriagePrediction

log = logging.getLogger(__name__)

DCA_THRESHOLDS = np.round(np.arange(0.02, 0.51, 0.02), 2)


def _risk_metrics(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int) -> RiskMetrics:
    slope, intercept = calibration_slope_intercept(y, p)
    return RiskMetrics(
        auroc=bootstrap_ci(auroc, [y, p], n_boot=n_boot, seed=seed),
        auprc=bootstrap_ci(auprc, [y, p], n_boot=n_boot, seed=seed),
        ece=float(expected_calibration_error(y, p)),
        calibration_slope=float(slope),
        calibration_intercept=float(intercept),
        observed_expected=float(observed_expected_ratio(y, p)),
    )


def evaluate_triage(
    frame: pd.DataFrame,
    prediction: TriagePrediction,
    baselines: Sequence[BaselinePredictions],
    *,
    dataset: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> TriageEvaluation:
    """Every metric for one dataset: outcomes with bootstrap CIs, calibration, acuity, decision curves.

    Parameters
    ----------
    frame : pandas.DataFrame
        The evaluated rows, with ``admitted``, ``critical`` and ``acuity`` (may be missing) columns.
    prediction : TriagePrediction
        The model's predictions on exactly these rows.
    baselines : sequence of BaselinePredictions
        Baselines predicted on exactly these rows.
    """
    n = len(frame)
    outcomes: dict[str, OutcomeEvaluation] = {}
    model_risk = {"admitted": prediction.p_admitted, "critical": prediction.p_critical}
    for outcome in OUTCOMES:
        y = frame[outcome].to_numpy().astype(int)
        models = {MODEL_NAME: _risk_metrics(y, model_risk[outcome], n_boot, seed)}
        differences: dict[str, ConfidenceInterval] = {}
        curves: dict[str, list[float]] = {
            MODEL_NAME: net_benefit(y, model_risk[outcome], DCA_THRESHOLDS).tolist(),
            "treat all": net_benefit_treat_all(y, DCA_THRESHOLDS).tolist(),
        }
        for base in baselines:
            p = base.risk.get(outcome)
            if p is None:
                continue
            models[base.name] = _risk_metrics(y, p, n_boot, seed)
            differences[base.name] = paired_bootstrap_difference(
                auroc, y, model_risk[outcome], p, n_boot=n_boot, seed=seed
            )
            curves[base.name] = net_benefit(y, p, DCA_THRESHOLDS).tolist()
        outcomes[outcome] = OutcomeEvaluation(
            positives=int(y.sum()),
            prevalence=float(y.mean()) if n else float("nan"),
            models=models,
            auroc_difference_vs=differences,
            thresholds=tuple(DCA_THRESHOLDS.tolist()),
            net_benefit=curves,
            calibration_curve={k: v.tolist() for k, v in calibration_curve(y, model_risk[outcome], n_bins=10).items()},
        )

    return TriageEvaluation(
        dataset=dataset,
        n=n,
        bootstrap_resamples=n_boot,
        outcomes=outcomes,
        acuity=_acuity(frame, prediction, baselines),
        floor_raised_fraction=float(prediction.floor_raised.mean()) if n else 0.0,
        floor_raised_count=int(prediction.floor_raised.sum()),
    )


def _acuity(
    frame: pd.DataFrame, prediction: TriagePrediction, baselines: Sequence[BaselinePredictions]
) -> AcuityEvaluation:
    """Agreement with the reference level on the rows that have one."""
    levels = frame["acuity"].astype("float").to_numpy()
    known = ~np.isnan(levels)
    if not known.any():
        return AcuityEvaluation(n=0)
    truth = levels[known].astype(int)
    others: dict[str, dict[str, float]] = {}
    for base in baselines:
        if base.acuity is not None:
            pred = base.acuity[known]
            ok = ~np.isnan(pred.astype(float))
            others[base.name] = acuity_summary(truth[ok], pred[ok].astype(int))
    return AcuityEvaluation(
        n=int(known.sum()),
        with_floor=acuity_summary(truth, prediction.recommended_level[known]),
        model_alone=acuity_summary(truth, prediction.model_level[known]),
        baselines=others,
        confusion_with_floor=acuity_confusion(truth, prediction.recommended_level[known]).tolist(),
    )


def _fmt(ci: ConfidenceInterval) -> str:
    return f"{ci.estimate:.3f} ({ci.low:.3f}-{ci.high:.3f})"


def _num(value: float | None, digits: int) -> str:
    return f"{float('nan') if value is None else value:.{digits}f}"


def to_markdown(result: TriageEvaluation, title: str) -> str:
    """Render an evaluation result as Markdown."""
    lines = [
        f"# {title}",
        "",
        f"Dataset: **{result.dataset}**, {result.n} visits; bootstrap "
        f"{result.bootstrap_resamples} resamples, 95% percentile intervals.",
        "",
    ]
    for outcome, entry in result.outcomes.items():
        lines += [
            f"## {outcome} (positives {entry.positives}, prevalence {entry.prevalence:.3f})",
            "",
            "| model | AUROC (95% CI) | AUPRC (95% CI) | ECE | slope | intercept | O/E |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in entry.models.items():
            lines.append(
                f"| {name} | {_fmt(m.auroc)} | {_fmt(m.auprc)} | {_num(m.ece, 4)} | "
                f"{_num(m.calibration_slope, 2)} | {_num(m.calibration_intercept, 2)} | "
                f"{_num(m.observed_expected, 2)} |"
            )
        if entry.auroc_difference_vs:
            lines += ["", "AUROC difference, Vigil minus baseline (paired bootstrap):", ""]
            lines += [f"- vs {k}: {_fmt(v)}" for k, v in entry.auroc_difference_vs.items()]
        lines.append("")
    if result.acuity.n:
        lines += [
            f"## Acuity ({result.acuity.n} visits with a recorded level)",
            "",
            "| predictor | exact | kappa (linear) | kappa (quadratic) | under-triage | over-triage | "
            "under-triage of levels 1-2 |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, s in result.acuity.summaries().items():
            lines.append(
                f"| {name} | {s['exact_agreement']:.3f} | {s['kappa_linear']:.3f} | {s['kappa_quadratic']:.3f} | "
                f"{s['under_triage_rate']:.3f} | {s['over_triage_rate']:.3f} | "
                f"{s['high_acuity_under_triage_rate']:.3f} |"
            )
        lines.append("")
    lines += [
        f"The safety floor (NEWS2 from 16, ACVPU, red-flag complaints, paediatric physiology under 16) raised "
        f"the model's level for {result.floor_raised_count} visits "
        f"({100 * result.floor_raised_fraction:.1f}%).",
        "",
    ]
    if result.inputs_not_used:
        lines += [
            "## Columns the model does not use",
            "",
            "The file gives values the model never learnt (NEWS2 and the safety floor still use them):",
            "",
        ]
        lines += [
            f"- `{name}`: {e['rows_with_value']} rows; {e['reason']}" for name, e in result.inputs_not_used.items()
        ]
        lines.append("")
    return "\n".join(lines)


def write_plots(
    result: TriageEvaluation,
    frame: pd.DataFrame,
    prediction: TriagePrediction,
    baselines: Sequence[BaselinePredictions],
    out_dir: Path,
    prefix: str,
) -> list[Path]:
    """ROC, calibration, decision-curve and confusion-matrix plots as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    paths = []
    model_risk = {"admitted": prediction.p_admitted, "critical": prediction.p_critical}
    for outcome in OUTCOMES:
        y = frame[outcome].to_numpy().astype(int)
        if y.min() == y.max():
            continue
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
        series = [(MODEL_NAME, model_risk[outcome])] + [
            (b.name, risk) for b in baselines if (risk := b.risk.get(outcome)) is not None
        ]
        for name, p in series:
            fpr, tpr, _ = roc_curve(y, p)
            axes[0].plot(fpr, tpr, label=f"{name} ({auroc(y, p):.3f})")
        axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
        axes[0].set(title=f"ROC: {outcome}", xlabel="1 - specificity", ylabel="sensitivity")
        axes[0].legend(fontsize=8)
        curve = result.outcomes[outcome].calibration_curve
        axes[1].plot(curve["mean_predicted"], curve["observed"], "o-", label=MODEL_NAME)
        top = max(max(curve["mean_predicted"], default=0.1), max(curve["observed"], default=0.1))
        axes[1].plot([0, top], [0, top], "k:", lw=0.8)
        axes[1].set(title=f"Calibration: {outcome}", xlabel="predicted", ylabel="observed")
        entry = result.outcomes[outcome]
        for name, values in entry.net_benefit.items():
            axes[2].plot(entry.thresholds, values, label=name)
        axes[2].axhline(0, color="k", lw=0.8, label="treat none")
        axes[2].set(
            title=f"Decision curve: {outcome}",
            xlabel="threshold probability",
            ylabel="net benefit",
            ylim=(-0.02, max(0.02, float(y.mean()) * 1.1)),
        )
        axes[2].legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{prefix}_{outcome}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    confusion = result.acuity.confusion_with_floor
    if confusion:
        fig, ax = plt.subplots(figsize=(5, 4.5))
        matrix = np.array(confusion)
        ax.imshow(matrix, cmap="Blues")
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set(
            xticks=range(5),
            yticks=range(5),
            xticklabels=range(1, 6),
            yticklabels=range(1, 6),
            xlabel="recommended level (with NEWS2 floor)",
            ylabel="reference level",
            title="Acuity confusion",
        )
        fig.tight_layout()
        path = out_dir / f"{prefix}_acuity_confusion.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(result: TriageEvaluation, out_dir: Path, prefix: str, title: str) -> list[Path]:
    """Write ``<prefix>.json`` (:meth:`TriageEvaluation.to_dict`) and ``<prefix>.md``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{prefix}.json"
    json_path.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=float), encoding="utf-8")
    md_path = out_dir / f"{prefix}.md"
    md_path.write_text(to_markdown(result, title), encoding="utf-8")
    return [json_path, md_path]
