"""ONNX export, static INT8 quantisation and the onnxruntime wrapper of the chest X-ray model.

The runtime goes from DICOM bytes to second-read flags through the one pixel path (:mod:`models.imaging.pixels`)
and needs no torch. The model card (findings, operating thresholds, calibration, pixel-path version)
travels in the ONNX metadata, as for the triage model.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pydicom import Dataset

from models.errors import ModelArtifactError, OutsideIntendedUseError
from models.imaging.dicom_read import read_dicom
from models.imaging.pixels import IMAGE_MEAN, IMAGE_STD, PIXEL_PATH_VERSION, load_dicom_for_model
from models.intended_use import EVALUATED, FindingRelease, dicom_age_years
from models.labels import IMAGING_FINDINGS
from models.model_card import ModelCard
from models.onnx_file import open_onnx_model, write_card_metadata

#: Graph input and output names of the exported network (defined here, not in imaging_net, so the runtime
#: needs no torch).
IMAGING_INPUT_NAME = "image"
IMAGING_OUTPUT_NAMES = ("probabilities", "heatmaps")
#: Images per onnxruntime run in :meth:`ImagingOnnxModel.run` (bounds activation memory).
RUN_CHUNK = 32


def export_imaging_onnx(model: Any, image_size: int, card: ModelCard, path: Path) -> Path:
    """Export the calibrated network (probabilities + heat maps) with a dynamic batch axis."""
    import torch

    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 1, image_size, image_size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            external_data=False,
            verbose=False,
            input_names=[IMAGING_INPUT_NAME],
            output_names=list(IMAGING_OUTPUT_NAMES),
            dynamic_shapes={IMAGING_INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=4096)}},
        )
    write_card_metadata(path, card)
    return path


def quantize_int8(fp32_path: Path, calibration_images: np.ndarray, out_path: Path, card: ModelCard) -> Path:
    """Static INT8 (QDQ, per-channel weights) of the convolutions, calibrated on ``calibration_images``.

    Only ``Conv`` nodes are quantised: they hold the compute; the hard-swish, squeeze-excitation, head, sigmoid
    and heat-map ops stay in float, where quantising them moved probabilities more for no speed.

    ``quant_pre_process`` first (shape inference and graph optimisation), as onnxruntime recommends.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):
        def __init__(self, images: np.ndarray) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = iter(
                {IMAGING_INPUT_NAME: images[i : i + 16].astype(np.float32)} for i in range(0, len(images), 16)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    prepared = out_path.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(out_path),
        _Reader(calibration_images),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv"],
    )
    prepared.unlink(missing_ok=True)
    write_card_metadata(out_path, card)
    return out_path


@dataclass
class SecondRead:
    """Second-read result for one image.

    ``probabilities`` holds the network's output for every finding (internal: never shown for a finding that is
    not ``evaluated``); ``status`` and ``status_reason`` say, per finding, whether it was evaluated on this image,
    not validated by the release gate, or outside its intended use (:mod:`models.intended_use`). Only evaluated
    findings are flagged, shown, reported in the SR or drawn as a heat map.
    """

    probabilities: dict[str, float]
    thresholds: dict[str, float]
    flags: dict[str, bool]
    flagged: bool
    heatmaps: np.ndarray  # [F, S, S] in [0, 1]
    image: np.ndarray  # [S, S] the prepared input (normalised)
    source: dict[str, Any]  # technical metadata and UIDs of the source instance
    dataset: Dataset | None = None  # the source instance, for the structured report
    timings_ms: dict[str, float] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    status_reason: dict[str, str] = field(default_factory=dict)
    #: When no finding was evaluated: the attribute that decided (PatientAge, ViewPosition) or "findings".
    outside_field: str = "findings"

    def evaluated(self, finding: str) -> bool:
        return self.status.get(finding, EVALUATED) == EVALUATED

    @property
    def evaluated_findings(self) -> list[str]:
        """The findings evaluated on this image, in model output order."""
        return [f for f in self.probabilities if self.evaluated(f)]

    @property
    def shown_probabilities(self) -> dict[str, float | None]:
        """Every finding's probability as shown to a client: None where the finding was not evaluated."""
        return {f: (p if self.evaluated(f) else None) for f, p in self.probabilities.items()}

    @property
    def flagged_findings(self) -> list[str]:
        """The findings at or above their operating threshold, in model output order."""
        return [f for f in self.probabilities if self.flags[f]]

    @property
    def top_finding(self) -> str | None:
        """The flagged finding with the highest probability, else the most probable evaluated finding (the heat
        map's); None when no finding was evaluated on this image."""
        candidates = self.flagged_findings or self.evaluated_findings
        return max(candidates, key=lambda f: self.probabilities[f]) if candidates else None

    def structured_report(self, algorithm_name: str, algorithm_version: str) -> Any:
        """The TID 1500 Comprehensive 3D SR of this read, referencing the source instance: a measurement group per
        evaluated finding, and a text item per finding that was not evaluated, with the reason.

        Raises
        ------
        OutsideIntendedUseError
            No finding was evaluated on this image (its ``field`` names the deciding attribute).
        """
        from models.imaging.sr import FindingResult, build_second_read_sr

        if self.dataset is None:
            raise ValueError("a structured report needs the source dataset; read it with second_read_dicom")
        if not self.evaluated_findings:
            raise OutsideIntendedUseError(
                self.outside_field,
                "no finding of this model is released for this image "
                "(" + "; ".join(sorted(set(self.status_reason.values()))) + "), so there "
                "is no second read to report",
            )
        findings = [
            FindingResult(f, self.probabilities[f], self.thresholds[f], self.flags[f]) for f in self.evaluated_findings
        ]
        not_evaluated = {
            f: self.status_reason.get(f, self.status.get(f, "")) for f in self.probabilities if not self.evaluated(f)
        }
        return build_second_read_sr(
            self.dataset,
            findings,
            algorithm_name=algorithm_name,
            algorithm_version=algorithm_version,
            not_evaluated=not_evaluated,
        )

    def heatmap_png(self, finding: str | None = None) -> bytes:
        """The prepared image with a heat map overlaid in red, as PNG bytes.

        ``finding`` defaults to :attr:`top_finding`; with no evaluated finding the image is drawn without a map.
        A finding that was not evaluated on this image is refused (its map would show an unvalidated output).
        """
        import io

        from PIL import Image

        names = list(self.probabilities)
        if finding is None:
            finding = self.top_finding
        elif finding not in names:
            raise ValueError(f"finding must be one of {names}; got {finding!r}")
        elif not self.evaluated(finding):
            raise ValueError(f"finding {finding!r} was not evaluated on this image ({self.status[finding]})")
        grey = np.clip(self.image * IMAGE_STD + IMAGE_MEAN, 0.0, 1.0)  # undo the pixel path's normalisation
        rgb = np.stack([grey, grey, grey], axis=-1)
        heat = self.heatmaps[names.index(finding)] if finding is not None else np.zeros_like(grey)
        alpha = 0.5 * heat[..., None]
        rgb = (1 - alpha) * rgb + alpha * np.array([1.0, 0.0, 0.0])
        buffer = io.BytesIO()
        Image.fromarray((rgb * 255).astype(np.uint8)).save(buffer, format="PNG", compress_level=1)  # speed over size
        return buffer.getvalue()


class ImagingOnnxModel:
    """An exported chest X-ray model in onnxruntime, with its card, thresholds and pixel path."""

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        expected_sha256: str | None = None,
        release: FindingRelease | None = None,
    ) -> None:
        path = Path(path)
        self.session, self.card, self.sha256 = open_onnx_model(path, threads=threads, expected_sha256=expected_sha256)
        pixel = self.card.features.get("pixel_path_version")
        if pixel != PIXEL_PATH_VERSION:
            raise ModelArtifactError(f"model expects pixel path {pixel!r}; this build has {PIXEL_PATH_VERSION!r}")
        self.image_size = int(self.card.features["image_size"])
        self.findings = tuple(self.card.features["findings"])
        if self.findings != IMAGING_FINDINGS:
            raise ModelArtifactError(f"model findings {self.findings} differ from this build's {IMAGING_FINDINGS}")
        self.thresholds = {k: float(v) for k, v in self.card.decision_rule["operating_thresholds"].items()}
        self.path = path
        #: Which findings are released and for whom; None: no decision, every finding evaluated (training,
        #: evaluation and the release gate's own runs; serving always passes the recorded decision).
        self.release = release

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [N, F] and heat maps [N, F, S, S] for prepared images [N, 1, S, S].

        Run in chunks of :data:`RUN_CHUNK` images: the graph reads each image as up to 40 members (orientations and
        display saturations), so one run over thousands of images would hold tens of GB of activations.
        """
        images = np.asarray(images, dtype=np.float32)
        outputs = [
            self.session.run(list(IMAGING_OUTPUT_NAMES), {IMAGING_INPUT_NAME: images[i : i + RUN_CHUNK]})
            for i in range(0, len(images), RUN_CHUNK)
        ]
        if len(outputs) == 1:
            return outputs[0][0], outputs[0][1]
        return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])

    def flags(self, probabilities: np.ndarray) -> np.ndarray:
        """Boolean [N, F]: finding released (see :attr:`release`) and at or above its operating threshold.

        Array inputs carry no patient attributes, so a released finding's intended population is not checked here:
        :meth:`second_read_dicom` checks it on every DICOM, and a caller with films outside a finding's population
        (e.g. the release gate's safety suite) restricts them itself.
        """
        thresholds = np.array([self.thresholds[f] for f in self.findings])[None, :]
        released = np.array([self.release is None or f in self.release.released for f in self.findings])
        return (probabilities >= thresholds) & released[None, :]

    def finding_status(self, dataset: Dataset | None, view: str | None) -> tuple[dict[str, str], dict[str, str], str]:
        """Per finding, its status on one image and the reason (:mod:`models.intended_use`); and the attribute that
        would explain why no finding was evaluated."""
        if self.release is None:
            why = "no release decision: every finding evaluated"
            return {f: EVALUATED for f in self.findings}, {f: why for f in self.findings}, "findings"
        age, _ = dicom_age_years(dataset) if dataset is not None else (None, "no DICOM header")
        status: dict[str, str] = {}
        reason: dict[str, str] = {}
        for finding in self.findings:
            status[finding], reason[finding] = self.release.status(finding, age, view)
        return status, reason, self.release.deciding_attribute(age, view)

    def second_read_dicom(self, source: Dataset | bytes | str | Path | BinaryIO) -> SecondRead:
        """DICOM instance -> validated, decoded, prepared image -> probabilities, flags and heat maps.

        Raises the typed errors of :mod:`models.imaging.pixels` for anything that is not a decodable chest radiograph.
        """
        t0 = time.perf_counter()
        dataset = read_dicom(source)
        image, meta = load_dicom_for_model(dataset, self.image_size)
        t1 = time.perf_counter()
        probs, maps = self.run(image[None])
        t2 = time.perf_counter()
        status, reason, outside = self.finding_status(dataset, meta.get("view"))
        raw = self.flags(probs)[0]
        flags = {f: bool(x) and status[f] == EVALUATED for f, x in zip(self.findings, raw, strict=True)}
        return SecondRead(
            probabilities={f: float(p) for f, p in zip(self.findings, probs[0], strict=True)},
            thresholds=dict(self.thresholds),
            flags=flags,
            flagged=any(flags.values()),
            heatmaps=maps[0],
            image=image[0],
            source=dict(meta),
            dataset=dataset,
            timings_ms={"decode_prepare": 1000 * (t1 - t0), "inference": 1000 * (t2 - t1)},
            status=status,
            status_reason=reason,
            outside_field=outside,
        )
