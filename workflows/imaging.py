"""The main job for the chest X-ray model: images -> torchvision -> ONNX fp32 (parity) -> INT8 where accuracy
holds -> evaluation -> MLflow registry. Composes the packages only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.imaging_report import evaluate_imaging, write_imaging_report
from evaluation.metrics.discrimination import auroc
from evaluation.results import ImagingEvaluation
from models.errors import DataSourceError, ModelArtifactError
from models.imaging.net import readings_per_image, saturation_tails
from models.imaging.onnx import ImagingOnnxModel, export_imaging_onnx, quantize_int8
from models.imaging.pixels import PIXEL_PATH_VERSION
from models.labels import IMAGING_FINDING_CODES, IMAGING_FINDINGS
from models.model_card import ModelCard
from models.onnx_file import sha256_file
from models.registry import IMAGING_MODEL, Tag
from training.config import ImagingTrainConfig
from training.data import resolve_data_dir
from training.data.imaging import ImagingDataset, concatenate, load_kermany, load_nih, synthetic_imaging
from training.tracking import git_commit, log_onnx_model_run, tracking_settings
from training.train_imaging import save_imaging_weights, train_imaging
from workflows.triage import REPO_DIR, work_dir

log = logging.getLogger(__name__)

REGISTERED_IMAGING_MODEL = IMAGING_MODEL
PARITY_TOLERANCE = 1e-4


@dataclass
class ImagingRunResult:
    """What the imaging part of the main job produced."""

    synthetic: bool
    fp32_path: Path
    shipped_path: Path
    shipped_precision: str
    parity_max_abs_diff: float
    int8: dict[str, Any]
    evaluations: dict[str, ImagingEvaluation]
    thresholds: dict[str, float]
    registered_version: str
    run_id: str
    report_dir: Path


def load_imaging_data(config: ImagingTrainConfig, data_dir: Path | None, progress: bool) -> tuple[bool, ImagingDataset]:
    """NIH + Kermany when present, else the seeded synthetic set (and say so)."""
    root = resolve_data_dir(data_dir)
    try:
        nih = load_nih(root, config.image_size, config.seed, progress=progress)
        kermany = load_kermany(root, config.image_size, config.seed, progress=progress)
    except DataSourceError as exc:
        log.warning(
            "NO REAL IMAGING DATA FOUND (%s): training on SYNTHETIC images; figures say nothing about "
            "clinical performance.",
            exc,
        )
        return True, synthetic_imaging(config.synthetic_n, config.image_size, config.seed)
    return False, concatenate([nih, kermany])


def _auroc_by_finding(data: ImagingDataset, probs: np.ndarray) -> dict[str, float]:
    out = {}
    for j, finding in enumerate(IMAGING_FINDINGS):
        rows = data.mask[:, j] > 0
        y = data.labels[rows, j]
        if rows.any() and 0 < y.sum() < len(y):
            out[finding] = float(auroc(y.astype(int), probs[rows, j]))
    return out


def run_imaging(
    config: ImagingTrainConfig, *, data_dir: Path | None = None, out_dir: Path | None = None, progress: bool = True
) -> ImagingRunResult:
    """Train, export, quantise where accuracy holds, evaluate, and register the chest X-ray model."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = out_dir or work_dir() / "runs" / f"imaging-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    synthetic, data = load_imaging_data(config, data_dir, progress)
    counts = data.meta.groupby(["source", "split"]).size().to_dict()
    log.info("imaging data: %s", counts)
    trained = train_imaging(data, config, progress=progress)
    val, test = data.split("validation"), data.split("test")

    card = ModelCard(
        name=REGISTERED_IMAGING_MODEL,
        version=stamp,
        task="Chest X-ray second read: per-finding probabilities, flags at operating thresholds, heat maps",
        created_utc=stamp,
        intended_use=(
            "A second reader for adult and paediatric frontal chest radiographs (CR/DX) in the ED: "
            "flags studies where a finding passes its operating threshold so that a clinician looks "
            "again. It does not rule findings out and does not report."
        ),
        out_of_scope=[
            "Primary reading or reporting without a radiologist or clinician",
            "Lateral views, non-chest or non-radiograph images (refused by the pixel path)",
            "Detection of findings it was not trained on (anything outside the findings listed)",
        ],
        features={
            "pixel_path_version": PIXEL_PATH_VERSION,
            "image_size": config.image_size,
            "findings": list(IMAGING_FINDINGS),
            "finding_codes": {k: list(v) for k, v in IMAGING_FINDING_CODES.items()},
            "architecture": "torchvision mobilenet_v3_small (weights=None), 1-channel stem, linear head, "
            "CAM heat maps in graph",
            "averaged_readings": {
                "orientations": readings_per_image(config.dihedral_invariance, (0.0,)),
                "bright_saturations": list(saturation_tails(config.saturation_average)),
            },
        },
        calibration={
            "method": "temperature scaling per finding on validation",
            "temperatures": dict(zip(IMAGING_FINDINGS, trained.temperatures, strict=True)),
        },
        decision_rule={
            "operating_thresholds": trained.thresholds,
            "target_sensitivity": config.target_sensitivity,
            "validation_sensitivity": trained.validation_sensitivity,
            "rule": "a study is flagged for second read when any finding >= its threshold",
        },
        training={
            "config": config.to_dict(),
            "best_epoch": trained.best_epoch,
            Tag.GIT_COMMIT: git_commit(REPO_DIR),
            "images_by_source_and_split": {f"{s}/{p}": int(n) for (s, p), n in counts.items()},
        },
        data={"images_digest": data.source_files_digest, "sources": sorted(set(data.meta["source"]))},
        limitations=[
            "NIH images are 64 px (upsampled to the model's 128 px): fine findings (small nodules, small "
            "pneumothoraces) are beyond this resolution.",
            "NIH labels are text-mined from reports (about 90% accurate) and the 1,000-image subset has 264 "
            "patients: per-finding CIs are wide.",
            "Pneumonia is learned from the Kermany paediatric set only (children aged 1-5, one centre, known "
            "acquisition shortcuts): it is not validated for adults.",
            "Heat maps are class-activation maps at 4x4 feature resolution: a coarse pointer, not a segmentation.",
        ],
        synthetic_data=synthetic,
    )
    weights_path = save_imaging_weights(trained, config, out_dir / "cxr_weights.pt")
    fp32_path = export_imaging_onnx(trained.model, config.image_size, card, out_dir / "cxr_fp32.onnx")
    fp32 = ImagingOnnxModel(fp32_path, threads=config.threads)
    torch_probs, torch_maps = trained.predict(test.images[:128])
    ort_probs, ort_maps = fp32.run(test.images[:128])
    parity_probs, parity_maps = float(np.abs(torch_probs - ort_probs).max()), float(np.abs(torch_maps - ort_maps).max())
    parity = max(parity_probs, parity_maps)
    log.info(
        "imaging ONNX parity on %d test images: max |diff| %.2e (probabilities %.2e, heat maps %.2e)",
        min(128, len(test.images)),
        parity,
        parity_probs,
        parity_maps,
    )
    if parity > PARITY_TOLERANCE:
        raise ModelArtifactError(
            f"imaging ONNX parity check failed: max |diff| {parity:.2e} > {PARITY_TOLERANCE:g}; "
            "the exported graph does not compute what was trained: nothing was registered"
        )

    shipped_path, precision = fp32_path, "fp32"
    # Validation discrimination of what ships: the figure a change to the pixel path or training is judged on
    # (the test split is scored once, below, and never used to choose).
    validation_auroc = _auroc_by_finding(val, fp32.run(val.images)[0])
    int8: dict[str, Any] = {"attempted": config.quantize_int8}
    if config.quantize_int8:
        int8_path = quantize_int8(fp32_path, val.images[:256], out_dir / "cxr_int8.onnx", card)
        int8_model = ImagingOnnxModel(int8_path, threads=config.threads)
        before = {"validation": validation_auroc, "test": _auroc_by_finding(test, fp32.run(test.images)[0])}
        after = {
            name: _auroc_by_finding(split, int8_model.run(split.images)[0])
            for name, split in (("validation", val), ("test", test))
        }
        deltas = {name: {f: after[name][f] - a for f, a in before[name].items()} for name in before}
        worst = max((abs(v) for v in deltas["validation"].values()), default=0.0)
        holds = worst <= config.int8_max_auroc_drop
        int8.update(
            auroc_change=deltas,
            worst_validation_change=worst,
            accuracy_holds=holds,
            rule=f"ship INT8 only if every finding's validation AUROC changes by <= {config.int8_max_auroc_drop}",
        )
        if holds:
            shipped_path, precision, validation_auroc = int8_path, "int8", after["validation"]
        log.info("INT8: worst validation AUROC change %.4f -> shipping %s", worst, "int8" if holds else "fp32")
    shipped = ImagingOnnxModel(shipped_path, threads=config.threads)
    log.info(
        "imaging validation AUROC (%s): %s", precision, ", ".join(f"{f} {v:.3f}" for f, v in validation_auroc.items())
    )
    card.metrics = {
        "parity_max_abs_diff": parity,
        "int8": int8,
        "shipped_precision": precision,
        "validation_auroc": validation_auroc,
    }

    evaluations: dict[str, ImagingEvaluation] = {}
    artefacts: list[Path] = []
    for source in sorted(set(test.meta["source"])):
        part = test.subset(np.flatnonzero(test.meta["source"].to_numpy() == source))
        probs, _ = shipped.run(part.images)
        result = evaluate_imaging(
            part.labels,
            part.mask,
            probs,
            trained.thresholds,
            part.meta["patient_id"].to_numpy(),
            IMAGING_FINDINGS,
            dataset=f"{source} (held-out patients)",
            n_boot=config.bootstrap_resamples,
            seed=config.seed,
        )
        result = replace(result, precision=precision, synthetic_data=synthetic)
        evaluations[source] = result
        title = f"Chest X-ray evaluation: {source}" + (" (SYNTHETIC DATA)" if synthetic else "")
        artefacts += write_imaging_report(
            result, part.labels, part.mask, probs, IMAGING_FINDINGS, out_dir, f"imaging_{source}", title
        )
    example = write_example_sr(shipped, card, resolve_data_dir(data_dir), out_dir)
    if example is not None:
        artefacts += example
    card.metrics["test"] = {
        s: {f: e.auroc.to_dict() if e.auroc else None for f, e in r.findings.items()} for s, r in evaluations.items()
    }
    (out_dir / "imaging_model_card.md").write_text(card.to_markdown(), encoding="utf-8")
    (out_dir / "imaging_model_card.json").write_text(card.to_json(), encoding="utf-8")
    (out_dir / "int8.json").write_text(json.dumps(int8, indent=2), encoding="utf-8")
    artefacts += [out_dir / "imaging_model_card.md", out_dir / "int8.json", fp32_path, weights_path]
    metrics = {
        "parity_max_abs_diff": parity,
        **{f"validation.{f}.auroc": v for f, v in validation_auroc.items()},
        **{name: value for s, r in evaluations.items() for name, value in r.metrics(s).items()},
    }
    registered = log_onnx_model_run(
        tracking_settings(work_dir(), IMAGING_MODEL),
        params=config.to_dict(),
        tags={
            Tag.GIT_COMMIT: git_commit(REPO_DIR),
            Tag.SYNTHETIC_DATA: str(synthetic).lower(),
            "images_digest": data.source_files_digest,
            Tag.ONNX_SHA256: sha256_file(shipped_path),
            "precision": precision,
            "pixel_path": PIXEL_PATH_VERSION,
        },
        metrics=metrics,
        history=trained.history,
        artifacts=artefacts,
        onnx_path=shipped_path,
        registered_model_name=REGISTERED_IMAGING_MODEL,
        card_json=card.to_json(),
    )
    return ImagingRunResult(
        synthetic,
        fp32_path,
        shipped_path,
        precision,
        parity,
        int8,
        evaluations,
        trained.thresholds,
        registered.version,
        registered.run_id,
        out_dir,
    )


EXAMPLE_DICOM = Path("imaging/dicom_fixtures/chest/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")


def write_example_sr(model: ImagingOnnxModel, card: ModelCard, data_root: Path, out_dir: Path) -> list[Path] | None:
    """Second-read a public chest DICOM fixture and write its SR and heat map, checked by a round trip."""
    from models.imaging.sr import sr_to_bytes
    from models.imaging.sr_read import read_second_read_sr

    source = data_root / EXAMPLE_DICOM
    if not source.is_file():
        log.warning("example DICOM not found (%s): no example SR written", source)
        return None
    read = model.second_read_dicom(source.read_bytes())
    data = sr_to_bytes(read.structured_report(card.name, card.version))
    parsed = read_second_read_sr(data)
    for finding, value in read.probabilities.items():
        if abs(parsed["findings"][finding]["probability"] - value) > 1e-9:
            raise ModelArtifactError(f"example SR round trip changed the probability of {finding}")
    paths = [out_dir / "example_second_read_sr.dcm", out_dir / "example_heatmap.png"]
    paths[0].write_bytes(data)
    paths[1].write_bytes(read.heatmap_png())
    return paths


def imaging_summary_lines(result: ImagingRunResult) -> list[str]:
    """Plain-language summary for the terminal."""
    lines = []
    if result.synthetic:
        lines.append("!! NO REAL IMAGING DATA FOUND: the chest X-ray model was trained on SYNTHETIC images.")
    lines.append(
        f"Chest X-ray ONNX: {result.shipped_path} ({result.shipped_precision}; parity fp32 vs torch "
        f"{result.parity_max_abs_diff:.1e})"
    )
    if result.int8.get("attempted"):
        lines.append(
            f"INT8: worst validation AUROC change {result.int8['worst_validation_change']:.4f}; "
            f"{'shipped' if result.int8['accuracy_holds'] else 'NOT shipped (accuracy did not hold)'}"
        )
    for source, ev in result.evaluations.items():
        parts = [f"{f} {value:.3f}" for f, value in ev.auroc().items()]
        lines.append(f"[imaging {source}] AUROC: " + ", ".join(parts))
    lines.append(f"MLflow: registered {REGISTERED_IMAGING_MODEL} version {result.registered_version} as @candidate")
    return lines
