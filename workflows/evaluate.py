"""``vigil evaluate``: a registered or exported model scored on a dataset, with baselines, bootstrap CIs, reports.

A triage model on any triage dataset (NHAMCS, KTAS, a site's canonical CSV, synthetic); a chest X-ray model on the
held-out patients of NIH or Kermany (its own patient split).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from evaluation.results import ImagingEvaluation, TriageEvaluation
from models.errors import InputValidationError, VigilError
from models.registry import IMAGING_MODEL

__all__ = ["Evaluation", "evaluate_model", "is_imaging"]

IMAGING_DATA = ("nih", "kermany")


@dataclass
class Evaluation:
    """What an evaluation wrote and what to tell the user."""

    result: TriageEvaluation | ImagingEvaluation
    paths: list[Path]
    lines: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # printed beside the written paths


def is_imaging(model: str, data: str) -> bool:
    """Whether ``model``/``data`` name a chest X-ray evaluation."""
    return model.startswith(f"models:/{IMAGING_MODEL}") or data in IMAGING_DATA


def evaluate_model(
    model: str,
    data: str,
    out: Path,
    *,
    baseline_train: str | None = "auto",
    data_dir: Path | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Evaluation:
    """Evaluate ``model`` (an .onnx file or a registry URI) on ``data``; JSON, Markdown and plots go to ``out``.

    Raises
    ------
    models.errors.VigilError
        Unknown or unreadable data or model, outcomes missing from the data.
    """
    if is_imaging(model, data):
        return _evaluate_imaging(model, data, out, data_dir, bootstrap, seed)
    return _evaluate_triage(model, data, out, baseline_train, data_dir, bootstrap, seed)


def _evaluate_triage(
    model: str, data: str, out: Path, baseline_train: str | None, data_dir: Path | None, bootstrap: int, seed: int
) -> Evaluation:
    from evaluation.baselines import fit_baselines, nurse_baseline
    from evaluation.triage_report import evaluate_triage, write_plots, write_report
    from models.triage.onnx import TriageOnnxModel
    from training.data import load_dataset
    from training.tracking import resolve_model_file
    from workflows.triage import work_dir

    onnx_model = TriageOnnxModel(resolve_model_file(model, work_dir()))
    dataset = load_dataset(data, data_dir)
    frame = dataset.frame
    if frame["admitted"].isna().any() or frame["critical"].isna().any():
        raise VigilError(
            "evaluation needs 'admitted' and 'critical' in every row; "
            f"{int(frame['admitted'].isna().sum())} rows lack 'admitted'"
        )
    if baseline_train == "auto":
        baseline_train = None if data.startswith(("csv:", "synthetic:")) else "nhamcs:2018,2019"
    baselines = []
    if baseline_train:
        baselines = fit_baselines(load_dataset(baseline_train, data_dir).frame, onnx_model.encoder, seed)
    prediction = onnx_model.predict(frame)
    preds = [b.predict(frame) for b in baselines]
    nurse = nurse_baseline(frame)
    if nurse is not None:
        preds.append(nurse)
    result = replace(
        evaluate_triage(frame, prediction, preds, dataset=dataset.name, n_boot=bootstrap, seed=seed),
        model=onnx_model.describe(),
        inputs_not_used=onnx_model.encoder.ignored_summary(frame),
        data_digest=dataset.digest,
        synthetic_data=bool(onnx_model.card.synthetic_data or data.startswith("synthetic:")),
    )
    paths = write_report(result, out, "evaluation", f"Triage evaluation: {dataset.name}")
    paths += write_plots(result, frame, prediction, preds, out, "evaluation")
    lines = [
        f"column {name!r} ignored by the model in {entry['rows_with_value']} rows: {entry['reason']}"
        for name, entry in (result.inputs_not_used or {}).items()
    ]
    lines += [
        f"{outcome}: " + ", ".join(f"{k} AUROC {v.auroc.estimate:.3f}" for k, v in entry.models.items())
        for outcome, entry in result.outcomes.items()
    ]
    return Evaluation(result, paths, lines)


def _evaluate_imaging(model: str, data: str, out: Path, data_dir: Path | None, bootstrap: int, seed: int) -> Evaluation:
    from evaluation.imaging_report import evaluate_imaging, write_imaging_report
    from models.imaging.onnx import ImagingOnnxModel
    from training.data import resolve_data_dir
    from training.data.imaging import load_kermany, load_nih
    from training.tracking import resolve_model_file
    from workflows.triage import work_dir

    if data not in IMAGING_DATA:
        raise InputValidationError("data", f"--data for an imaging model must be 'nih' or 'kermany'; got {data!r}")
    onnx_model = ImagingOnnxModel(resolve_model_file(model, work_dir(), experiment=IMAGING_MODEL))
    split_seed = int(onnx_model.card.training["config"]["seed"])  # the model's own patient split
    loader = load_nih if data == "nih" else load_kermany
    test = loader(resolve_data_dir(data_dir), onnx_model.image_size, split_seed).split("test")
    probs, _ = onnx_model.run(test.images)
    findings = onnx_model.findings
    result = evaluate_imaging(
        test.labels,
        test.mask,
        probs,
        onnx_model.thresholds,
        test.meta["patient_id"].to_numpy(),
        findings,
        dataset=f"{data} (held-out patients of the model's split)",
        n_boot=bootstrap,
        seed=seed,
    )
    result = replace(
        result, model={"name": onnx_model.card.name, "version": onnx_model.card.version, "sha256": onnx_model.sha256}
    )
    paths = write_imaging_report(
        result, test.labels, test.mask, probs, findings, out, "evaluation", f"Chest X-ray evaluation: {data}"
    )
    lines = [
        f"{finding}: AUROC {entry.auroc.estimate:.3f} ({entry.auroc.low:.3f}-{entry.auroc.high:.3f}), n={entry.n}"
        for finding, entry in result.findings.items()
        if entry.auroc is not None
    ]
    return Evaluation(result, paths, lines, {"images": len(test.images)})
