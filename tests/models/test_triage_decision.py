"""The cost-sensitive acuity decision rule: brute-force expected-cost oracle."""

from __future__ import annotations

import numpy as np
import pytest

from models.triage_decision import recommend_levels


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
