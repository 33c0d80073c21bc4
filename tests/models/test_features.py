"""Feature encoding: missingness explicit, vocabulary from training only, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.features import FeatureEncoder, tokenize
from models.triage_record import validate_frame


def _frame(rows):
    return validate_frame(pd.DataFrame(rows))[0]


ROWS = [
    {"age_years": 30, "sex": "male", "heart_rate": 80, "chief_complaint": "chest pain", "consciousness": "A"},
    {"age_years": 70, "sex": "female", "heart_rate": 120, "chief_complaint": "chest pain; dyspnea",
     "on_supplemental_oxygen": True},
    {"age_years": 50, "sex": "unknown", "chief_complaint": None},
]


def test_tokenize():
    assert tokenize("Chest PAIN; shortness of breath") == ["chest", "pain", "shortness", "breath"]
    assert tokenize(None) == [] and tokenize(float("nan")) == []


def test_missing_is_explicit_and_zero_filled():
    frame = _frame(ROWS)
    enc = FeatureEncoder.fit(frame, min_token_count=1)
    out = enc.transform(frame)
    hr = enc.numeric_features.index("heart_rate")
    assert out["missing"][:, hr].tolist() == [0.0, 0.0, 1.0]
    assert out["numeric"][2, hr] == 0.0
    assert out["numeric"][0, hr] == pytest.approx((80 - 100) / 20)


def test_categorical_and_tokens():
    frame = _frame(ROWS)
    enc = FeatureEncoder.fit(frame, min_token_count=2)
    assert enc.vocabulary == ["chest", "pain"]
    out = enc.transform(frame)
    chest, pain = 2, 3  # 0 pad, 1 out-of-vocabulary
    assert out["tokens"][0, :2].tolist() == [chest, pain]
    assert out["tokens"][1, :3].tolist() == [chest, pain, 1]
    assert out["tokens"][2].sum() == 0
    sex = list(enc.categorical_features).index("sex")
    oxygen = list(enc.categorical_features).index("on_supplemental_oxygen")
    assert out["categorical"][:, sex].tolist() == [2, 1, 0]  # unknown sex -> the missing slot
    assert out["categorical"][:, oxygen].tolist() == [0, 2, 0]


def test_json_round_trip_gives_identical_encoding():
    frame = _frame(ROWS)
    enc = FeatureEncoder.fit(frame, min_token_count=1)
    # sort_keys: the model card is written that way; column order must survive it.
    restored = FeatureEncoder.from_dict(json.loads(json.dumps(enc.to_dict(), sort_keys=True)))
    assert list(restored.categorical_features) == list(enc.categorical_features)
    a, b = enc.transform(frame), restored.transform(frame)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_unknown_preprocessing_version_refused():
    data = FeatureEncoder.fit(_frame(ROWS), min_token_count=1).to_dict()
    data["version"] = "triage-features/0"
    with pytest.raises(ValueError, match="preprocessing version must be"):
        FeatureEncoder.from_dict(data)


def test_dense_matches_transform_width_and_out_of_range():
    frame = _frame(ROWS * 10)
    enc = FeatureEncoder.fit(frame, min_token_count=1)
    dense, names = enc.dense(frame)
    assert dense.shape == (30, len(names))
    assert dense[:, names.index("token=chest")].sum() == 20
    probe = _frame([{"age_years": 50, "sex": "male", "heart_rate": 250}])
    assert enc.out_of_range(probe) == [["heart_rate"]]
