"""The cost-sensitive acuity decision rule: brute-force expected-cost oracle."""

from __future__ import annotations

import numpy as np
import pytest

from models.triage.decision import recommend_levels


def _brute_force(probs: np.ndarray, w: float) -> np.ndarray:
    levels = np.arange(1, 6)
    out = []
    for p in probs:
        costs = [sum(p[j - 1] * (w * (k - j) if k > j else (j - k)) for j in levels) for k in levels]
        out.append(levels[int(np.argmin(np.round(costs, 12)))])
    return np.array(out)


@pytest.mark.parametrize("w", [0.5, 1.0, 2.0, 4.0])
def test_matches_expected_cost_minimiser(w):
    probs = np.random.default_rng(0).dirichlet(np.ones(5), size=500)
    np.testing.assert_array_equal(recommend_levels(probs, w), _brute_force(probs, w))


def test_weight_moves_towards_urgency():
    p = np.array([[0.05, 0.25, 0.5, 0.15, 0.05]])
    assert recommend_levels(p, 1.0)[0] == 3
    assert recommend_levels(p, 2.0)[0] == 3  # P(<=2) = 0.30 < 1/3
    assert recommend_levels(p, 3.0)[0] == 2  # P(<=2) = 0.30 >= 1/4


def test_invalid_inputs():
    with pytest.raises(ValueError, match=r"acuity_probs must have shape \[B, 5\]"):
        recommend_levels(np.ones((2, 4)) / 4, 2.0)
    with pytest.raises(ValueError, match="under_triage_weight must be > 0"):
        recommend_levels(np.ones((1, 5)) / 5, 0.0)


def _runtime(weight: float = 1.0):
    """A TriageOnnxModel whose decide() can run without an ONNX file (decide reads only the card's rule)."""
    from types import SimpleNamespace

    from models.triage.onnx import TriageOnnxModel

    model = object.__new__(TriageOnnxModel)
    model.card = SimpleNamespace(decision_rule={"under_triage_weight": weight})
    return model


def test_decide_applies_the_safety_floor_with_its_source_and_reasons():
    from models.triage.columns import columns_from_records

    well = {
        "age_years": 40.0,
        "resp_rate": 16.0,
        "spo2": 98.0,
        "on_supplemental_oxygen": False,
        "sbp": 125.0,
        "heart_rate": 72.0,
        "consciousness": "A",
        "temperature_c": 37.0,
        "chief_complaint": "cough",
    }
    records = [
        well,
        {**well, "consciousness": "P"},
        {**well, "chief_complaint": "stroke symptoms, feeling tired"},
        {**well, "age_years": 0.5, "heart_rate": 130.0, "resp_rate": 35.0},  # well infant: adult NEWS2 5
        {**well, "age_years": 0.5, "heart_rate": 130.0, "resp_rate": 65.0},  # NG51 high risk
        {**well, "resp_rate": 8.0, "heart_rate": 115.0},  # adult NEWS2 5: medium
    ]
    probs = np.tile([[0.0, 0.0, 0.0, 0.0, 1.0]], (len(records), 1))  # the model says level 5 for everyone
    outcomes = np.zeros((len(records), 2))
    pred = _runtime().decide(columns_from_records(records), probs, outcomes)
    assert pred.model_level.tolist() == [5] * 6
    assert pred.recommended_level.tolist() == [5, 1, 2, 5, 2, 2]
    assert pred.floor_level.tolist() == [5, 1, 2, 5, 2, 2]
    assert pred.floor_source.tolist() == ["none", "acvpu", "red_flag_complaint", "none", "paediatric", "news2"]
    assert pred.floor_raised.tolist() == [False, True, True, False, True, True]
    assert pred.red_flags[2] == ("stroke",)
    assert pred.floor_reasons[1] == ("consciousness P",)
    assert pred.floor_reasons[5] == ("NEWS2 5 (medium risk)",)
    # NEWS2 is still scored for the infant, but its adult floor is not applied under 16
    assert pred.news2_score[3] == 5 and pred.news2_floor[3] == 5
    assert np.all(pred.recommended_level <= pred.floor_level)
    assert np.all(pred.recommended_level <= pred.news2_floor)


def test_decide_never_lowers_an_urgent_model_level():
    from models.triage.columns import columns_from_records

    records = [{"age_years": 30.0, "consciousness": "U"}, {"age_years": 3.0, "chief_complaint": "cough"}]
    probs = np.tile([[1.0, 0.0, 0.0, 0.0, 0.0]], (2, 1))
    pred = _runtime().decide(columns_from_records(records), probs, np.zeros((2, 2)))
    assert pred.recommended_level.tolist() == [1, 1]
    assert pred.floor_raised.tolist() == [False, False]


def test_per_row_weights_and_age_band_operating_points():
    from models.triage.decision import age_band_labels, choose_band_weights, weights_by_age

    probs = np.array([[0.1, 0.2, 0.4, 0.2, 0.1]] * 4)
    assert recommend_levels(probs, np.array([1.0, 2.0, 4.0, 9.0])).tolist() == [3, 3, 2, 1]
    with pytest.raises(ValueError, match="one per row"):
        recommend_levels(probs, np.array([1.0, 2.0]))
    ages = np.array([3.0, 20.0, 80.0, np.nan])
    assert age_band_labels(ages).tolist() == ["<15", "15-24", "75+", None]
    assert weights_by_age(ages, 2.0, {"75+": 5.0, "<15": 3.0}).tolist() == [3.0, 2.0, 5.0, 2.0]
    assert weights_by_age(ages, 2.0, None).tolist() == [2.0] * 4

    # Validation: 40 true level-2 patients per band. The model puts level 2 at P(level <= 2) = 0.30 in the old,
    # 0.45 in the young: weight 2 (threshold 1/3) under-triages every old patient, so the old band's weight rises.
    rng = np.random.default_rng(0)
    young = np.tile([0.05, 0.40, 0.35, 0.15, 0.05], (40, 1))
    old = np.tile([0.05, 0.25, 0.45, 0.20, 0.05], (40, 1))
    probs = np.vstack([young, old])
    age = np.concatenate([rng.uniform(25, 44, 40), rng.uniform(75, 90, 40)])
    truth = np.full(80, 2.0)
    no_floor = np.full(80, 5)
    chosen = choose_band_weights(probs, age, truth, no_floor, 2.0, 0.30)
    assert chosen["25-44"]["weight"] == 2.0 and chosen["25-44"]["under_triage_at_weight"] == 0.0
    assert chosen["75+"]["under_triage_at_default"] == 1.0 and chosen["75+"]["under_triage_at_weight"] == 0.0
    assert 2.0 < chosen["75+"]["weight"] <= 20.0 and chosen["75+"]["reached_target"] == 1.0
    assert 1 / (1 + chosen["75+"]["weight"]) <= 0.30  # the smallest weight that reaches level 2
    assert chosen["<15"] == {
        "weight": 2.0,
        "n_high_acuity": 0,
        "under_triage_at_default": pytest.approx(np.nan, nan_ok=True),
        "under_triage_at_weight": pytest.approx(np.nan, nan_ok=True),
        "reached_target": 0.0,
    }
    # The safety floor counts: a floor at level 2 for every old patient meets the target at the stated weight.
    floored = np.where(age >= 75, 2, 5)
    assert choose_band_weights(probs, age, truth, floored, 2.0, 0.30)["75+"]["weight"] == 2.0


def test_age_band_by_sex_operating_points_and_an_unrecorded_sex_gets_the_more_urgent():
    from models.triage.decision import choose_band_weights, weights_by_age

    ages = np.array([30.0, 30.0, 30.0, 30.0, 80.0, np.nan])
    sex = np.array(["female", "male", "unknown", None, "female", "female"], dtype=object)
    cells = {"25-44|female": 6.0, "25-44|male": 3.0}
    weights = weights_by_age(ages, 2.0, {"25-44": 4.0, "75+": 5.0}, sex, cells)
    assert weights.tolist() == [6.0, 3.0, 6.0, 6.0, 5.0, 2.0]
    assert weights_by_age(ages, 2.0, None, sex, {"25-44|male": 1.0}).tolist()[1] == 2.0  # never below the stated

    # 40 women and 40 men with a true level 2 in one band: women's probabilities put less mass on levels 1-2.
    women = np.tile([0.05, 0.25, 0.45, 0.20, 0.05], (40, 1))
    men = np.tile([0.05, 0.40, 0.35, 0.15, 0.05], (40, 1))
    probs = np.vstack([women, men])
    age = np.full(80, 50.0)
    sexes = np.array(["female"] * 40 + ["male"] * 40, dtype=object)
    chosen = choose_band_weights(probs, age, np.full(80, 2.0), np.full(80, 5), 2.0, 0.30, sex=sexes)
    assert chosen["45-64|male"]["weight"] == 2.0 and chosen["45-64|female"]["weight"] > 2.0
    assert chosen["45-64|female"]["under_triage_at_weight"] == 0.0
    assert chosen["75+|female"]["n_high_acuity"] == 0 and chosen["75+|female"]["weight"] == chosen["75+"]["weight"]
