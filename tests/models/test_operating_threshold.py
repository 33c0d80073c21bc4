"""The operating-point rule: highest threshold reaching the target sensitivity."""

from __future__ import annotations

import numpy as np
import pytest

from models.operating_point import threshold_for_sensitivity


def test_exact_count_is_not_rounded_up_by_float_error():
    # 0.55 * 100 == 55.00000000000001: the threshold must keep 55 of 100 positives, not 56.
    p = np.arange(1, 101) / 100.0
    y = np.ones(100, dtype=int)
    threshold, sens = threshold_for_sensitivity(y, p, 0.55)
    assert threshold == pytest.approx(0.46) and sens == pytest.approx(0.55)


def test_hand_example_and_validation():
    y = np.array([1, 1, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.4, 0.2, 0.5, 0.1])
    assert threshold_for_sensitivity(y, p, 0.75) == (0.4, 0.75)
    assert threshold_for_sensitivity(y, p, 0.76) == (0.2, 1.0)
    with pytest.raises(ValueError, match="target_sensitivity must be in"):
        threshold_for_sensitivity(y, p, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        threshold_for_sensitivity(y, p[:3], 0.9)
