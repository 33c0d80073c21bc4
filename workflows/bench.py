"""Benchmarks (not tests): figures written to docs/ with the command that produced them."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ImagingInputError, InputValidationError
from models.imaging.onnx import ImagingOnnxModel
from models.imaging.pixels import load_dicom_for_model


def _median_ms(fn: Callable[..., object], repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), float(np.percentile(times, 99))


def imaging_latency(model_paths: dict[str, Path], fixtures: list[Path], repeats: int, threads: int) -> list[dict]:
    """Per model and fixture: raw onnxruntime time on the prepared image, and DICOM bytes -> flags time."""
    rows: list[dict[str, Any]] = []
    for precision, path in model_paths.items():
        model = ImagingOnnxModel(path, threads=threads)
        for fixture in fixtures:
            data = fixture.read_bytes()
            try:
                image, meta = load_dicom_for_model(data, model.image_size)
            except ImagingInputError as exc:
                rows.append({"precision": precision, "fixture": fixture.name, "refused": str(exc)})
                continue
            batch = image[None]
            raw_p50, raw_p99 = _median_ms(lambda batch=batch, m=model: m.run(batch), repeats)
            full_p50, full_p99 = _median_ms(lambda data=data, m=model: m.second_read_dicom(data), repeats)
            decode_p50, _ = _median_ms(lambda data=data, m=model: load_dicom_for_model(data, m.image_size), repeats)
            rows.append(
                {
                    "precision": precision,
                    "fixture": fixture.name,
                    "size": f"{meta['rows']}x{meta['columns']}",
                    "transfer_syntax": meta["transfer_syntax"],
                    "raw_inference_p50_ms": raw_p50,
                    "raw_inference_p99_ms": raw_p99,
                    "decode_prepare_p50_ms": decode_p50,
                    "dicom_to_flags_p50_ms": full_p50,
                    "dicom_to_flags_p99_ms": full_p99,
                    "ratio_p50": full_p50 / raw_p50,
                }
            )
    return rows


def write_imaging_latency(rows: list[dict], out: Path, command: str, repeats: int, threads: int) -> Path:
    """Markdown table of :func:`imaging_latency` results."""
    lines = [
        "# Chest X-ray latency: DICOM bytes to flags vs raw onnxruntime inference",
        "",
        f"Command: `{command}`",
        f"Run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, {platform.processor() or platform.machine()}, "
        f"{threads} onnxruntime threads, median (p50) and p99 of {repeats} runs after one warm-up, batch 1.",
        "",
        "Goal (issue #3): DICOM bytes to flags at most 1.3x the raw inference time of the same model.",
        "",
        "| model | fixture | size | raw inference p50 / p99 ms | decode + prepare p50 ms | DICOM to flags p50 / p99 ms "
        "| ratio p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['precision']} | {r['fixture']} | refused: {r['refused']} | | | | |")
            continue
        lines.append(
            f"| {r['precision']} | {r['fixture']} | {r['size']} | {r['raw_inference_p50_ms']:.2f} / "
            f"{r['raw_inference_p99_ms']:.2f} | {r['decode_prepare_p50_ms']:.1f} | {r['dicom_to_flags_p50_ms']:.1f} / "
            f"{r['dicom_to_flags_p99_ms']:.1f} | {r['ratio_p50']:.1f}x |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def bench_imaging(run_dir: Path, data_dir: Path | None, *, repeats: int, threads: int, out: Path) -> Path:
    """``vigil bench-imaging``: :func:`imaging_latency` of the run's fp32 and int8 models on every chest fixture
    (``imaging/dicom_fixtures/chest`` and ``derived``), written to ``out`` with the command that produced it.

    Raises
    ------
    models.errors.InputValidationError
        ``run_dir`` holds neither cxr_fp32.onnx nor cxr_int8.onnx.
    """
    from training.data import resolve_data_dir

    models = {p: run_dir / f"cxr_{p}.onnx" for p in ("fp32", "int8") if (run_dir / f"cxr_{p}.onnx").is_file()}
    if not models:
        raise InputValidationError("run_dir", f"no cxr_fp32.onnx or cxr_int8.onnx in {run_dir}")
    root = resolve_data_dir(data_dir) / "imaging" / "dicom_fixtures"
    fixtures = sorted((root / "chest").iterdir()) + sorted((root / "derived").glob("*.dcm"))
    rows = imaging_latency(models, fixtures, repeats, threads)
    command = f"vigil bench-imaging --run-dir <run folder> --repeats {repeats} --threads {threads}"
    return write_imaging_latency(rows, out, command, repeats, threads)
