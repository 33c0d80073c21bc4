"""Property tests of the triage record validation: valid field values always validate (record and frame agree),
and any one field made invalid is reported under that field's name, and only that one.

tests/models/test_triage_record.py covers the numeric ranges one field at a time; these cover whole records
over every field of :data:`RECORD_FIELDS`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import RecordValidationErrors
from models.triage.record import (
    BOOLEAN_FIELDS,
    CATEGORICAL_BY_NAME,
    DATETIME_FIELDS,
    NUMERIC_BY_NAME,
    RECORD_FIELDS,
    TEXT_FIELDS,
    NumericField,
    validate_record,
)
from models.triage.record_frame import validate_frame


def _any_case(value: str) -> st.SearchStrategy[str]:
    return st.sampled_from([value, value.lower(), value.upper(), value.title(), f" {value} "])


def _valid_number(spec: NumericField) -> st.SearchStrategy[Any]:
    if spec.integer:
        inside: st.SearchStrategy[Any] = st.integers(int(spec.low), int(spec.high))
    else:
        inside = st.floats(spec.low, spec.high, allow_nan=False)
    return st.one_of(inside, inside.map(str))  # a number, or its text as in a CSV cell


def _valid_value(name: str) -> st.SearchStrategy[Any]:
    """Valid values of one field; optional fields may be missing (None or an empty string)."""
    if name in NUMERIC_BY_NAME:
        value = _valid_number(NUMERIC_BY_NAME[name])
    elif name in CATEGORICAL_BY_NAME:
        value = st.sampled_from(CATEGORICAL_BY_NAME[name].values).flatmap(_any_case)
    elif name in BOOLEAN_FIELDS:
        value = st.sampled_from([True, False, "true", "FALSE", "yes", "No", "y", "n", "1", "0"])
    elif name in TEXT_FIELDS:
        value = st.text(max_size=TEXT_FIELDS[name])
    else:
        assert name in DATETIME_FIELDS
        moment = st.datetimes(datetime(1950, 1, 1), datetime(2100, 1, 1))
        value = st.one_of(moment, moment.map(datetime.isoformat), moment.map(lambda m: m.strftime("%Y-%m-%d %H:%M")))
    if name in ("age_years", "sex"):
        return value
    return st.one_of(value, st.sampled_from([None, ""]))


@st.composite
def valid_records(draw: st.DrawFn) -> dict[str, Any]:
    record = {name: draw(_valid_value(name)) for name in RECORD_FIELDS}
    sbp, dbp = record["sbp"], record["dbp"]
    if sbp not in (None, "") and dbp not in (None, "") and float(dbp) >= float(sbp):
        record["dbp"] = None  # diastolic below systolic is part of a valid record
    absent = draw(st.sets(st.sampled_from([n for n in RECORD_FIELDS if n not in ("age_years", "sex")])))
    return {name: value for name, value in record.items() if name not in absent}


def _invalid_value(name: str) -> st.SearchStrategy[Any]:
    """Values of ``name`` that must be refused whatever the rest of the record holds."""
    if name in NUMERIC_BY_NAME:
        spec = NUMERIC_BY_NAME[name]
        outside = st.one_of(
            st.floats(max_value=spec.low, exclude_max=True, allow_nan=False),
            st.floats(min_value=spec.high, exclude_min=True, allow_nan=False),
        )
        options = [outside, outside.map(repr), st.sampled_from(["fast", "98%", "36,6", "NA", "-"]), st.just(True)]
        if spec.integer:
            options.append(st.integers(int(spec.low), int(spec.high) - 1).map(lambda v: v + 0.5))
        if spec.required:
            options.append(st.sampled_from([None, "", "  "]))
        return st.one_of(*options)
    if name in CATEGORICAL_BY_NAME:
        allowed = {v.lower() for v in CATEGORICAL_BY_NAME[name].values}
        unknown = st.text(min_size=1, max_size=12).filter(lambda t: t.strip() and t.strip().lower() not in allowed)
        return unknown
    if name in BOOLEAN_FIELDS:
        return st.sampled_from(["maybe", "2", "t", "ja", "-1", "unknown"])
    if name in TEXT_FIELDS:
        limit = TEXT_FIELDS[name]
        return st.text(alphabet="abc", min_size=limit + 1, max_size=limit + 20)
    return st.sampled_from(["yesterday", "2024-13-01", "01/03/2024", "10:15", "2024-03-01T25:00"])


@settings(max_examples=150, deadline=None)
@given(valid_records())
def test_a_record_of_valid_values_always_validates_and_is_canonical(record: dict[str, Any]) -> None:
    out = validate_record(record)
    assert set(out) == set(RECORD_FIELDS)
    for name, spec in NUMERIC_BY_NAME.items():
        assert out[name] is None or spec.low <= out[name] <= spec.high
    for name, cspec in CATEGORICAL_BY_NAME.items():
        assert out[name] is None or out[name] in cspec.values
    assert out["sex"] is not None and out["age_years"] is not None
    assert validate_record(out) == out  # canonical form is a fixed point


# validate_frame costs a few hundred milliseconds a call whatever the rows: the frame properties check many
# records per call.
@settings(max_examples=15, deadline=None)
@given(st.lists(valid_records(), min_size=1, max_size=30))
def test_valid_records_validate_as_a_frame_with_the_same_values(records: list[dict[str, Any]]) -> None:
    frame, coerced = validate_frame(pd.DataFrame(records, columns=list(RECORD_FIELDS)).astype(object))
    assert coerced == {} and len(frame) == len(records)
    for i, record in enumerate(records):
        expected = validate_record(record)
        for name in (*NUMERIC_BY_NAME, *CATEGORICAL_BY_NAME):
            got = frame[name].iloc[i]
            assert (pd.isna(got) and expected[name] is None) or got == expected[name], (name, got, expected[name])


@st.composite
def one_invalid_field_per_record(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """One record per field of :data:`RECORD_FIELDS` (in a drawn order), each valid but for that field."""
    fields = draw(st.permutations(RECORD_FIELDS))
    return [(name, {**draw(valid_records()), name: draw(_invalid_value(name), label=name)}) for name in fields]


@settings(max_examples=15, deadline=None)
@given(one_invalid_field_per_record())
def test_one_invalid_field_is_reported_by_its_name_only(cases: list[tuple[str, dict[str, Any]]]) -> None:
    for row, (field, record) in enumerate(cases, start=1):
        with pytest.raises(RecordValidationErrors) as info:
            validate_record(record, row=row)
        assert [(e.field, e.row) for e in info.value.errors] == [(field, row)]
        assert f"'{field}'" in str(info.value.errors[0]) and str(info.value.errors[0]).startswith(f"row {row}: ")
    with pytest.raises(RecordValidationErrors) as frame_info:  # the frame check agrees, row by row
        validate_frame(pd.DataFrame([record for _, record in cases]).astype(object))
    found = sorted((e.row or 0, e.field) for e in frame_info.value.errors)
    assert found == [(row, field) for row, (field, _) in enumerate(cases, start=1)]


@settings(max_examples=100, deadline=None)
@given(valid_records(), st.text(min_size=1, max_size=80).filter(lambda k: k not in RECORD_FIELDS))
def test_an_unknown_key_is_refused_by_its_name_and_nothing_else(record: dict[str, Any], key: str) -> None:
    with pytest.raises(RecordValidationErrors) as info:
        validate_record({**record, key: 1})
    assert [e.field for e in info.value.errors] == [key[:64]]
