"""Why the triage model said what it said: occlusion attribution of each input field.

For every record and every field the model uses, the record is run again with that field missing (the model
was trained with explicit missingness indicators, so "missing" is a state it knows, not an imputed normal
value). The change in P(admitted) and P(critical) between the full record and the record without the field
is that field's effect. It is exact for the model served (same ONNX graph, one batched run), needs no
torch, and is honest about what it is: a one-at-a-time sensitivity, not a causal claim and not a Shapley
value (interactions between fields are not split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd

from models.columns import Columns, as_columns, missing_mask, n_rows, object_column
from models.labels import OUTCOMES

if TYPE_CHECKING:
    from models.onnx_runtime import TriageOnnxModel, TriagePrediction

#: Record fields whose effect is measured, in the encoder's terms (numeric, categorical, complaint text).
TEXT_FEATURE: Final = "chief_complaint"


@dataclass(frozen=True)
class FieldEffect:
    """One field's effect on one record's outcome probabilities (full record minus field missing)."""

    field: str
    effect: dict[str, float]  # outcome -> change in probability

    @property
    def magnitude(self) -> float:
        return max(abs(v) for v in self.effect.values())


def attributable_fields(model: TriageOnnxModel) -> tuple[str, ...]:
    """The record fields the model reads: numeric, categorical, and the complaint text."""
    enc = model.encoder
    return (*enc.numeric_features, *enc.categorical_features, TEXT_FEATURE)


def predict_and_explain(model: TriageOnnxModel,
                        frame: pd.DataFrame | Columns) -> tuple[TriagePrediction, list[list[FieldEffect]]]:
    """The prediction of :meth:`TriageOnnxModel.predict` and the occlusion effects, from ONE batched graph run.

    The first block of the batch is the records as given, so its outputs are the prediction itself (the
    same numbers ``predict`` gives; a test checks it).
    """
    fields = attributable_fields(model)
    base = as_columns(frame)
    n = n_rows(base)
    if n == 0:
        return model.predict(base), []
    # Block 0 is the records as given; block j+1 is the same records with field j missing.
    stacked = {name: np.tile(object_column(base, name, n) if name in fields else values, len(fields) + 1)
               for name, values in base.items()}
    for j, name in enumerate(fields):
        column = stacked.get(name)
        if column is None:
            column = stacked[name] = np.full(n * (len(fields) + 1), None, dtype=object)
        column[(j + 1) * n : (j + 2) * n] = None
    acuity, outcomes = model.run_encoded(model.encoder.transform(stacked))
    prediction = model.decide(base, acuity[:n], outcomes[:n])
    blocks = outcomes.reshape(len(fields) + 1, n, len(OUTCOMES))
    deltas = blocks[0][None, :, :] - blocks[1:]  # [fields, n, outcomes]
    present = np.stack([~missing_mask(base, name, n) for name in fields])  # [fields, n]
    effects: list[list[FieldEffect]] = []
    for row in range(n):
        row_effects = [FieldEffect(name, {o: float(deltas[j, row, k]) for k, o in enumerate(OUTCOMES)})
                       for j, name in enumerate(fields) if present[j, row]]
        effects.append(sorted(row_effects, key=lambda e: e.magnitude, reverse=True))
    return prediction, effects
