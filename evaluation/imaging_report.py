"""Evaluate chest X-ray second reads: per finding AUROC with patient-level bootstrap CIs, sensitivity and
specificity at the operating thresholds, flag rates, calibration; JSON, Markdown and ROC plots.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from evaluation.bootstrap import ConfidenceInterval, bootstrap_ci
from evaluation.metrics.calibration import expected_calibration_error
from evaluation.metrics.decision import sensitivity, specificity
from evaluation.metrics.discrimination import auroc
from evaluation.results import FindingEvaluation, ImagingEvaluation


def evaluate_imaging(
    labels: np.ndarray,
    mask: np.ndarray,
    probabilities: np.ndarray,
    thresholds: dict[str, float],
    patients: np.ndarray,
    findings: Sequence[str],
    *,
    dataset: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> ImagingEvaluation:
    """Every imaging metric for one test set.

    Parameters
    ----------
    labels, mask : ndarray [N, F]
        Reference labels and which of them are known.
    probabilities : ndarray [N, F]
        Calibrated model probabilities.
    thresholds : dict
        Operating threshold per finding (chosen on validation data).
    patients : ndarray [N]
        Patient ids: bootstrap resamples patients, not images.
    """
    flags = probabilities >= np.array([thresholds[f] for f in findings])[None, :]
    entries: dict[str, FindingEvaluation] = {}
    for j, finding in enumerate(findings):
        rows = mask[:, j] > 0
        if not rows.any():
            continue
        y, p, f, g = labels[rows, j].astype(int), probabilities[rows, j], flags[rows, j].astype(int), patients[rows]
        entry = FindingEvaluation(
            n=int(rows.sum()), positives=int(y.sum()), threshold=thresholds[finding], flag_rate=float(f.mean())
        )
        if 0 < y.sum() < len(y):
            entry = replace(
                entry,
                auroc=bootstrap_ci(auroc, [y, p], n_boot=n_boot, seed=seed, groups=g),
                sensitivity=bootstrap_ci(sensitivity, [y, f], n_boot=n_boot, seed=seed, groups=g),
                specificity=bootstrap_ci(specificity, [y, f], n_boot=n_boot, seed=seed, groups=g),
                ece=float(expected_calibration_error(y, p)),
            )
        entries[finding] = entry
    any_label = (labels * mask).max(axis=1) > 0
    labelled = mask.max(axis=1) > 0
    abnormal = labelled & any_label
    return ImagingEvaluation(
        dataset=dataset,
        n_images=len(labels),
        n_patients=len(np.unique(patients)),
        bootstrap_resamples=n_boot,
        findings=entries,
        study_flag_rate=float(flags[labelled].any(axis=1).mean()) if labelled.any() else float("nan"),
        # A study with a finding that no head flags is a false "no finding": the decisive error of a second read.
        abnormal_studies=int(abnormal.sum()) if abnormal.any() else None,
        false_no_finding_rate=float(1 - flags[abnormal].any(axis=1).mean()) if abnormal.any() else None,
    )


def to_markdown(result: ImagingEvaluation, title: str) -> str:
    """Render an imaging evaluation as Markdown."""
    lines = [
        f"# {title}",
        "",
        f"Dataset **{result.dataset}**: {result.n_images} images of "
        f"{result.n_patients} patients; {result.bootstrap_resamples} bootstrap resamples by patient, "
        "95% percentile intervals.",
        "",
        "| finding | n | positives | AUROC (95% CI) | threshold | sensitivity (95% CI) | specificity (95% CI) "
        "| flag rate | ECE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(ci: ConfidenceInterval | None) -> str:
        return "n/a" if ci is None else f"{ci.estimate:.3f} ({ci.low:.3f}-{ci.high:.3f})"

    for finding, e in result.findings.items():
        ece = float("nan") if e.ece is None else e.ece
        lines.append(
            f"| {finding} | {e.n} | {e.positives} | {fmt(e.auroc)} | {e.threshold:.4f} | "
            f"{fmt(e.sensitivity)} | {fmt(e.specificity)} | {e.flag_rate:.3f} | {ece:.3f} |"
        )
    lines += ["", f"Studies flagged for second read: {100 * result.study_flag_rate:.1f}%."]
    if result.false_no_finding_rate is not None:
        lines.append(
            f"Abnormal studies ({result.abnormal_studies}) with no finding flagged: "
            f"{100 * result.false_no_finding_rate:.1f}%."
        )
    return "\n".join(lines) + "\n"


def write_imaging_report(
    result: ImagingEvaluation,
    labels: np.ndarray,
    mask: np.ndarray,
    probabilities: np.ndarray,
    findings: Sequence[str],
    out_dir: Path,
    prefix: str,
    title: str,
) -> list[Path]:
    """JSON, Markdown and a ROC plot per finding."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{prefix}.json", out_dir / f"{prefix}.md"]
    paths[0].write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True), encoding="utf-8")
    paths[1].write_text(to_markdown(result, title), encoding="utf-8")
    fig, ax = plt.subplots(figsize=(6, 5))
    for j, finding in enumerate(findings):
        rows = mask[:, j] > 0
        y = labels[rows, j]
        if rows.any() and 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, probabilities[rows, j])
            ax.plot(fpr, tpr, label=f"{finding} ({result.auroc()[finding]:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(title=f"ROC: {result.dataset}", xlabel="1 - specificity", ylabel="sensitivity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    plot = out_dir / f"{prefix}_roc.png"
    fig.savefig(plot, dpi=90)
    plt.close(fig)
    return [*paths, plot]
