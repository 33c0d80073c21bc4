"""Synthetic generator: determinism, plausibility, learnability and the planted SpO2 disparity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from models.errors import InputValidationError
from models.triage.record import NUMERIC_FIELDS, RECORD_FIELDS
from models.triage.record_frame import validate_frame
from training.data import DATASET_COLUMNS, frame_digest, generate_synthetic
from training.data.synthetic import COMPLAINTS, ETHNICITIES

N = 4_000


@pytest.fixture(scope="module")
def synthetic():
    return generate_synthetic(N, seed=0)


def test_same_seed_same_frame_other_seed_other_frame(synthetic) -> None:
    again = generate_synthetic(N, seed=0)
    assert again.digest == synthetic.digest
    pd.testing.assert_frame_equal(again.frame, synthetic.frame)
    assert generate_synthetic(N, seed=1).digest != synthetic.digest
    assert generate_synthetic(N - 1, seed=0).digest != synthetic.digest


def test_shape_and_identity(synthetic) -> None:
    frame = synthetic.frame
    assert list(frame.columns) == list(DATASET_COLUMNS)
    assert len(frame) == N and frame["visit_id"].is_unique
    assert synthetic.name == f"synthetic:n={N},seed=0"
    assert synthetic.digest == frame_digest(frame)
    assert synthetic.source_files == {} and synthetic.coerced == {}


def test_every_record_passes_strict_validation(synthetic) -> None:
    validated, coerced = validate_frame(synthetic.frame[list(RECORD_FIELDS)], mode="strict")
    assert coerced == {}
    for spec in NUMERIC_FIELDS:
        values = validated[spec.name].dropna()
        assert values.between(spec.low, spec.high).all(), spec.name


def test_plausible_distributions(synthetic) -> None:
    frame = synthetic.frame
    shares = frame["acuity"].value_counts(normalize=True).sort_index()
    assert list(shares.index) == [1, 2, 3, 4, 5]
    assert shares.idxmax() == 3 and shares[1] < 0.06
    admission_by_level = frame.groupby("acuity")["admitted"].mean()
    assert admission_by_level.is_monotonic_decreasing  # level 1 most often admitted
    assert 0.10 < frame["admitted"].mean() < 0.25
    assert 0.005 < frame["critical"].mean() < 0.06
    assert (frame.loc[frame["critical"] == 1, "acuity"] <= 2).mean() > 0.5
    for field in ("heart_rate", "resp_rate", "sbp", "spo2", "temperature_c"):
        assert 0.07 < frame[field].isna().mean() < 0.13, field
    assert set(frame["chief_complaint"]) <= {c[0] for c in COMPLAINTS}
    assert set(frame["ethnicity"]) == set(ETHNICITIES)
    assert set(frame["sex"]) == {"female", "male", "unknown"}
    assert set(frame["arrival_mode"]) == {"walk_in", "ambulance", "other"}
    assert frame["consciousness"].value_counts().idxmax() == "A"
    both = frame[["sbp", "dbp"]].notna().all(axis=1)
    assert (frame.loc[both, "dbp"] < frame.loc[both, "sbp"]).all()
    febrile = frame.loc[frame["chief_complaint"] == "fever", "temperature_c"].median()
    assert febrile > frame.loc[frame["chief_complaint"] == "laceration", "temperature_c"].median() + 1.0


def test_a_simple_model_can_learn_admission(synthetic) -> None:
    frame = synthetic.frame
    vitals = ["age_years", "heart_rate", "resp_rate", "sbp", "spo2", "temperature_c"]
    features = frame[vitals].fillna(frame[vitals].median())
    features = (features - features.mean()) / features.std()
    features["not_alert"] = frame["consciousness"].fillna("A").ne("A").astype(float)
    features = pd.concat([features, pd.get_dummies(frame["chief_complaint"], dtype=float)], axis=1)
    train = np.arange(len(frame)) < 3 * len(frame) // 4
    model = LogisticRegression(max_iter=1000).fit(features[train], frame["admitted"][train])
    auroc = roc_auc_score(frame["admitted"][~train], model.predict_proba(features[~train])[:, 1])
    assert 0.72 < auroc < 0.95


def test_spo2_overread_changes_only_the_group_spo2(synthetic) -> None:
    biased = generate_synthetic(N, seed=0, disparity={"spo2_overread": {"group": "nh_black", "points": 3}})
    assert biased.name.endswith("spo2_overread=nh_black+3") and biased.digest != synthetic.digest
    assert any("nh_black" in note for note in biased.notes)
    fair, unfair = synthetic.frame, biased.frame
    other = [c for c in fair.columns if c != "spo2"]
    pd.testing.assert_frame_equal(unfair[other], fair[other])
    group = fair["ethnicity"] == "nh_black"
    expected = np.minimum(fair.loc[group, "spo2"] + 3, 100)
    pd.testing.assert_series_equal(unfair.loc[group, "spo2"], expected)
    pd.testing.assert_series_equal(unfair.loc[~group, "spo2"], fair.loc[~group, "spo2"])
    raised = group & fair["spo2"].lt(100)
    assert raised.sum() > 100  # the bias reaches a real share of the group
    assert (unfair.loc[raised, "spo2"] > fair.loc[raised, "spo2"]).all()
    assert unfair["spo2"].max() == 100


@pytest.mark.parametrize(
    "disparity",
    [
        {"spo2_underread": {"group": "nh_black", "points": 3}},
        {"spo2_overread": {"group": "martian", "points": 3}},
        {"spo2_overread": {"group": "nh_black", "points": 0}},
        {"spo2_overread": {"group": "nh_black", "points": True}},
        {"spo2_overread": {"group": "nh_black"}},
    ],
)
def test_bad_disparity_specs(disparity: dict) -> None:
    with pytest.raises(InputValidationError) as info:
        generate_synthetic(10, seed=0, disparity=disparity)
    assert info.value.field == "disparity"


@pytest.mark.parametrize(("n", "seed", "field"), [(0, 0, "n"), (10, -1, "seed"), (2.5, 0, "n"), (True, 0, "n")])
def test_bad_size_or_seed(n: object, seed: object, field: str) -> None:
    with pytest.raises(InputValidationError) as info:
        generate_synthetic(n, seed)  # type: ignore[arg-type]
    assert info.value.field == field
