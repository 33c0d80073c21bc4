"""NEWS2 (RCP 2017): every cut point from both sides, bands, missing values, scalar/vectorised parity, floor.

Expected points are written out literally from the RCP 2017 chart, never derived from the module's own tables.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import InputValidationError
from models.triage.news2 import (
    BANDS,
    FLOOR,
    PARAMETERS,
    RESPONSE_SCORE_ZERO,
    RESPONSES,
    News2Result,
    apply_floor,
    minimum_acuity,
    news2,
    result_at,
)
from models.triage.news2_arrays import apply_floor_arrays, news2_arrays, news2_frame
from models.triage.record_frame import validate_frame

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Scores 0 on every parameter, nothing missing.
NORMAL: dict[str, Any] = {
    "resp_rate": 16.0,
    "spo2": 98.0,
    "on_supplemental_oxygen": False,
    "sbp": 125.0,
    "heart_rate": 72.0,
    "consciousness": "A",
    "temperature_c": 37.0,
    "spo2_scale_2": False,
}


def _record(**changes: Any) -> dict[str, Any]:
    return {**NORMAL, **changes}


def _arrays_for(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Call news2_arrays with the documented encodings: NaN for missing numbers and booleans."""

    def numbers(name: str) -> np.ndarray:
        return np.array([math.nan if r.get(name) is None else float(r[name]) for r in records], dtype=float)

    return news2_arrays(
        numbers("resp_rate"),
        numbers("spo2"),
        numbers("on_supplemental_oxygen"),
        numbers("sbp"),
        numbers("heart_rate"),
        np.array([r.get("consciousness") for r in records], dtype=object),
        numbers("temperature_c"),
        numbers("spo2_scale_2"),
    )


def _assert_single_parameter(record: dict[str, Any], field: str, expected: int) -> None:
    result = news2(record)
    assert result.components[field] == expected
    others = {k: v for k, v in result.components.items() if k != field}
    oxygen_points = 2 if record.get("on_supplemental_oxygen") is True else 0
    assert sum(others.values()) == (0 if field == "on_supplemental_oxygen" else oxygen_points)
    arrays = _arrays_for([record])
    assert arrays["score"][0] == result.score


def test_normal_record_scores_zero() -> None:
    result = news2(NORMAL)
    assert result.score == 0
    assert set(result.components) == set(PARAMETERS)
    assert result.missing == ()
    assert result.partial is False
    assert result.red_flag is False


# ---------------------------------------------------------------------------------------------- cut points


@pytest.mark.parametrize(
    ("value", "expected"),
    [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (4, 3), (40, 3), (8.5, 1), (20.5, 2)],
)
def test_resp_rate_cut_points(value: float, expected: int) -> None:
    _assert_single_parameter(_record(resp_rate=value), "resp_rate", expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(85, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0), (91.5, 2), (95.5, 0)],
)
def test_spo2_scale_1_cut_points(value: float, expected: int) -> None:
    _assert_single_parameter(_record(spo2=value), "spo2", expected)


@pytest.mark.parametrize("scale_2", [False, None])
def test_scale_1_is_used_unless_scale_2_is_true(scale_2: bool | None) -> None:
    # 88% is 0 on scale 2 but 3 on scale 1.
    result = news2(_record(spo2=88, spo2_scale_2=scale_2))
    assert result.components["spo2"] == 3
    assert "spo2_scale_2" not in result.missing
    assert result.partial is False


@pytest.mark.parametrize("oxygen", [False, True])
@pytest.mark.parametrize(
    ("value", "expected"),
    [(80, 3), (83, 3), (84, 2), (85, 2), (86, 1), (87, 1), (88, 0), (92, 0), (87.5, 0)],
)
def test_spo2_scale_2_cut_points_below_93_ignore_oxygen(value: float, expected: int, oxygen: bool) -> None:
    record = _record(spo2=value, spo2_scale_2=True, on_supplemental_oxygen=oxygen)
    _assert_single_parameter(record, "spo2", expected)


@pytest.mark.parametrize(
    ("value", "oxygen", "expected"),
    [
        (93, False, 0),
        (95, False, 0),
        (97, False, 0),
        (100, False, 0),
        (92.5, True, 1),
        (93, True, 1),
        (94, True, 1),
        (95, True, 2),
        (96, True, 2),
        (97, True, 3),
        (100, True, 3),
    ],
)
def test_spo2_scale_2_on_air_and_on_oxygen_at_93_and_above(value: float, oxygen: bool, expected: int) -> None:
    record = _record(spo2=value, spo2_scale_2=True, on_supplemental_oxygen=oxygen)
    _assert_single_parameter(record, "spo2", expected)
    assert news2(record).components["on_supplemental_oxygen"] == (2 if oxygen else 0)


@pytest.mark.parametrize(("oxygen", "expected"), [(True, 2), (False, 0), (1, 2), (0, 0), (np.bool_(True), 2)])
def test_supplemental_oxygen(oxygen: Any, expected: int) -> None:
    _assert_single_parameter(_record(on_supplemental_oxygen=oxygen), "on_supplemental_oxygen", expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (70, 3),
        (90, 3),
        (91, 2),
        (100, 2),
        (101, 1),
        (110, 1),
        (111, 0),
        (219, 0),
        (220, 3),
        (250, 3),
        (90.5, 2),
        (219.5, 3),
    ],
)
def test_sbp_cut_points(value: float, expected: int) -> None:
    _assert_single_parameter(_record(sbp=value), "sbp", expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (30, 3),
        (40, 3),
        (41, 1),
        (50, 1),
        (51, 0),
        (90, 0),
        (91, 1),
        (110, 1),
        (111, 2),
        (130, 2),
        (131, 3),
        (180, 3),
        (40.5, 1),
        (90.5, 1),
        (130.5, 3),
    ],
)
def test_heart_rate_cut_points(value: float, expected: int) -> None:
    _assert_single_parameter(_record(heart_rate=value), "heart_rate", expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (33.0, 3),
        (35.0, 3),
        (35.1, 1),
        (36.0, 1),
        (36.1, 0),
        (38.0, 0),
        (38.1, 1),
        (39.0, 1),
        (39.1, 2),
        (41.0, 2),
        (35.05, 1),
        (38.05, 1),
    ],
)
def test_temperature_cut_points(value: float, expected: int) -> None:
    _assert_single_parameter(_record(temperature_c=value), "temperature_c", expected)


@pytest.mark.parametrize(
    ("level", "expected"), [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3), ("v", 3), (" a ", 0)]
)
def test_acvpu_levels(level: str, expected: int) -> None:
    _assert_single_parameter(_record(consciousness=level), "consciousness", expected)
    assert news2(_record(consciousness=level)).red_flag is (expected == 3)


# ---------------------------------------------------------------------------------------- bands, responses


@pytest.mark.parametrize(
    ("changes", "score", "band", "red_flag"),
    [
        ({}, 0, "low", False),
        ({"heart_rate": 95}, 1, "low", False),
        ({"resp_rate": 22, "heart_rate": 115}, 4, "low", False),  # 2 + 2: aggregate 4, no red score
        ({"resp_rate": 22, "heart_rate": 115, "temperature_c": 38.5}, 5, "medium", False),  # 4 | 5 boundary
        ({"resp_rate": 22, "heart_rate": 115, "sbp": 95}, 6, "medium", False),
        ({"resp_rate": 22, "heart_rate": 115, "sbp": 95, "temperature_c": 38.5}, 7, "high", False),  # 6 | 7
        ({"consciousness": "V"}, 3, "low-medium", True),  # single 3, total 3
        ({"consciousness": "V", "heart_rate": 95}, 4, "low-medium", True),  # single 3, total 4
        ({"consciousness": "V", "resp_rate": 22}, 5, "medium", True),  # single 3, total 5: medium wins
        ({"consciousness": "V", "resp_rate": 22, "heart_rate": 115}, 7, "high", True),
        ({"consciousness": "U", "sbp": 85}, 6, "medium", True),  # two red scores
    ],
)
def test_aggregate_bands(changes: dict[str, Any], score: int, band: str, red_flag: bool) -> None:
    result = news2(_record(**changes))
    assert result.score == score
    assert result.band == band
    assert result.red_flag is red_flag
    assert result.minimum_acuity == FLOOR[band]
    assert result.response == (RESPONSE_SCORE_ZERO if score == 0 else RESPONSES[band])
    arrays = _arrays_for([_record(**changes)])
    assert BANDS[arrays["band_code"][0]] == band


@pytest.mark.parametrize(
    ("changes", "response"),
    [
        ({}, "ward-based response: minimum 12-hourly monitoring"),
        ({"heart_rate": 95}, "ward-based response: assessment by a registered nurse"),
        ({"consciousness": "C"}, "urgent ward-based response"),
        ({"resp_rate": 22, "heart_rate": 115, "temperature_c": 38.5}, "key threshold for urgent response"),
        ({"resp_rate": 30, "heart_rate": 140, "temperature_c": 38.5}, "urgent or emergency response"),
    ],
)
def test_response_text(changes: dict[str, Any], response: str) -> None:
    assert news2(_record(**changes)).response == response


def test_constants_cover_every_band() -> None:
    assert BANDS == ("low", "low-medium", "medium", "high")
    assert set(RESPONSES) == set(BANDS)
    assert set(FLOOR) == set(BANDS)
    floors = [FLOOR[band] for band in BANDS]
    assert floors == sorted(floors, reverse=True)  # a more urgent band never allows a less urgent level


# ----------------------------------------------------------------------------------------- worked examples


def test_worked_example_rcp_chart_high() -> None:
    # RR 23        -> 21-24       : 2
    # SpO2 94 (scale 1)  94-95    : 1
    # on oxygen                   : 2
    # SBP 108      -> 101-110     : 1
    # HR 112       -> 111-130     : 2
    # Alert                       : 0
    # Temp 38.4    -> 38.1-39.0   : 1
    # total 9 >= 7 -> high, "urgent or emergency response"; no single 3; Vigil floor level 1.
    result = news2(
        {
            "resp_rate": 23,
            "spo2": 94,
            "on_supplemental_oxygen": True,
            "sbp": 108,
            "heart_rate": 112,
            "consciousness": "A",
            "temperature_c": 38.4,
            "age_years": 71,
            "sex": "female",
        }
    )
    assert result.components == {
        "resp_rate": 2,
        "spo2": 1,
        "on_supplemental_oxygen": 2,
        "sbp": 1,
        "heart_rate": 2,
        "consciousness": 0,
        "temperature_c": 1,
    }
    assert (result.score, result.band, result.red_flag, result.minimum_acuity) == (9, "high", False, 1)
    assert result.response == "urgent or emergency response"


def test_worked_example_scale_2_copd_on_oxygen() -> None:
    # Confirmed hypercapnic respiratory failure, scale 2, on oxygen:
    # RR 24 -> 2; SpO2 95 on O2 (scale 2: 95-96 on O2) -> 2; oxygen -> 2; SBP 135 -> 0; HR 98 -> 1;
    # Alert -> 0; temp 37.4 -> 0; total 7 -> high.
    # On scale 1 the same SpO2 scores 1 (94-95), total 6 -> medium.
    record = {
        "resp_rate": 24,
        "spo2": 95,
        "on_supplemental_oxygen": True,
        "sbp": 135,
        "heart_rate": 98,
        "consciousness": "A",
        "temperature_c": 37.4,
        "spo2_scale_2": True,
    }
    on_scale_2 = news2(record)
    on_scale_1 = news2({**record, "spo2_scale_2": False})
    assert (on_scale_2.components["spo2"], on_scale_2.score, on_scale_2.band) == (2, 7, "high")
    assert (on_scale_1.components["spo2"], on_scale_1.score, on_scale_1.band) == (1, 6, "medium")


# ------------------------------------------------------------------------------------------ missing values


def test_missing_values_score_zero_and_are_listed_in_order() -> None:
    record = _record(temperature_c=math.nan, heart_rate=None, resp_rate=30)
    result = news2(record)
    assert result.components["heart_rate"] == 0
    assert result.components["temperature_c"] == 0
    assert result.missing == ("heart_rate", "temperature_c")
    assert result.partial is True
    assert result.score == 3  # a lower bound: only resp_rate was scored


def test_absent_keys_are_missing_and_extra_keys_ignored() -> None:
    result = news2({"heart_rate": 135, "chief_complaint": "chest pain", "age_years": 60})
    assert result.score == 3
    assert result.missing == tuple(p for p in PARAMETERS if p != "heart_rate")
    assert result.partial is True
    assert result.band == "low-medium"


def test_empty_record_is_all_missing() -> None:
    result = news2({})
    assert (result.score, result.band, result.partial) == (0, "low", True)
    assert result.missing == PARAMETERS


@pytest.mark.parametrize("missing_value", [None, math.nan, np.float64("nan"), pd.NA])
def test_missing_oxygen_counts_as_air_and_is_listed(missing_value: Any) -> None:
    # Scale 2, SpO2 97: 3 on oxygen, 0 on air; missing oxygen is scored as air, so 0 (a lower bound).
    result = news2(_record(spo2=97, spo2_scale_2=True, on_supplemental_oxygen=missing_value))
    assert result.components["spo2"] == 0
    assert result.components["on_supplemental_oxygen"] == 0
    assert result.missing == ("on_supplemental_oxygen",)
    assert result.partial is True


@pytest.mark.parametrize("missing_value", [None, "", math.nan, pd.NA])
def test_missing_consciousness(missing_value: Any) -> None:
    result = news2(_record(consciousness=missing_value))
    assert result.missing == ("consciousness",)
    assert result.components["consciousness"] == 0


def test_vectorised_counts_missing() -> None:
    records = [_record(heart_rate=None, on_supplemental_oxygen=None), _record(), {}]
    assert _arrays_for(records)["n_missing"].tolist() == [2, 0, 7]


def test_result_is_frozen() -> None:
    result = news2(NORMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.score = 5  # type: ignore[misc]
    assert isinstance(result, News2Result)


# ------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("value", ["X", "alert", "GCS15", 3])
def test_unknown_consciousness_names_field_and_value(value: Any) -> None:
    with pytest.raises(InputValidationError, match=rf"'consciousness' must be one of .*got '{value}'") as info:
        news2(_record(consciousness=value))
    assert info.value.field == "consciousness"
    with pytest.raises(InputValidationError, match="consciousness"):
        _arrays_for([_record(), _record(consciousness=value)])


@pytest.mark.parametrize(("field", "value"), [("heart_rate", "fast"), ("sbp", True), ("resp_rate", [12])])
def test_non_numeric_vital_names_field(field: str, value: Any) -> None:
    with pytest.raises(InputValidationError, match=f"'{field}' must be a number") as info:
        news2(_record(**{field: value}))
    assert info.value.field == field


@pytest.mark.parametrize(("field", "value"), [("on_supplemental_oxygen", "maybe"), ("spo2_scale_2", 2)])
def test_non_boolean_flag_names_field(field: str, value: Any) -> None:
    with pytest.raises(InputValidationError, match=f"'{field}' must be true or false") as info:
        news2(_record(**{field: value}))
    assert info.value.field == field


def test_arrays_reject_bad_boolean_shape_and_dtype() -> None:
    ok = np.array([16.0, 16.0])
    levels = np.array(["A", "A"], dtype=object)
    with pytest.raises(InputValidationError, match=r"'on_supplemental_oxygen' must hold 1\.0"):
        news2_arrays(ok, ok, np.array([0.5, 1.0]), ok, ok, levels, ok)
    with pytest.raises(InputValidationError, match="'sbp' must have shape"):
        news2_arrays(ok, ok, ok * 0, np.array([120.0]), ok, levels, ok)
    with pytest.raises(InputValidationError, match="'heart_rate' must hold numbers"):
        news2_arrays(ok, ok, ok * 0, ok, np.array(["70", "80"]), levels, ok)


# ------------------------------------------------------------------------------- scalar/vectorised parity

_EDGES: dict[str, list[float]] = {
    "resp_rate": [8, 9, 11, 12, 20, 21, 24, 25, 8.5, 20.5],
    "spo2": [83, 84, 85, 86, 87, 88, 91, 92, 93, 94, 95, 96, 97, 100, 92.5, 95.5],
    "sbp": [90, 91, 100, 101, 110, 111, 219, 220, 219.5],
    "heart_rate": [40, 41, 50, 51, 90, 91, 110, 111, 130, 131, 90.5],
    "temperature_c": [35.0, 35.1, 36.0, 36.1, 38.0, 38.1, 39.0, 39.1, 35.05],
}
_RANGES: dict[str, tuple[float, float]] = {
    "resp_rate": (0, 80),
    "spo2": (50, 100),
    "sbp": (30, 300),
    "heart_rate": (20, 300),
    "temperature_c": (25, 45),
}


def _vital(name: str) -> st.SearchStrategy[Any]:
    low, high = _RANGES[name]
    return st.one_of(
        st.none(),
        st.just(math.nan),
        st.sampled_from(_EDGES[name]),
        st.floats(low, high, allow_nan=False),
        st.integers(int(low), int(high)),
    )


_RECORDS = st.fixed_dictionaries(
    {
        **{name: _vital(name) for name in _RANGES},
        "on_supplemental_oxygen": st.one_of(st.none(), st.booleans()),
        "consciousness": st.one_of(st.none(), st.sampled_from(["A", "C", "V", "P", "U"])),
        "spo2_scale_2": st.one_of(st.none(), st.booleans()),
    }
)


def _assert_parity(records: list[dict[str, Any]]) -> None:
    arrays = _arrays_for(records)
    expected = [news2(record) for record in records]
    np.testing.assert_array_equal(arrays["score"], [r.score for r in expected])
    np.testing.assert_array_equal(arrays["red_flag"], [r.red_flag for r in expected])
    np.testing.assert_array_equal(arrays["n_missing"], [len(r.missing) for r in expected])
    np.testing.assert_array_equal(arrays["band_code"], [BANDS.index(r.band) for r in expected])
    np.testing.assert_array_equal(arrays["minimum_acuity"], [r.minimum_acuity for r in expected])
    assert arrays["score"].dtype.kind == "i"
    assert arrays["red_flag"].dtype == bool
    # the breakdown a response reports, read from the batch score, is the one-record result in full
    assert [result_at(arrays, i) for i in range(len(records))] == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(_RECORDS, min_size=1, max_size=30))
def test_vectorised_agrees_with_scalar_hypothesis(records: list[dict[str, Any]]) -> None:
    _assert_parity(records)


def test_vectorised_agrees_with_scalar_seeded() -> None:
    rng = np.random.default_rng(20170101)
    n = 5000
    records: list[dict[str, Any]] = []
    for i in range(n):
        record: dict[str, Any] = {}
        for name, (low, high) in _RANGES.items():
            draw = rng.random()
            if draw < 0.1:
                record[name] = None
            elif draw < 0.5:
                record[name] = float(rng.choice(_EDGES[name]))
            else:
                record[name] = round(float(rng.uniform(low, high)), 1)
        record["on_supplemental_oxygen"] = [None, True, False][i % 3]
        record["spo2_scale_2"] = [None, True, False, True][i % 4]
        record["consciousness"] = [None, "A", "A", "A", "C", "V", "P", "U"][int(rng.integers(8))]
        records.append(record)
    _assert_parity(records)
    assert len({news2(r).band for r in records}) == len(BANDS)  # every band exercised


def test_vectorised_default_scale_is_scale_1() -> None:
    one = np.array([16.0])
    result = news2_arrays(
        one,
        np.array([88.0]),
        np.array([0.0]),
        np.array([125.0]),
        np.array([72.0]),
        np.array(["A"], dtype=object),
        np.array([37.0]),
    )
    assert result["score"].tolist() == [3]


def test_news2_frame_matches_scalar_on_validated_frame() -> None:
    raw = pd.DataFrame(
        {
            "age_years": [70, 45, 30],
            "sex": ["female", "male", "unknown"],
            "resp_rate": [24, None, 16],
            "spo2": [95, 97, 98],
            "on_supplemental_oxygen": ["true", None, "false"],
            "sbp": [135, 85, 120],
            "heart_rate": [98, 120, None],
            "consciousness": ["A", "v", "A"],
            "temperature_c": [37.4, 39.5, 36.5],
            "spo2_scale_2": ["true", None, None],
        },
        index=[10, 11, 12],
    )
    frame, _ = validate_frame(raw)
    out = news2_frame(frame)
    assert out.index.tolist() == [10, 11, 12]
    records = [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]
    expected = [news2(r) for r in records]
    assert out["score"].tolist() == [r.score for r in expected] == [7, 10, 0]
    assert out["band"].tolist() == [r.band for r in expected]
    assert out["partial"].tolist() == [r.partial for r in expected] == [False, True, True]
    assert out["n_missing"].tolist() == [len(r.missing) for r in expected] == [0, 2, 1]
    assert out["minimum_acuity"].tolist() == [r.minimum_acuity for r in expected]


# -------------------------------------------------------------------------------------------- safety floor


@pytest.mark.parametrize(("band", "level"), [("high", 1), ("medium", 2), ("low-medium", 3), ("low", 5)])
def test_floor_mapping(band: str, level: int) -> None:
    assert minimum_acuity(band) == level
    assert FLOOR[band] == level


def test_unknown_band_names_field() -> None:
    with pytest.raises(InputValidationError, match=r"'band' must be one of .*got 'critical'") as info:
        minimum_acuity("critical")
    assert info.value.field == "band"


@pytest.mark.parametrize(
    ("model_level", "floor", "expected", "raised"),
    [
        (5, 1, 1, True),
        (4, 3, 3, True),
        (3, 3, 3, False),
        (2, 3, 2, False),
        (1, 5, 1, False),
        (5, 5, 5, False),
        (np.int64(4), 2, 2, True),
    ],
)
def test_apply_floor(model_level: int, floor: int, expected: int, raised: bool) -> None:
    level, was_raised = apply_floor(model_level, floor)
    assert (level, was_raised) == (expected, raised)
    assert type(level) is int
    assert type(was_raised) is bool


@pytest.mark.parametrize(
    ("model_level", "floor", "field"),
    [(0, 3, "model_level"), (6, 3, "model_level"), (True, 3, "model_level"), (3, 2.0, "floor"), (3, 7, "floor")],
)
def test_apply_floor_rejects_non_levels(model_level: Any, floor: Any, field: str) -> None:
    with pytest.raises(InputValidationError, match=f"'{field}' must be an acuity level") as info:
        apply_floor(model_level, floor)
    assert info.value.field == field


def test_apply_floor_arrays_agrees_with_scalar() -> None:
    pairs = [(m, f) for m in range(1, 6) for f in range(1, 6)]
    levels, raised = apply_floor_arrays(np.array([m for m, _ in pairs]), np.array([f for _, f in pairs]))
    assert levels.tolist() == [apply_floor(m, f)[0] for m, f in pairs]
    assert raised.tolist() == [apply_floor(m, f)[1] for m, f in pairs]
    with pytest.raises(InputValidationError, match="'floor' must hold integer acuity levels"):
        apply_floor_arrays(np.array([3]), np.array([0]))


def test_floor_applied_from_news2_result() -> None:
    # A model saying "non-urgent" (5) for a NEWS2-high patient is raised to level 1.
    result = news2(_record(resp_rate=30, heart_rate=140, temperature_c=38.5))
    assert result.band == "high"
    assert apply_floor(5, result.minimum_acuity) == (1, True)


def test_import_needs_neither_pandas_nor_torch() -> None:
    code = (
        "import sys, models.triage.news2, models.triage.news2_arrays; "
        "assert not {'pandas', 'torch'} & set(sys.modules), sorted(sys.modules)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=60
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
