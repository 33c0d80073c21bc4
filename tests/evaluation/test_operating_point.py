"""Operating-point metrics against hand counts."""

from __future__ import annotations

import math

import pytest

from evaluation.metrics.decision import positive_predictive_value, sensitivity, specificity
from models.errors import InputValidationError

Y = [1, 1, 1, 0, 0, 0, 0, 1]
F = [1, 0, 1, 1, 0, 0, 0, 1]


def test_hand_counts():
    assert sensitivity(Y, F) == pytest.approx(3 / 4)
    assert specificity(Y, F) == pytest.approx(3 / 4)
    assert positive_predictive_value(Y, F) == pytest.approx(3 / 4)
    assert sensitivity([1, 1, 0], [0, 1, 1]) == pytest.approx(0.5)
    assert specificity([1, 1, 0], [0, 1, 1]) == 0.0


def test_undefined_cases_are_nan():
    assert math.isnan(sensitivity([0, 0], [1, 0]))
    assert math.isnan(specificity([1, 1], [1, 0]))
    assert math.isnan(positive_predictive_value([1, 0], [0, 0]))


def test_validation():
    with pytest.raises(InputValidationError, match="flagged"):
        sensitivity([1, 0], [2, 0])
    with pytest.raises(InputValidationError, match="same length"):
        specificity([1, 0], [1])
