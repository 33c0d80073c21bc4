"""Evaluate triage predictions against outcomes and acuity, with baselines on the same rows; write reports.

Reports are JSON (machine-readable, every number), Markdown (for people) and PNG plots (ROC, calibration,
confusion matrix, decision curves).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.baselines import BaselinePredictions
from evaluation.bootstrap import bootstrap_ci, paired_bootstrap_difference
from evaluation.metrics import (
    acuity_confusion,
    acuity_summary,
    auprc,
    auroc,
    calibration_curve,
    calibration_slope_intercept,
    expected_calibration_error,
    net_benefit,
    net_benefit_treat_all,
    observed_expected_ratio,
)
from models.labels import OUTCOMES
from models.triage.onnx import TriagePrediction

log = logging.getLogger(__name__)

MODEL_NAME = "Vigil"
DCA_THRESHOLDS = np.round(np.arange(0.02, 0.51, 0.02), 2)


def _risk_metrics(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int, calibrated: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "auroc": bootstrap_ci(auroc, [y, p], n_boot=n_boot, seed=seed).to_dict(),
        "auprc": bootstrap_ci(auprc, [y, p], n_boot=n_boot, seed=seed).to_dict(),
    }
    if calibrated:
        slope, intercept = calibration_slope_intercept(y, p)
        out.update(
            ece=float(expected_calibration_error(y, p)),
            calibration_slope=float(slope),
            calibration_intercept=float(intercept),
            observed_expected=float(observed_expected_ratio(y, p)),
        )
    return out


def evaluate_triage(
    frame: pd.DataFrame,
    prediction: TriagePrediction,
    baselines: Sequence[BaselinePredictions],
    *,
    dataset: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
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
    result: dict[str, Any] = {"dataset": dataset, "n": n, "bootstrap_resamples": n_boot, "outcomes": {}}
    model_risk = {"admitted": prediction.p_admitted, "critical": prediction.p_critical}
    for outcome in OUTCOMES:
        y = frame[outcome].to_numpy().astype(int)
        entry: dict[str, Any] = {"positives": int(y.sum()), "prevalence": float(y.mean()) if n else float("nan")}
        models: dict[str, Any] = {MODEL_NAME: _risk_metrics(y, model_risk[outcome], n_boot, seed, True)}
        differences: dict[str, Any] = {}
        curves: dict[str, list[float]] = {
            MODEL_NAME: net_benefit(y, model_risk[outcome], DCA_THRESHOLDS).tolist(),
            "treat all": net_benefit_treat_all(y, DCA_THRESHOLDS).tolist(),
        }
        for base in baselines:
            p = base.risk.get(outcome)
            if p is None:
                continue
            models[base.name] = _risk_metrics(y, p, n_boot, seed, True)
            differences[base.name] = paired_bootstrap_difference(
                auroc, y, model_risk[outcome], p, n_boot=n_boot, seed=seed
            ).to_dict()
            curves[base.name] = net_benefit(y, p, DCA_THRESHOLDS).tolist()
        entry["models"] = models
        entry["auroc_difference_vs"] = differences
        entry["net_benefit"] = {"thresholds": DCA_THRESHOLDS.tolist(), **curves}
        entry["calibration_curve"] = {
            k: v.tolist() for k, v in calibration_curve(y, model_risk[outcome], n_bins=10).items()
        }
        result["outcomes"][outcome] = entry

    levels = frame["acuity"].astype("float").to_numpy()
    known = ~np.isnan(levels)
    acuity: dict[str, Any] = {"n": int(known.sum())}
    if known.any():
        truth = levels[known].astype(int)
        acuity[f"{MODEL_NAME} (with NEWS2 floor)"] = acuity_summary(truth, prediction.recommended_level[known])
        acuity[f"{MODEL_NAME} (model alone)"] = acuity_summary(truth, prediction.model_level[known])
        for base in baselines:
            if base.acuity is not None:
                pred = base.acuity[known]
                ok = ~np.isnan(pred.astype(float))
                acuity[base.name] = acuity_summary(truth[ok], pred[ok].astype(int))
        acuity["confusion_with_floor"] = acuity_confusion(truth, prediction.recommended_level[known]).tolist()
    result["acuity"] = acuity
    result["news2_floor"] = {
        "raised_fraction": float(prediction.floor_raised.mean()) if n else 0.0,
        "raised_count": int(prediction.floor_raised.sum()),
    }
    return result


def _fmt(ci: dict[str, float]) -> str:
    return f"{ci['estimate']:.3f} ({ci['low']:.3f}-{ci['high']:.3f})"


def to_markdown(result: dict[str, Any], title: str) -> str:
    """Render an evaluation result as Markdown."""
    lines = [
        f"# {title}",
        "",
        f"Dataset: **{result['dataset']}**, {result['n']} visits; bootstrap "
        f"{result['bootstrap_resamples']} resamples, 95% percentile intervals.",
        "",
    ]
    for outcome, entry in result["outcomes"].items():
        lines += [
            f"## {outcome} (positives {entry['positives']}, prevalence {entry['prevalence']:.3f})",
            "",
            "| model | AUROC (95% CI) | AUPRC (95% CI) | ECE | slope | intercept | O/E |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in entry["models"].items():
            lines.append(
                f"| {name} | {_fmt(m['auroc'])} | {_fmt(m['auprc'])} | {m.get('ece', float('nan')):.4f} | "
                f"{m.get('calibration_slope', float('nan')):.2f} | "
                f"{m.get('calibration_intercept', float('nan')):.2f} | "
                f"{m.get('observed_expected', float('nan')):.2f} |"
            )
        if entry["auroc_difference_vs"]:
            lines += ["", "AUROC difference, Vigil minus baseline (paired bootstrap):", ""]
            lines += [f"- vs {k}: {_fmt(v)}" for k, v in entry["auroc_difference_vs"].items()]
        lines.append("")
    acuity = result["acuity"]
    if acuity.get("n"):
        lines += [
            f"## Acuity ({acuity['n']} visits with a recorded level)",
            "",
            "| predictor | exact | kappa (linear) | kappa (quadratic) | under-triage | over-triage | "
            "under-triage of levels 1-2 |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, s in acuity.items():
            if not isinstance(s, dict):
                continue
            lines.append(
                f"| {name} | {s['exact_agreement']:.3f} | {s['kappa_linear']:.3f} | {s['kappa_quadratic']:.3f} | "
                f"{s['under_triage_rate']:.3f} | {s['over_triage_rate']:.3f} | "
                f"{s['high_acuity_under_triage_rate']:.3f} |"
            )
        lines.append("")
    lines += [
        f"The safety floor (NEWS2 from 16, ACVPU, red-flag complaints, paediatric physiology under 16) raised "
        f"the model's level for {result['news2_floor']['raised_count']} visits "
        f"({100 * result['news2_floor']['raised_fraction']:.1f}%).",
        "",
    ]
    ignored = result.get("inputs_not_used") or {}
    if ignored:
        lines += [
            "## Columns the model does not use",
            "",
            "The file gives values the model never learnt (NEWS2 and the safety floor still use them):",
            "",
        ]
        lines += [f"- `{name}`: {e['rows_with_value']} rows; {e['reason']}" for name, e in ignored.items()]
        lines.append("")
    return "\n".join(lines)


def write_plots(
    result: dict[str, Any],
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
        curve = result["outcomes"][outcome]["calibration_curve"]
        axes[1].plot(curve["mean_predicted"], curve["observed"], "o-", label=MODEL_NAME)
        top = max(max(curve["mean_predicted"], default=0.1), max(curve["observed"], default=0.1))
        axes[1].plot([0, top], [0, top], "k:", lw=0.8)
        axes[1].set(title=f"Calibration: {outcome}", xlabel="predicted", ylabel="observed")
        nb = result["outcomes"][outcome]["net_benefit"]
        for name, values in nb.items():
            if name != "thresholds":
                axes[2].plot(nb["thresholds"], values, label=name)
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
    confusion = result["acuity"].get("confusion_with_floor")
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


def write_report(result: dict[str, Any], out_dir: Path, prefix: str, title: str) -> list[Path]:
    """Write ``<prefix>.json`` and ``<prefix>.md``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{prefix}.json"
    json_path.write_text(json.dumps(result, indent=2, sort_keys=True, default=float), encoding="utf-8")
    md_path = out_dir / f"{prefix}.md"
    md_path.write_text(to_markdown(result, title), encoding="utf-8")
    return [json_path, md_path]
