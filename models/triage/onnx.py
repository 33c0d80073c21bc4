"""ONNX export of the triage network and the onnxruntime wrapper used by evaluation and serving.

Export needs torch (imported inside :func:`export_triage_onnx`); the runtime needs only onnxruntime, numpy
and pandas, so serving can run without torch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.errors import ModelArtifactError
from models.labels import OUTCOMES
from models.model_card import ModelCard
from models.onnx_file import open_onnx_model, write_card_metadata
from models.triage.columns import Columns, as_columns, float_column, n_rows, object_column, take
from models.triage.decision import recommend_levels, weights_by_age
from models.triage.features import FeatureEncoder
from models.triage.marginal import combine_marginal, marginalise
from models.triage.news2_arrays import apply_floor_arrays
from models.triage.safety_floor import safety_floor

if TYPE_CHECKING:
    from models.triage.net import CalibratedTriageNet

INPUT_NAMES = ("numeric", "missing", "categorical", "tokens", "danger")
OUTPUT_NAMES = ("acuity_probs", "outcome_probs")


def export_triage_onnx(model: CalibratedTriageNet, example: dict[str, np.ndarray], card: ModelCard, path: Path) -> Path:
    """Export with a dynamic batch axis and the model card in the ONNX metadata.

    Parameters
    ----------
    model : CalibratedTriageNet
        The calibrated network, put in eval mode here.
    example : dict
        Encoded example inputs (see :meth:`models.triage.features.FeatureEncoder.transform`), batch >= 2.
    card : ModelCard
        Written into ``metadata_props`` under :data:`models.model_card.CARD_METADATA_KEY`.
    path : Path
        Destination ``.onnx`` file (single file, no external data).
    """
    import torch

    model.eval()
    args = tuple(torch.from_numpy(example[name]) for name in INPUT_NAMES)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # All inputs share one batch Dim on purpose; the exporter warns that the name is reused.
        warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used")
        _export(torch, model, args, path)
    write_card_metadata(path, card)
    return path


def _export(torch: Any, model: Any, args: tuple[Any, ...], path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=1_000_000)
    torch.onnx.export(
        model,
        args,
        str(path),
        dynamo=True,
        external_data=False,
        verbose=False,
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={name: {0: batch} for name in INPUT_NAMES},
    )


@dataclass
class TriagePrediction:
    """Predictions for a batch of validated records; arrays share the batch order.

    ``recommended_level`` is ``min(model_level, floor_level)``: the safety floor of :mod:`models.triage.safety_floor`
    (ACVPU, red-flag complaint, paediatric physiology under 16, NEWS2 from 16), with its source and reasons.
    """

    acuity_probs: np.ndarray  # [B, 5], columns are levels 1..5
    model_level: np.ndarray  # [B] the model's level by the card's decision rule, before the safety floor
    recommended_level: np.ndarray  # [B] after the safety floor
    floor_raised: np.ndarray  # [B] bool: the safety floor made the recommendation more urgent
    p_admitted: np.ndarray  # [B]
    p_critical: np.ndarray  # [B]
    news2_score: np.ndarray  # [B]
    news2_floor: np.ndarray  # [B] the NEWS2 band's floor where NEWS2 applies (16 and over), else 5
    floor_level: np.ndarray | None = None  # [B] the safety floor applied (5: none)
    #: [B] object: one of models.triage.safety_floor.FLOOR_SOURCES ("acvpu", "red_flag_complaint", "paediatric", ...)
    floor_source: np.ndarray | None = None
    floor_reasons: list[tuple[str, ...]] = field(default_factory=list)  # [B] why the floor is what it is
    red_flags: list[tuple[str, ...]] = field(default_factory=list)  # [B] red-flag ids found in the complaint
    #: NEWS2 with its breakdown (:func:`models.triage.news2_arrays.news2_arrays`'s keys); one record:
    #: :func:`models.triage.news2.result_at`. Empty where the prediction was not made by :meth:`TriageOnnxModel.decide`.
    news2: dict[str, np.ndarray] = field(default_factory=dict)


class TriageOnnxModel:
    """An exported triage model loaded in onnxruntime, with its card and preprocessing."""

    def __init__(self, path: Path, *, threads: int | None = None, expected_sha256: str | None = None) -> None:
        path = Path(path)
        self.session, self.card, self.sha256 = open_onnx_model(path, threads=threads, expected_sha256=expected_sha256)
        try:
            self.encoder = FeatureEncoder.from_dict(self.card.features)
        except (KeyError, ValueError) as exc:
            raise ModelArtifactError(f"{path.name} is not a triage model ({self.card.name}): {exc}") from exc
        self.path = path

    def run_encoded(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Run the graph on encoded inputs; returns (acuity_probs [B,5], outcome_probs [B,2]).

        A record that leaves blank a field training always recorded (sex) is scored as the mixture over that
        field's values (:func:`models.triage.marginal.marginalise`).
        """
        n = len(inputs["categorical"])
        expanded, rows, weights = marginalise(self.encoder, inputs)
        acuity, outcomes = self.session.run(list(OUTPUT_NAMES), {k: expanded[k] for k in INPUT_NAMES})
        if len(rows) == n:  # nothing blank: marginalise passed every row through, in order
            return acuity, outcomes
        return combine_marginal(acuity, rows, weights, n), combine_marginal(outcomes, rows, weights, n)

    def predict(self, frame: pd.DataFrame | Columns, *, batch_size: int = 4096) -> TriagePrediction:
        """Predict for validated records (a DataFrame or :mod:`models.triage.columns` columns), applying the NEWS2
        safety floor."""
        cols = as_columns(frame)
        acuity_parts, outcome_parts = [], []
        for start in range(0, n_rows(cols), batch_size):
            part = take(cols, slice(start, start + batch_size))
            a, o = self.run_encoded(self.encoder.transform(part))
            acuity_parts.append(a)
            outcome_parts.append(o)
        acuity = np.concatenate(acuity_parts) if acuity_parts else np.zeros((0, 5), np.float32)
        outcomes = np.concatenate(outcome_parts) if outcome_parts else np.zeros((0, 2), np.float32)
        return self.decide(cols, acuity, outcomes)

    def decide(self, frame: pd.DataFrame | Columns, acuity: np.ndarray, outcomes: np.ndarray) -> TriagePrediction:
        """Apply the card's decision rule and the safety floor (:func:`models.triage.safety_floor.safety_floor`) to the
        graph's outputs for ``frame``."""
        columns = as_columns(frame)
        rule = self.card.decision_rule
        weights = weights_by_age(
            float_column(columns, "age_years", len(acuity)),
            float(rule["under_triage_weight"]),
            rule.get("under_triage_weight_by_age_band"),
            object_column(columns, "sex", len(acuity)),
            rule.get("under_triage_weight_by_age_band_sex"),
        )
        model_level = recommend_levels(acuity, weights)
        floor = safety_floor(columns)
        recommended, raised = apply_floor_arrays(model_level, floor.level)
        return TriagePrediction(
            acuity_probs=acuity,
            model_level=model_level,
            recommended_level=recommended,
            floor_raised=raised,
            p_admitted=outcomes[:, OUTCOMES.index("admitted")],
            p_critical=outcomes[:, OUTCOMES.index("critical")],
            news2_score=floor.news2_score,
            news2_floor=floor.news2_floor,
            floor_level=floor.level,
            floor_source=floor.source,
            floor_reasons=floor.reasons,
            red_flags=floor.red_flags,
            news2=floor.news2,
        )

    def describe(self) -> dict[str, Any]:
        """Name, version, sha256 and the card's headline fields."""
        return {
            "name": self.card.name,
            "version": self.card.version,
            "sha256": self.sha256,
            "synthetic_data": self.card.synthetic_data,
        }
