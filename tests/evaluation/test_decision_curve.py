"""Decision curve analysis: net benefit against a hand-worked example."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.metrics.decision import net_benefit, net_benefit_treat_all
from models.errors import InputValidationError

Y = np.array([1, 1, 0, 0, 0, 1, 0, 0, 0, 0])
P = np.array([0.9, 0.3, 0.6, 0.2, 0.1, 0.5, 0.05, 0.3, 0.15, 0.7])


def test_net_benefit_hand_example() -> None:
    # pt 0.0: everyone positive, TP 3, FP 7, weight 0          -> 0.3
    # pt 0.2: p >= 0.2 (0.2 itself included): TP 3, FP 4, 1/4 -> 0.3 - 0.4 / 4 = 0.2
    # pt 0.5: p >= 0.5: TP 2 (0.9, 0.5), FP 2 (0.6, 0.7), 1/1 -> 0.2 - 0.2 = 0.0
    np.testing.assert_allclose(net_benefit(Y, P, [0.0, 0.2, 0.5]), [0.3, 0.2, 0.0], atol=1e-12)


def test_treat_all_hand_example() -> None:
    # prevalence 0.3: 0.3 - 0.7 * pt / (1 - pt)
    np.testing.assert_allclose(net_benefit_treat_all(Y, [0.0, 0.2, 0.5]), [0.3, 0.125, -0.4])


def test_scalar_threshold_gives_a_1d_array() -> None:
    out = net_benefit(Y, P, 0.2)
    assert out.shape == (1,)
    assert net_benefit_treat_all(Y, 0.2).shape == (1,)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=30),
    st.lists(st.floats(0.0, 0.99), min_size=1, max_size=5),
)
def test_treating_everyone_equals_treat_all(y: list[bool], thresholds: list[float]) -> None:
    y_arr = np.array(y, dtype=int)
    np.testing.assert_allclose(
        net_benefit(y_arr, np.ones(len(y)), thresholds), net_benefit_treat_all(y_arr, thresholds), atol=1e-12
    )


def test_perfect_prediction_net_benefit_is_prevalence() -> None:
    np.testing.assert_allclose(net_benefit(Y, Y.astype(float), [0.1, 0.5, 0.9]), 0.3)


@pytest.mark.parametrize(
    ("thresholds", "match"),
    [
        ([0.1, 1.0], r"thresholds must be in \[0, 1\); got max 1"),
        ([-0.1], r"thresholds must be in \[0, 1\); got min -0.1"),
        ([np.nan], r"thresholds must be finite"),
        ([[0.1, 0.2]], r"thresholds must be a scalar or 1-dimensional; got shape \(1, 2\)"),
    ],
)
def test_thresholds_are_validated(thresholds, match) -> None:
    with pytest.raises(InputValidationError, match=match):
        net_benefit(Y, P, thresholds)
    with pytest.raises(InputValidationError, match=match):
        net_benefit_treat_all(Y, thresholds)
