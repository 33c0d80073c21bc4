"""The canonical triage record: ranges, vocabularies and missingness, enforced the same everywhere."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import RecordValidationErrors
from models.triage.record import NUMERIC_FIELDS, RECORD_FIELDS, consciousness_from_gcs, validate_record
from models.triage.record_frame import validate_frame

VALID = {
    "age_years": 54,
    "sex": "female",
    "heart_rate": 88,
    "resp_rate": 18,
    "sbp": 132,
    "dbp": 84,
    "spo2": 97,
    "temperature_c": 37.1,
    "consciousness": "A",
    "pain_score": 3,
    "arrival_mode": "ambulance",
    "chief_complaint": "chest pain",
}


def test_valid_record_is_canonical_and_complete():
    out = validate_record(VALID)
    assert set(out) == set(RECORD_FIELDS)
    assert out["heart_rate"] == 88.0 and out["sex"] == "female" and out["gcs"] is None


def test_missing_vitals_stay_missing_not_normal():
    out = validate_record({"age_years": 30, "sex": "male"})
    for name in ("heart_rate", "resp_rate", "sbp", "spo2", "temperature_c", "consciousness", "pain_score"):
        assert out[name] is None


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("age_years", -4, r"'age_years' must be in \[0, 120\] years; got -4"),
        ("heart_rate", 400, r"'heart_rate' must be in \[20, 300\]"),
        ("spo2", 101, r"'spo2' must be in \[50, 100\] %; got 101"),
        ("temperature_c", 98.6, r"'temperature_c' must be in \[25, 45\] degC; got 98.6"),
        ("gcs", 12.5, r"'gcs' must be a whole number"),
        ("pain_score", "severe", r"'pain_score' must be a number"),
        ("sex", "x", r"'sex' must be one of \['female', 'male', 'unknown'\]; got 'x'"),
        ("consciousness", "Z", r"'consciousness' must be one of"),
        ("arrival_mode", "helicopter", r"'arrival_mode' must be one of"),
        ("on_supplemental_oxygen", "maybe", r"'on_supplemental_oxygen' must be true or false"),
        ("heart_rate", float("inf"), r"'heart_rate' must be finite"),
        ("heart_rate", True, r"got a boolean"),
    ],
)
def test_each_bad_value_names_field_and_value(field, value, pattern):
    with pytest.raises(RecordValidationErrors, match=pattern) as info:
        validate_record({**VALID, field: value})
    assert [e.field for e in info.value.errors] == [field]


def test_all_errors_reported_together_and_unknown_fields_refused():
    with pytest.raises(RecordValidationErrors) as info:
        validate_record({"age_years": 300, "sex": "male", "heart_rat": 80})
    assert {e.field for e in info.value.errors} == {"age_years", "heart_rat"}


def test_required_fields():
    with pytest.raises(RecordValidationErrors, match="'age_years' is required"):
        validate_record({"sex": "male"})


def test_inverted_blood_pressure_rejected():
    with pytest.raises(RecordValidationErrors, match="'dbp' must be below 'sbp'"):
        validate_record({**VALID, "sbp": 80, "dbp": 90})


@pytest.mark.parametrize(("gcs", "acvpu"), [(15, "A"), (14, "V"), (9, "V"), (8, "P"), (4, "P"), (3, "U")])
def test_gcs_maps_to_acvpu_when_acvpu_missing(gcs, acvpu):
    assert consciousness_from_gcs(gcs) == acvpu
    assert validate_record({"age_years": 40, "sex": "male", "gcs": gcs})["consciousness"] == acvpu


def test_recorded_acvpu_wins_over_gcs():
    assert validate_record({"age_years": 40, "sex": "male", "gcs": 15, "consciousness": "C"})["consciousness"] == "C"


def test_frame_strict_names_row_and_field():
    frame = pd.DataFrame({"age_years": [30, 200], "sex": ["male", "female"], "heart_rate": [80, "abc"]})
    with pytest.raises(RecordValidationErrors) as info:
        validate_frame(frame, mode="strict")
    found = {(e.row, e.field) for e in info.value.errors}
    assert found == {(2, "age_years"), (2, "heart_rate")}


def test_frame_coerce_counts_and_blanks():
    frame = pd.DataFrame(
        {"age_years": [30, 40], "sex": ["male", None], "heart_rate": [80, 999], "sbp": [120, 70], "dbp": [80, 90]}
    )
    out, coerced = validate_frame(frame, mode="coerce")
    assert coerced == {"heart_rate": 1, "dbp": 1}
    assert math.isnan(out["heart_rate"].iloc[1]) and math.isnan(out["sbp"].iloc[1])
    assert out["sex"].tolist() == ["male", "unknown"]


def _value_strategy(spec):
    inside = st.floats(spec.low, spec.high, allow_nan=False)
    if spec.integer:
        inside = st.integers(int(spec.low), int(spec.high)).map(float)
    outside = st.one_of(
        st.floats(max_value=spec.low, exclude_max=True, allow_nan=False, allow_infinity=False),
        st.floats(min_value=spec.high, exclude_min=True, allow_nan=False, allow_infinity=False),
    )
    return st.one_of(inside.map(lambda v: (v, True)), outside.map(lambda v: (v, False)))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(NUMERIC_FIELDS).flatmap(lambda s: st.tuples(st.just(s), _value_strategy(s))),
        min_size=1,
        max_size=20,
    )
)
def test_record_and_frame_validation_agree(cases):
    """Each record alone and all of them as one frame: the same values accepted and the same refused, the frame
    naming exactly the rows at fault (strict) or making exactly those values missing (coerce). One frame per
    example: a 1-row frame costs about as much to validate as a thousand-row one."""
    records = [{"age_years": 40, "sex": "female", spec.name: value} for spec, (value, _) in cases]
    for record, (spec, (value, ok)) in zip(records, cases, strict=True):
        if ok:
            assert validate_record(record)[spec.name] == value
        else:
            with pytest.raises(RecordValidationErrors):
                validate_record(record)
    frame = pd.DataFrame(records)
    coerced = validate_frame(frame, mode="coerce")[0]
    for row, (spec, (value, ok)) in enumerate(cases):
        got = coerced[spec.name].iloc[row]
        assert got == value if ok else np.isnan(got)
    bad_rows = {row + 1 for row, (_, (_, ok)) in enumerate(cases) if not ok}
    if not bad_rows:
        strict = validate_frame(frame)[0]
        assert all(strict[spec.name].iloc[row] == value for row, (spec, (value, _)) in enumerate(cases))
        return
    with pytest.raises(RecordValidationErrors) as caught:
        validate_frame(frame)
    assert {e.row for e in caught.value.errors} == bad_rows
