"""The main job for the triage model: data -> torch -> ONNX (parity) -> evaluation -> MLflow registry.

This module only composes the packages (training, models, evaluation); it holds no modelling logic. The model
card the run writes is built in :mod:`workflows.triage_card`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.baselines import NURSE_BASELINE, fit_baselines, nurse_baseline
from evaluation.metrics.acuity import acuity_summary
from evaluation.metrics.discrimination import auroc
from evaluation.results import MODEL_NAME, WITH_FLOOR, TriageEvaluation
from evaluation.triage_report import evaluate_triage, write_plots, write_report
from models.errors import DataSourceError, ModelArtifactError
from models.labels import OUTCOMES
from models.onnx_file import sha256_file
from models.operating_point import threshold_for_sensitivity
from models.registry import TRIAGE_MODEL, Tag
from models.triage.columns import as_columns
from models.triage.decision import choose_band_weights, recommend_levels
from models.triage.onnx import TriageOnnxModel, export_triage_onnx
from models.triage.safety_floor import safety_floor
from training.config import TriageTrainConfig
from training.data import TriageDataset, data_available, load_dataset, resolve_data_dir
from training.tracking import git_commit, log_onnx_model_run, tracking_settings
from training.train_triage import TrainedTriageModel, train_triage
from workflows.triage_card import triage_model_card

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parents[1]
REGISTERED_TRIAGE_MODEL = TRIAGE_MODEL
#: Largest |onnxruntime - torch| probability difference accepted at export.
PARITY_TOLERANCE = 1e-4
#: Sensitivity at which each risk head's operating threshold is chosen on validation (audit and serving flags).
OUTCOME_TARGET_SENSITIVITY = 0.9

GOALS = {
    "admission_auroc_min": 0.82,
    "critical_auroc_min": 0.88,
    "margin_over_news2": 0.15,
}


def work_dir() -> Path:
    """Where runs, the SQLite MLflow store and artefacts go (``VIGIL_WORK_DIR``, default ``./vigil-work``)."""
    return Path(os.environ.get("VIGIL_WORK_DIR", "vigil-work")).resolve()


@dataclass
class TriageRunResult:
    """What the main job produced."""

    synthetic: bool
    onnx_path: Path
    report_dir: Path
    parity_max_abs_diff: float
    evaluations: dict[str, TriageEvaluation]
    registered_version: str
    run_id: str
    goals: dict[str, Any]


def _datasets(
    config: TriageTrainConfig, data_dir: Path | None
) -> tuple[bool, TriageDataset, TriageDataset, TriageDataset | None]:
    if data_available(data_dir):
        train = load_dataset(config.train_data, data_dir)
        test = load_dataset(config.test_data, data_dir)
        try:
            external = load_dataset(config.external_data, data_dir) if config.external_data else None
        except DataSourceError as exc:  # an absent external set is reported, not fatal
            log.warning("external dataset %s not loaded: %s", config.external_data, exc)
            external = None
        return False, train, test, external
    log.warning(
        "NO REAL DATA FOUND under %s: training and evaluating on the seeded SYNTHETIC generator. "
        "Figures say nothing about clinical performance.",
        resolve_data_dir(data_dir),
    )
    train = load_dataset(f"synthetic:n={config.synthetic_train_n},seed={config.seed}")
    test = load_dataset(f"synthetic:n={config.synthetic_test_n},seed={config.seed + 1}")
    return True, train, test, None


def validation_summary(
    trained: TrainedTriageModel,
    frame: pd.DataFrame,
    weight: float,
    target_sensitivity: float,
    high_acuity_target: float = 1.0,
    by_sex: bool = False,
) -> dict[str, Any]:
    """Everything decided on the seeded validation split, from one prediction pass over it.

    ``auroc`` per outcome (the only figures used to choose between models); ``acuity`` agreement for argmax
    and for the cost-sensitive rule (before the floor); ``thresholds``, each outcome's operating threshold for
    ``target_sensitivity``; ``band_weights``, the age-band operating points for ``high_acuity_target``
    (:func:`models.triage.decision.choose_band_weights`; empty when the target is 1.0).
    """
    val = frame[frame["visit_id"].isin(set(trained.validation_ids))]
    acuity, outcomes = trained.predict_probs(val)
    y = {o: val[o].to_numpy().astype(int) for o in OUTCOMES}
    known = val["acuity"].notna().to_numpy()
    truth = val.loc[known, "acuity"].astype(int).to_numpy()
    band_weights: dict[str, dict[str, float]] = {}
    if high_acuity_target < 1.0:
        floor_levels = safety_floor(as_columns(val)).level
        band_weights = choose_band_weights(
            acuity,
            val["age_years"].to_numpy(dtype=float),
            val["acuity"].to_numpy(dtype=float),
            floor_levels,
            weight,
            high_acuity_target,
            sex=val["sex"].to_numpy(dtype=object) if by_sex else None,
        )
    return {
        "band_weights": band_weights,
        "auroc": {o: float(auroc(y[o], outcomes[:, j])) for j, o in enumerate(OUTCOMES)},
        "acuity": {
            "argmax": acuity_summary(truth, acuity[known].argmax(axis=1) + 1),
            f"cost-sensitive (w={weight:g})": acuity_summary(truth, recommend_levels(acuity[known], weight)),
        },
        "thresholds": {
            o: threshold_for_sensitivity(y[o], outcomes[:, j], target_sensitivity)[0] for j, o in enumerate(OUTCOMES)
        },
    }


def check_goals(evaluation: TriageEvaluation) -> dict[str, Any]:
    """Compare the temporal-test evaluation with the issue's goals; every check reported, pass or fail."""
    out: dict[str, Any] = {}
    for outcome, floor in (("admitted", GOALS["admission_auroc_min"]), ("critical", GOALS["critical_auroc_min"])):
        models = evaluation.outcomes[outcome].models
        ours = models[MODEL_NAME].auroc.estimate
        news2 = models["NEWS2"].auroc.estimate if "NEWS2" in models else float("nan")
        gbm = models["gradient boosting"].auroc.estimate if "gradient boosting" in models else float("nan")
        out[outcome] = {
            "auroc": ours,
            "goal_auroc": floor,
            "meets_auroc": bool(ours >= floor),
            "news2_auroc": news2,
            "meets_margin_over_news2": bool(ours - news2 >= GOALS["margin_over_news2"]),
            "gbm_auroc": gbm,
            "not_below_gbm": bool(ours >= gbm),
        }
    return out


def run_triage(
    config: TriageTrainConfig, *, data_dir: Path | None = None, out_dir: Path | None = None, progress: bool = True
) -> TriageRunResult:
    """Train, export, check parity, evaluate against baselines, and log and register in MLflow."""
    base = work_dir()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = out_dir or base / "runs" / f"triage-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    synthetic, train_ds, test_ds, external_ds = _datasets(config, data_dir)
    log.info(
        "training on %s (%d visits), temporal test %s (%d)",
        train_ds.name,
        len(train_ds.frame),
        test_ds.name,
        len(test_ds.frame),
    )

    trained = train_triage(train_ds.frame, config, progress=progress)
    train_rows = train_ds.frame[train_ds.frame["visit_id"].isin(set(trained.train_ids))]
    chosen = validation_summary(
        trained,
        train_ds.frame,
        config.under_triage_weight,
        OUTCOME_TARGET_SENSITIVITY,
        config.high_acuity_under_triage_target,
        config.operating_points_by_sex,
    )
    validation, validation_acuity = chosen["auroc"], chosen["acuity"]
    log.info("validation split (model selection only): %s; acuity: %s", validation, validation_acuity)
    if chosen["band_weights"]:
        log.info(
            "age-band operating points (validation, target %.2f): %s",
            config.high_acuity_under_triage_target,
            {b: round(v["weight"], 2) for b, v in chosen["band_weights"].items()},
        )

    card = triage_model_card(
        config,
        trained,
        chosen,
        stamp=stamp,
        target_sensitivity=OUTCOME_TARGET_SENSITIVITY,
        commit=git_commit(REPO_DIR),
        synthetic=synthetic,
        train=train_ds,
        test=test_ds,
        external=external_ds,
    )

    onnx_path = export_triage_onnx(
        trained.model, trained.encoder.transform(test_ds.frame.iloc[:64]), card, out_dir / "triage.onnx"
    )
    onnx_model = TriageOnnxModel(onnx_path, threads=config.threads)
    held_out = test_ds.frame.iloc[: min(2000, len(test_ds.frame))]
    torch_acuity, torch_outcomes = trained.predict_probs(held_out)
    ort_acuity, ort_outcomes = onnx_model.run_encoded(trained.encoder.transform(held_out))
    parity = float(max(np.abs(torch_acuity - ort_acuity).max(), np.abs(torch_outcomes - ort_outcomes).max()))
    log.info("ONNX parity on %d held-out rows: max |diff| %.2e", len(held_out), parity)
    if parity > PARITY_TOLERANCE:
        raise ModelArtifactError(
            f"ONNX parity check failed: max |diff| {parity:.2e} > {PARITY_TOLERANCE:g}; the "
            "exported graph does not compute what was trained: nothing was registered"
        )

    baselines = fit_baselines(train_rows, trained.encoder, config.seed)
    evaluations: dict[str, TriageEvaluation] = {}
    artefacts: list[Path] = []
    for key, ds in (("test", test_ds), ("external", external_ds)):
        if ds is None:
            continue
        prediction = onnx_model.predict(ds.frame)
        preds = [b.predict(ds.frame) for b in baselines]
        nurse = nurse_baseline(ds.frame)
        if nurse is not None:
            preds.append(nurse)
        result = evaluate_triage(
            ds.frame, prediction, preds, dataset=ds.name, n_boot=config.bootstrap_resamples, seed=config.seed
        )
        result = replace(result, synthetic_data=synthetic)
        evaluations[key] = result
        title = f"Triage evaluation: {ds.name}" + (" (SYNTHETIC DATA)" if synthetic else "")
        artefacts += write_report(result, out_dir, f"evaluation_{key}", title)
        artefacts += write_plots(result, ds.frame, prediction, preds, out_dir, f"evaluation_{key}")

    goals = check_goals(evaluations["test"])
    card.metrics = {
        "parity_max_abs_diff": parity,
        "goals": goals,
        **{
            k: {
                "auroc": {o: e.vigil.auroc.to_dict() for o, e in v.outcomes.items()},
                "acuity": v.acuity.with_floor,
            }
            for k, v in evaluations.items()
        },
    }
    # The card in the ONNX file is the pre-evaluation contract; the full card (with metrics) is logged beside it.
    card_path = out_dir / "model_card.md"
    card_path.write_text(card.to_markdown(), encoding="utf-8")
    (out_dir / "model_card.json").write_text(card.to_json(), encoding="utf-8")
    (out_dir / "goals.json").write_text(json.dumps(goals, indent=2), encoding="utf-8")
    artefacts += [card_path, out_dir / "goals.json"]

    onnx_sha = sha256_file(onnx_path)
    registered = log_onnx_model_run(
        tracking_settings(base, TRIAGE_MODEL),
        params=config.to_dict(),
        tags={
            Tag.GIT_COMMIT: git_commit(REPO_DIR),
            Tag.SYNTHETIC_DATA: str(synthetic).lower(),
            "train_digest": train_ds.digest,
            "test_digest": test_ds.digest,
            "external_digest": external_ds.digest if external_ds else "none",
            Tag.ONNX_SHA256: onnx_sha,
            "preprocessing": trained.encoder.version,
            "data_sources": json.dumps({k: v.source_files for k, v in (("train", train_ds), ("test", test_ds)) if v})[
                :5000
            ],
        },
        metrics={
            "parity_max_abs_diff": parity,
            "validation": {"auroc": validation},
            **{name: value for key, ev in evaluations.items() for name, value in ev.metrics(key).items()},
        },
        history=trained.history,
        artifacts=artefacts,
        onnx_path=onnx_path,
        registered_model_name=REGISTERED_TRIAGE_MODEL,
        card_json=card.to_json(),
    )
    return TriageRunResult(
        synthetic, onnx_path, out_dir, parity, evaluations, registered.version, registered.run_id, goals
    )


def summary_lines(result: TriageRunResult) -> list[str]:
    """Plain-language summary of a run for the terminal."""
    lines = []
    if result.synthetic:
        lines.append(
            "!! NO REAL DATA FOUND: this run used the SEEDED SYNTHETIC generator. Its figures say "
            "nothing about clinical performance. Set VIGIL_DATA_DIR to the data folder."
        )
    lines.append(f"ONNX model: {result.onnx_path} (parity max |diff| {result.parity_max_abs_diff:.1e})")
    lines.append(
        f"MLflow: registered {REGISTERED_TRIAGE_MODEL} version {result.registered_version} "
        f"as @candidate (run {result.run_id})"
    )
    for key, ev in result.evaluations.items():
        for outcome, entry in ev.outcomes.items():
            parts = [f"{name} {v.auroc.estimate:.3f}" for name, v in entry.models.items()]
            lines.append(f"[{key}: {ev.dataset}] {outcome} AUROC: " + ", ".join(parts))
        acuity = ev.acuity.summaries()
        for name in (WITH_FLOOR, NURSE_BASELINE):
            if name in acuity:
                s = acuity[name]
                lines.append(
                    f"[{key}] acuity {name}: exact {s['exact_agreement']:.3f}, under-triage "
                    f"{s['under_triage_rate']:.3f}, over-triage {s['over_triage_rate']:.3f}"
                )
    for outcome, g in result.goals.items():
        lines.append(
            f"goal {outcome}: AUROC {g['auroc']:.3f} (goal >= {g['goal_auroc']}): "
            f"{'met' if g['meets_auroc'] else 'NOT met'}; margin over NEWS2 "
            f"{'met' if g['meets_margin_over_news2'] else 'NOT met'}; not below GBM "
            f"{'met' if g['not_below_gbm'] else 'NOT met'}"
        )
    lines.append(f"Reports: {result.report_dir}")
    return lines
