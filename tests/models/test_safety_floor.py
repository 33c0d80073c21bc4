"""The safety floor: ACVPU, red-flag complaints, paediatric physiology (NICE NG51) under 16, NEWS2 from 16.

Thresholds are written out literally from NICE NG51 tables 1-3, never derived from the module's own table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.triage.columns import columns_from_records
from models.triage.record_frame import validate_frame
from models.triage.safety_floor import FLOOR_SOURCES, SafetyFloor, safety_floor

#: An adult scoring 0 on NEWS2, nothing missing, benign complaint.
ADULT: dict[str, Any] = {
    "age_years": 40.0,
    "resp_rate": 16.0,
    "spo2": 98.0,
    "on_supplemental_oxygen": False,
    "sbp": 125.0,
    "heart_rate": 72.0,
    "consciousness": "A",
    "temperature_c": 37.0,
    "chief_complaint": "ankle injury",
}


def _floor(**changes: Any) -> tuple[int, str, tuple[str, ...], tuple[str, ...]]:
    record = {**ADULT, **changes}
    result = safety_floor(columns_from_records([record]))
    return int(result.level[0]), str(result.source[0]), result.reasons[0], result.red_flags[0]


def test_well_adult_has_no_floor() -> None:
    assert _floor() == (5, "none", (), ())


@pytest.mark.parametrize(("acvpu", "level"), [("U", 1), ("P", 1), ("V", 2), ("C", 2), ("A", 5), (None, 5)])
def test_acvpu_floor_at_any_age(acvpu: str | None, level: int) -> None:
    for age in (0.5, 8.0, 40.0, 90.0):
        got, source, reasons, _ = _floor(consciousness=acvpu, age_years=age)
        assert got == level, (acvpu, age)
        if level < 5:
            assert source == "acvpu"
            assert f"consciousness {acvpu}" in reasons


def test_acvpu_beats_news2_at_the_same_level_and_lists_both_reasons() -> None:
    level, source, reasons, _ = _floor(consciousness="V", resp_rate=8.0)  # NEWS2 3 + 3 = 6: medium -> 2
    assert (level, source) == (2, "acvpu")
    assert reasons == ("consciousness V", "NEWS2 6 (medium risk)")


@pytest.mark.parametrize(
    ("complaint", "level", "flags"),
    [
        ("cardiac arrest", 1, ("cardiac_arrest",)),
        ("anaphylaxis after peanuts", 1, ("anaphylaxis",)),
        ("stroke symptoms since 9am", 2, ("stroke",)),
        ("?sepsis", 2, ("sepsis",)),
        ("OD paracetamol", 2, ("overdose",)),
        ("fitting", 1, ("status_epilepticus",)),
        ("no chest pain, cough", 5, ()),
        ("ankle injury", 5, ()),
        (None, 5, ()),
    ],
)
def test_red_flag_complaint_floor(complaint: str | None, level: int, flags: tuple[str, ...]) -> None:
    got, source, reasons, found = _floor(chief_complaint=complaint)
    assert (got, found) == (level, flags)
    assert source == ("red_flag_complaint" if level < 5 else "none")
    assert all(r.startswith("complaint: ") for r in reasons)


def test_red_flags_are_reported_even_when_another_rule_sets_the_level() -> None:
    level, source, reasons, flags = _floor(chief_complaint="stroke symptoms", consciousness="U")
    assert (level, source, flags) == (1, "acvpu", ("stroke",))
    assert reasons == ("consciousness U",)


@pytest.mark.parametrize(
    ("changes", "level"),
    [
        ({}, 5),
        ({"resp_rate": 8.0}, 3),  # NEWS2 3 in one parameter: low-medium (not an NG51 criterion)
        ({"resp_rate": 8.0, "heart_rate": 115.0}, 2),  # 3 + 2 = 5: medium
        ({"resp_rate": 25.0, "heart_rate": 135.0, "sbp": 100.0}, 1),  # 3 + 3 + 2 = 8: high
    ],
)
def test_news2_floor_from_16(changes: dict[str, Any], level: int) -> None:
    for age in (16.0, 70.0, None):  # age not recorded: NEWS2 still applies
        got, source, _, _ = _floor(age_years=age, **changes)
        assert got == level
        assert source == ("news2" if level < 5 else "none")


@pytest.mark.parametrize(
    ("field", "meets", "short"),
    [("resp_rate", 25.0, 24.0), ("spo2", 91.0, 92.0), ("sbp", 90.0, 91.0), ("heart_rate", 131.0, 130.0)],
)
def test_adult_ng51_high_risk_criteria_give_level_2(field: str, meets: float, short: float) -> None:
    # NICE NG51 section 1.4 (adults): RR >= 25, new need for oxygen to keep SpO2 > 92%, SBP <= 90, HR > 130.
    for age in (16.0, 45.0, None):
        level, source, reasons, _ = _floor(age_years=age, **{field: meets})
        assert (level, source) == (2, "adult_physiology")
        assert any("NICE NG51 high risk, adult" in r for r in reasons)
        level, source, _, _ = _floor(age_years=age, **{field: short})
        assert source != "adult_physiology" and level > 2
    assert _floor(age_years=10.0, heart_rate=131.0)[1] != "adult_physiology"  # children: the paediatric rule
    assert _floor(spo2=91.0, on_supplemental_oxygen=True)[1] != "adult_physiology"  # the rule is SpO2 on air


def test_well_six_month_old_is_not_floored() -> None:
    """HR 130, RR 35, SpO2 98, 37 degC is normal at 6 months; the adult NEWS2 would score it 5 (level 2)."""
    floor = safety_floor(
        columns_from_records(
            [
                {
                    "age_years": 0.5,
                    "heart_rate": 130.0,
                    "resp_rate": 35.0,
                    "spo2": 98.0,
                    "temperature_c": 37.0,
                    "consciousness": "A",
                    "chief_complaint": "cough",
                }
            ]
        )
    )
    assert (int(floor.level[0]), floor.source[0], floor.reasons[0]) == (5, "none", ())
    assert int(floor.news2_score[0]) == 5  # reported, not applied
    assert int(floor.news2_floor[0]) == 5


# (age, field, value just meeting the NG51 high-risk criterion, value just short of it)
NG51: list[tuple[float, str, float, float]] = [
    (0.5, "resp_rate", 60, 59),
    (0.5, "heart_rate", 160, 159),
    (0.5, "heart_rate", 59, 60),
    (1.5, "resp_rate", 50, 49),
    (2.9, "heart_rate", 150, 149),
    (3.0, "resp_rate", 40, 39),
    (4.5, "heart_rate", 140, 139),
    (5.0, "resp_rate", 29, 28),
    (5.5, "heart_rate", 130, 129),
    (6.0, "resp_rate", 27, 26),
    (7.9, "heart_rate", 120, 119),
    (8.0, "resp_rate", 25, 24),
    (11.9, "heart_rate", 115, 114),
    (10.0, "heart_rate", 59, 60),
    (12.0, "resp_rate", 25, 24),
    (15.9, "heart_rate", 131, 130),
    (13.0, "sbp", 90, 91),
    (3.0, "spo2", 89, 90),
    (14.0, "spo2", 91, 92),
    (9.0, "temperature_c", 35.9, 36.0),
    (0.1, "temperature_c", 38.0, 37.9),
]


@pytest.mark.parametrize(("age", "field", "meets", "short"), NG51)
def test_paediatric_ng51_high_risk_thresholds(age: float, field: str, meets: float, short: float) -> None:
    well = {
        "age_years": age,
        "heart_rate": 100.0 if age >= 1 else 130.0,
        "resp_rate": 22.0,
        "spo2": 98.0,
        "temperature_c": 37.0,
        "sbp": 100.0,
        "consciousness": "A",
        "chief_complaint": "cough",
    }
    if age >= 8:
        well["heart_rate"] = 90.0
    at, below = (safety_floor(columns_from_records([{**well, field: v}])) for v in (meets, short))
    assert (int(at.level[0]), at.source[0]) == (2, "paediatric"), at.reasons
    assert "NICE NG51" in at.reasons[0][0]
    assert int(below.level[0]) == 5, below.reasons


def test_fever_rule_is_under_three_months_only() -> None:
    assert _floor(age_years=0.5, heart_rate=130.0, resp_rate=35.0, temperature_c=38.5)[0] == 5
    assert _floor(age_years=0.2, heart_rate=130.0, resp_rate=35.0, temperature_c=38.5)[:2] == (2, "paediatric")


def test_child_on_oxygen_is_floored_and_spo2_rule_needs_air() -> None:
    child = {"age_years": 6.0, "heart_rate": 100.0, "resp_rate": 20.0, "temperature_c": 37.0}
    level, source, reasons, _ = _floor(**child, on_supplemental_oxygen=True, spo2=85.0)
    assert (level, source) == (2, "paediatric")
    assert reasons == ("on supplemental oxygen (NICE NG51 high risk, under 16)",)


def test_paediatric_floor_never_exceeds_level_2_but_acvpu_and_red_flags_still_apply() -> None:
    child = {"age_years": 2.0, "heart_rate": 190.0, "resp_rate": 70.0, "spo2": 80.0, "temperature_c": 35.0}
    assert _floor(**child)[:2] == (2, "paediatric")
    assert _floor(**child, consciousness="P")[:2] == (1, "acvpu")
    assert _floor(age_years=2.0, chief_complaint="anaphylaxis")[:2] == (1, "red_flag_complaint")


def test_missing_values_meet_no_criterion() -> None:
    floor = safety_floor(columns_from_records([{"age_years": 1.0}, {"age_years": 30.0}]))
    assert floor.level.tolist() == [5, 5]
    assert floor.source.tolist() == ["none", "none"]


def test_batch_agrees_with_one_record_at_a_time_and_accepts_a_frame() -> None:
    rng = np.random.default_rng(3)
    records = []
    for _ in range(300):
        records.append(
            {
                "age_years": float(rng.choice([0.3, 0.9, 2.0, 4.0, 5.5, 7.0, 10.0, 13.0, 15.5, 16.0, 45.0, 85.0])),
                "heart_rate": float(rng.integers(40, 200)),
                "resp_rate": float(rng.integers(8, 70)),
                "spo2": float(rng.integers(82, 101)),
                "sbp": float(rng.integers(70, 200)),
                "temperature_c": float(np.round(rng.uniform(34.5, 40.5), 1)),
                "consciousness": rng.choice(np.array(["A", "C", "V", "P", "U", None], dtype=object)),
                "on_supplemental_oxygen": rng.choice(np.array([True, False, None], dtype=object)),
                "chief_complaint": rng.choice(
                    np.array(["cough", "SOB", "stroke", "no chest pain", "fit", None], dtype=object)
                ),
            }
        )
    batch = safety_floor(columns_from_records(records))
    assert isinstance(batch, SafetyFloor)
    for i, record in enumerate(records):
        one = safety_floor(columns_from_records([record]))
        assert (batch.level[i], batch.source[i], batch.reasons[i], batch.red_flags[i]) == (
            one.level[0],
            one.source[0],
            one.reasons[0],
            one.red_flags[0],
        )
        assert batch.source[i] in FLOOR_SOURCES
        assert (batch.level[i] < 5) == bool(batch.reasons[i])
    frame, _ = validate_frame(pd.DataFrame(records))
    np.testing.assert_array_equal(safety_floor(frame).level, batch.level)


def test_empty_batch() -> None:
    floor = safety_floor(columns_from_records([]))
    assert floor.level.shape == (0,) and floor.reasons == []
