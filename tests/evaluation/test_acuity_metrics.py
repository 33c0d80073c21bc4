"""Triage-level agreement metrics against a hand-worked example (level 1 = most urgent)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.metrics.acuity import (
    acuity_confusion,
    acuity_summary,
    exact_agreement,
    high_acuity_under_triage_rate,
    over_triage_rate,
    under_triage_rate,
    weighted_kappa,
)
from models.errors import InputValidationError

# Pairs (true, predicted): (1,1) agree, (2,3) under, (3,3) agree, (4,3) over, (5,5) agree, (2,2) agree,
# (1,3) under, (3,2) over.
TRUE = np.array([1, 2, 3, 4, 5, 2, 1, 3])
PRED = np.array([1, 3, 3, 3, 5, 2, 3, 2])


def test_rates_hand_example() -> None:
    assert exact_agreement(TRUE, PRED) == pytest.approx(4 / 8)
    assert under_triage_rate(TRUE, PRED) == pytest.approx(2 / 8)
    assert over_triage_rate(TRUE, PRED) == pytest.approx(2 / 8)
    # True level <= 2: (1,1), (2,3), (2,2), (1,3): two of four predicted at level 3 or below in urgency.
    assert high_acuity_under_triage_rate(TRUE, PRED) == pytest.approx(2 / 4)
    # True level 1 only: (1,1), (1,3).
    assert high_acuity_under_triage_rate(TRUE, PRED, max_level=1) == pytest.approx(1 / 2)


def test_high_acuity_under_triage_ignores_moves_within_high_acuity() -> None:
    assert high_acuity_under_triage_rate([1, 2, 3], [2, 1, 5]) == 0.0  # 1 -> 2 is not a dangerous miss
    assert np.isnan(high_acuity_under_triage_rate([3, 4, 5], [5, 5, 5]))  # nobody truly high-acuity


def test_confusion_hand_example() -> None:
    expected = np.zeros((5, 5), dtype=np.int64)
    for t, p in [(1, 1), (1, 3), (2, 2), (2, 3), (3, 2), (3, 3), (4, 3), (5, 5)]:
        expected[t - 1, p - 1] += 1
    confusion = acuity_confusion(TRUE, PRED)
    np.testing.assert_array_equal(confusion, expected)
    assert confusion.dtype == np.int64
    assert confusion[0, 2] == 1  # row true 1, column predicted 3


def test_weighted_kappa_hand_example() -> None:
    # true [1,2,3], predicted [1,3,3]: observed weighted disagreement 1 (the 2->3 pair); expected
    # sum_ij r_i c_j w_ij / n = 9/3 (linear) and 15/3 (quadratic), so kappa = 1 - 1/3 and 1 - 1/5.
    assert weighted_kappa([1, 2, 3], [1, 3, 3]) == pytest.approx(2 / 3)
    assert weighted_kappa([1, 2, 3], [1, 3, 3], weights="quadratic") == pytest.approx(0.8)


def test_weighted_kappa_distances_count_levels_absent_from_the_data() -> None:
    # true [1,2,5], predicted [1,5,5]: levels 3 and 4 unseen but still between 2 and 5. Linear: observed
    # disagreement 3, expected (8 + 7 + 4) / 3 -> 1 - 9/19; quadratic: 9 and (32 + 19 + 16) / 3 -> 1 - 27/67.
    assert weighted_kappa([1, 2, 5], [1, 5, 5]) == pytest.approx(10 / 19)
    assert weighted_kappa([1, 2, 5], [1, 5, 5], weights="quadratic") == pytest.approx(40 / 67)


def test_weighted_kappa_perfect_and_undefined() -> None:
    levels = [1, 2, 3, 4, 5, 3, 2]
    assert weighted_kappa(levels, levels) == pytest.approx(1.0)
    assert weighted_kappa(levels, levels, weights="quadratic") == pytest.approx(1.0)
    assert np.isnan(weighted_kappa([3, 3], [3, 3]))


def test_acuity_summary_has_every_metric() -> None:
    summary = acuity_summary(TRUE, PRED)
    assert summary == pytest.approx(
        {
            "n": 8.0,
            "exact_agreement": 0.5,
            "kappa_linear": weighted_kappa(TRUE, PRED, "linear"),
            "kappa_quadratic": weighted_kappa(TRUE, PRED, "quadratic"),
            "under_triage_rate": 0.25,
            "over_triage_rate": 0.25,
            "high_acuity_under_triage_rate": 0.5,
        }
    )
    assert all(isinstance(v, float) for v in summary.values())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=1, max_size=50))
def test_rates_partition_and_agree_with_confusion(pairs: list[tuple[int, int]]) -> None:
    t = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs])
    confusion = acuity_confusion(t, p)
    n = len(pairs)
    assert confusion.sum() == n
    assert exact_agreement(t, p) == pytest.approx(np.trace(confusion) / n)
    assert under_triage_rate(t, p) == pytest.approx(np.triu(confusion, 1).sum() / n)
    assert over_triage_rate(t, p) == pytest.approx(np.tril(confusion, -1).sum() / n)
    assert exact_agreement(t, p) + under_triage_rate(t, p) + over_triage_rate(t, p) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "match"),
    [
        ([1, 2, 3], [1, 2, 6], r"y_pred must contain triage levels 1-5; got 6"),
        ([0, 2, 3], [1, 2, 3], r"y_true must contain triage levels 1-5; got 0"),
        ([1, 2.5, 3], [1, 2, 3], r"y_true must contain triage levels 1-5; got 2.5"),
        ([1, 2, 3], [1, 2], r"y_true and y_pred must have the same length; got 3 and 2"),
        ([True, False], [1, 2], r"y_true must contain triage levels, not booleans"),
    ],
)
def test_acuity_inputs_are_validated(y_true, y_pred, match) -> None:
    with pytest.raises(InputValidationError, match=match):
        acuity_summary(y_true, y_pred)


def test_acuity_arguments_are_validated() -> None:
    with pytest.raises(InputValidationError, match=r"weights must be 'linear' or 'quadratic'; got 'cubic'"):
        weighted_kappa([1, 2], [1, 2], weights="cubic")  # type: ignore[arg-type]
    with pytest.raises(InputValidationError, match=r"max_level must be one of \(1, 2, 3, 4, 5\); got 7"):
        high_acuity_under_triage_rate([1, 2], [1, 2], max_level=7)


def test_float_levels_with_integer_values_are_accepted() -> None:
    assert exact_agreement([1.0, 2.0], [1, 3]) == 0.5
