"""Occlusion attribution (models/triage/explain.py) on the served model: one graph run gives prediction and effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.triage.explain import attributable_fields, predict_and_explain
from models.triage.onnx import TriageOnnxModel
from models.triage.record import validate_record


@pytest.fixture(scope="module")
def model(registered):
    return TriageOnnxModel(registered.triage_onnx, threads=1)


def test_prediction_equals_predict_and_effects_are_exact_differences(model):
    records = [
        validate_record(
            {
                "age_years": 80,
                "sex": "female",
                "heart_rate": 120,
                "resp_rate": 28,
                "sbp": 92,
                "spo2": 89,
                "consciousness": "A",
                "chief_complaint": "chest pain",
            }
        ),
        validate_record({"age_years": 25, "sex": "male", "pain_score": 3}),
    ]
    frame = pd.DataFrame.from_records(records)
    prediction, effects = predict_and_explain(model, frame)
    plain = model.predict(frame)
    np.testing.assert_allclose(prediction.acuity_probs, plain.acuity_probs, atol=1e-6)
    np.testing.assert_array_equal(prediction.recommended_level, plain.recommended_level)
    assert {e.field for e in effects[1]} == {"age_years", "pain_score", "sex"}
    hr = next(e for e in effects[0] if e.field == "heart_rate")
    # A numeric field is compared with the training population's typical value, never with "not recorded".
    typical = model.encoder.typical["heart_rate"]
    assert hr.reference == round(typical, 1)
    at_typical = model.predict(frame.iloc[[0]].assign(heart_rate=round(typical, 1)))
    assert hr.effect["critical"] == pytest.approx(plain.p_critical[0] - at_typical.p_critical[0], abs=1e-5)
    assert hr.effect["admitted"] == pytest.approx(plain.p_admitted[0] - at_typical.p_admitted[0], abs=1e-5)
    sex = next(e for e in effects[1] if e.field == "sex")
    assert sex.reference == "not recorded"  # learnt by input dropout in training
    assert [e.magnitude for e in effects[0]] == sorted((e.magnitude for e in effects[0]), reverse=True)
    assert set(attributable_fields(model)) >= {"heart_rate", "sex", "chief_complaint"}
    assert not set(attributable_fields(model)) & set(model.encoder.unused_inputs)
