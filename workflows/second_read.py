"""``vigil second-read``: one DICOM instance read by a chest X-ray model; the TID 1500 SR, the heat map and a JSON
summary written to a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.errors import InputValidationError
from models.registry import IMAGING_MODEL

__all__ = ["second_read_file"]


def second_read_file(model: str, dicom: Path, out: Path) -> dict[str, Any]:
    """Read ``dicom`` with ``model`` (an .onnx file or a registry URI); write ``second_read_sr.dcm``,
    ``heatmap.png`` and ``second_read.json`` to ``out``; return the summary.

    Raises
    ------
    models.errors.VigilError
        The model or the file cannot be found, or the instance is not a chest radiograph the model can read.
    """
    from models.imaging.onnx import ImagingOnnxModel
    from models.imaging.sr import sr_to_bytes
    from training.tracking import resolve_model_file
    from workflows.triage import work_dir

    onnx_model = ImagingOnnxModel(resolve_model_file(model, work_dir(), experiment=IMAGING_MODEL))
    if not dicom.is_file():
        raise InputValidationError("dicom", f"DICOM file not found: {dicom}")
    read = onnx_model.second_read_dicom(dicom.read_bytes())
    sr = read.structured_report(onnx_model.card.name, onnx_model.card.version)
    out.mkdir(parents=True, exist_ok=True)
    (out / "second_read_sr.dcm").write_bytes(sr_to_bytes(sr))
    (out / "heatmap.png").write_bytes(read.heatmap_png())
    summary = {
        "model": onnx_model.card.name,
        "version": onnx_model.card.version,
        "flagged": read.flagged,
        "findings": {
            f: {"probability": read.probabilities[f], "threshold": read.thresholds[f], "flag": read.flags[f]}
            for f in read.probabilities
        },
        "statement": onnx_model.card.decision_support_statement,
    }
    (out / "second_read.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
