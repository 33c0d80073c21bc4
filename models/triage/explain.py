"""Why the triage model said what it said: occlusion attribution of each input field.

For every record and every field the model uses, the record is run again with that field replaced by a
reference a clinician can read, and the change in P(admitted) and P(critical) between the full record and the
record at the reference is that field's effect:

* a numeric field (age, vital signs, pain) is compared with the training population's typical value (its
  median, from the model card), e.g. "heart rate 140 instead of a typical 88 raised P(critical) by ...";
* a categorical field or the complaint is compared with "not recorded", a state the network learnt: every
  input was blanked in a share of the training rows (input dropout, :mod:`training.train_triage`), so "not
  recorded" means the model's average over what was recorded, not an untrained artefact.

Fields the model does not use (never observed in its training data) are not explained: they cannot move
the output. It is exact for the model served (same ONNX graph, one batched run), needs no
torch, and is honest about what it is: a one-at-a-time sensitivity, not a causal claim and not a Shapley
value (interactions between fields are not split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd

from models.labels import OUTCOMES
from models.triage.columns import Columns, as_columns, missing_mask, n_rows, object_column
from models.triage.features import AGE_BAND_FEATURE, TEXT_FEATURE

if TYPE_CHECKING:
    from models.triage.onnx import TriageOnnxModel, TriagePrediction

#: How a field's reference is named when it is "not recorded".
NOT_RECORDED: Final = "not recorded"


@dataclass(frozen=True)
class FieldEffect:
    """One field's effect on one record's outcome probabilities (full record minus field missing)."""

    field: str
    effect: dict[str, float]  # outcome -> change in probability
    reference: float | str = NOT_RECORDED  # what the field was compared with

    @property
    def magnitude(self) -> float:
        return max(abs(v) for v in self.effect.values())


def attributable_fields(model: TriageOnnxModel) -> tuple[str, ...]:
    """The record fields the model reads: numeric, categorical, and the complaint text (unused ones left out)."""
    enc = model.encoder
    fields = (*enc.numeric_features, *enc.categorical_features, TEXT_FEATURE)
    return tuple(f for f in fields if f not in enc.unused_inputs and f != AGE_BAND_FEATURE)


def reference_value(model: TriageOnnxModel, field: str) -> float | str:
    """The reference a field is compared with: the typical training value, or "not recorded"."""
    typical = model.encoder.typical.get(field)
    return round(typical, 1) if typical is not None else NOT_RECORDED


def predict_and_explain(
    model: TriageOnnxModel, frame: pd.DataFrame | Columns
) -> tuple[TriagePrediction, list[list[FieldEffect]]]:
    """The prediction of :meth:`TriageOnnxModel.predict` and the occlusion effects, from ONE batched graph run.

    The first block of the batch is the records as given, so its outputs are the prediction itself (the
    same numbers ``predict`` gives; a test checks it).
    """
    fields = attributable_fields(model)
    base = as_columns(frame)
    n = n_rows(base)
    if n == 0:
        return model.predict(base), []
    # Block 0 is the records as given; block j+1 is the same records with field j at its reference.
    stacked = {
        name: np.tile(object_column(base, name, n) if name in fields else values, len(fields) + 1)
        for name, values in base.items()
    }
    references = {name: reference_value(model, name) for name in fields}
    for j, name in enumerate(fields):
        column = stacked.get(name)
        if column is None:
            column = stacked[name] = np.full(n * (len(fields) + 1), None, dtype=object)
        ref = references[name]
        column[(j + 1) * n : (j + 2) * n] = None if ref == NOT_RECORDED else ref
    acuity, outcomes = model.run_encoded(model.encoder.transform(stacked))
    prediction = model.decide(base, acuity[:n], outcomes[:n])
    blocks = outcomes.reshape(len(fields) + 1, n, len(OUTCOMES))
    deltas = blocks[0][None, :, :] - blocks[1:]  # [fields, n, outcomes]
    present = np.stack([~missing_mask(base, name, n) for name in fields])  # [fields, n]
    effects: list[list[FieldEffect]] = []
    for row in range(n):
        row_effects = [
            FieldEffect(name, {o: float(deltas[j, row, k]) for k, o in enumerate(OUTCOMES)}, references[name])
            for j, name in enumerate(fields)
            if present[j, row]
        ]
        effects.append(sorted(row_effects, key=lambda e: e.magnitude, reverse=True))
    return prediction, effects
