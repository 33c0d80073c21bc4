"""Feature encoding: missingness explicit, vocabulary from training only, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.triage.features import NOT_LEARNT_REASON, FeatureEncoder
from models.triage.physiology import HINGES
from models.triage.record_frame import validate_frame
from models.triage.tokens import tokenize


def _frame(rows):
    return validate_frame(pd.DataFrame(rows))[0]


ROWS = [
    {"age_years": 30, "sex": "male", "heart_rate": 80, "chief_complaint": "chest pain", "consciousness": "A"},
    {
        "age_years": 70,
        "sex": "female",
        "heart_rate": 120,
        "chief_complaint": "chest pain; dyspnea",
        "on_supplemental_oxygen": True,
    },
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
    age = enc.numeric_features.index("age_years")
    assert out["missing"][:, hr].tolist() == [0.0, 0.0, 1.0]
    # Vital signs reach the network only through the monotone hinges: the trunk's value is always 0.
    assert out["numeric"][:, hr].tolist() == [0.0, 0.0, 0.0]
    assert out["numeric"][0, age] == pytest.approx((30 - 50) / np.std([30, 70, 50]))
    hinge = [h.name for h in HINGES].index("heart_rate>110")
    assert out["danger"][:, hinge].tolist() == pytest.approx([0.0, 10 / 15, 0.0])


def test_categorical_and_tokens():
    frame = _frame(ROWS)
    enc = FeatureEncoder.fit(frame, min_token_count=2)
    assert enc.vocabulary == ["chest", "pain"]
    out = enc.transform(frame)
    chest, pain = 2, 3  # 0 pad, 1 reserved
    assert out["tokens"][0, :2].tolist() == [chest, pain]
    # A word outside the vocabulary is dropped, never an "unknown" token that could move the risk.
    assert out["tokens"][1].tolist() == [chest, pain] + [0] * (enc.max_tokens - 2)
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
    assert dense[:, names.index("heart_rate")].any()  # the baselines still see the vital signs
    probe = _frame([{"age_years": 50, "sex": "male", "heart_rate": 250}])
    assert enc.out_of_range(probe) == [["heart_rate"]]


# ---------------------------------------------------------------------------------- only what was learnt
def _nhamcs_like(n=400, seed=0):
    """Records like NHAMCS: no GCS, no ACVPU, no oxygen field, sex always recorded."""
    rng = np.random.default_rng(seed)
    return _frame(
        [
            {
                "age_years": int(rng.integers(1, 90)),
                "sex": ["female", "male"][i % 2],
                "heart_rate": float(rng.normal(85, 15)),
                "spo2": float(rng.integers(90, 100)),
                "arrival_mode": ["walk_in", "ambulance"][i % 3 == 0],
                "chief_complaint": ["chest pain", "ankle injury", "fever cough"][i % 3],
            }
            for i in range(n)
        ]
    )


def test_inputs_never_observed_in_training_are_masked_and_named():
    frame = _nhamcs_like()
    enc = FeatureEncoder.fit(frame, min_token_count=1)
    assert set(enc.unused_inputs) == {
        "gcs",
        "consciousness",
        "on_supplemental_oxygen",
        "resp_rate",
        "sbp",
        "dbp",
        "temperature_c",
        "pain_score",
    }
    given = frame.iloc[:3].copy()
    with_site_fields = given.assign(gcs=[15, 3, 9], consciousness=["A", "U", "P"], on_supplemental_oxygen=[True] * 3)
    a, b = enc.transform(given), enc.transform(with_site_fields)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert enc.ignored_fields(with_site_fields)[0] == ["gcs", "consciousness", "on_supplemental_oxygen"]
    assert enc.ignored_summary(with_site_fields)["gcs"] == {"rows_with_value": 3, "reason": NOT_LEARNT_REASON}
    usage = enc.usage()
    assert usage["inputs"]["gcs"] == {"observed_rows": 0, "used": False}
    assert usage["inputs"]["heart_rate"]["used"] is True


def test_category_value_never_observed_is_masked():
    frame = _nhamcs_like()
    enc = FeatureEncoder.fit(frame, min_token_count=1)
    assert enc.unlearnt_values["arrival_mode"] == ("other",)
    col = list(enc.categorical_features).index("arrival_mode")
    out = enc.transform(frame.iloc[:1].assign(arrival_mode="other"))
    assert out["categorical"][0, col] == 0  # the learnt "not recorded" state, not an untrained embedding
    assert enc.ignored_fields(frame.iloc[:1].assign(arrival_mode="other")) == [["arrival_mode"]]
    restored = FeatureEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert restored.unlearnt_values == enc.unlearnt_values and restored.unused_inputs == enc.unused_inputs


def test_unknown_words_are_dropped_and_near_misses_corrected():
    enc = FeatureEncoder.fit(_nhamcs_like(), min_token_count=1)
    assert enc.complaint_tokens("xqzv blorp") == []
    assert enc.complaint_tokens("chest pain xqzv") == ["chest", "pain"]
    assert enc.complaint_tokens("ankle injruy") == ["ankle", "injury"]  # a swap, one edit away
    assert enc.complaint_tokens("pian") == []  # too short to correct safely


def test_a_blank_field_training_always_recorded_is_scored_as_the_mixture_of_its_values():
    from models.triage.marginal import combine_marginal, marginalise

    frame = _nhamcs_like()
    enc = FeatureEncoder.fit(frame, min_token_count=1)
    assert enc.marginalised["sex"] == {"female": 0.5, "male": 0.5}
    assert "arrival_mode" in enc.marginalised  # recorded in every row too
    records = frame.iloc[:3].assign(sex=["unknown", "female", "male"])
    expanded, rows, weights = marginalise(enc, enc.transform(records))
    assert sorted(rows.tolist()) == [0, 0, 1, 2]
    sex = list(enc.categorical_features).index("sex")
    assert sorted(expanded["categorical"][rows == 0, sex].tolist()) == [1, 2]
    # Any model output: the blank row's output is the share-weighted mean, so it lies between the known values.
    outputs = expanded["categorical"][:, sex : sex + 1].astype(float) * 10.0
    combined = combine_marginal(outputs, rows, weights, 3)
    assert combined[:, 0].tolist() == pytest.approx([15.0, 10.0, 20.0])
    restored = FeatureEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert restored.marginalised == enc.marginalised
