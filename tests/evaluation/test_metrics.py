"""Binary-outcome metrics: discrimination and calibration, against hand-computed and independent oracles."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.special import expit, logit
from sklearn.metrics import average_precision_score, roc_auc_score

from evaluation.metrics.calibration import (
    calibration_curve,
    calibration_slope_intercept,
    expected_calibration_error,
    observed_expected_ratio,
)
from evaluation.metrics.discrimination import auprc, auroc
from models.errors import InputValidationError

# Six rows. Positives score 0.9, 0.4, 0.7; negatives 0.8, 0.4, 0.1. Of the 9 positive/negative pairs,
# 0.9 beats all 3, 0.4 beats 0.1 and ties 0.4 (1.5), 0.7 beats 0.4 and 0.1 (2): AUROC = 6.5 / 9.
Y6 = np.array([1, 0, 1, 0, 1, 0])
P6 = np.array([0.9, 0.8, 0.4, 0.4, 0.7, 0.1])


def _concordance(y: np.ndarray, p: np.ndarray) -> float:
    pairs = [(a, b) for a, b in itertools.product(p[y == 1], p[y == 0])]
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    return (rng.random(n) < p).astype(int), p


def test_auroc_hand_example() -> None:
    assert auroc(Y6, P6) == pytest.approx(6.5 / 9)
    assert auroc(Y6, P6) == pytest.approx(_concordance(Y6, P6))


def test_auprc_hand_example() -> None:
    # Descending thresholds 0.9, 0.8, 0.7, 0.4 (tie of a positive and a negative), 0.1:
    # recall steps 1/3 at precision 1, 1/3 at 2/3, 1/3 at 3/5 -> AP = (1 + 2/3 + 3/5) / 3 = 34/45.
    assert auprc(Y6, P6) == pytest.approx(34 / 45)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=2, max_size=40).filter(
        lambda rows: len({r[0] for r in rows}) == 2
    )
)
def test_auroc_auprc_match_sklearn_with_ties(rows: list[tuple[bool, int]]) -> None:
    y = np.array([r[0] for r in rows], dtype=int)
    p = np.array([r[1] for r in rows]) / 6.0  # few distinct values: many ties
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert auroc(y, p) == pytest.approx(_concordance(y, p))
    assert auprc(y, p) == pytest.approx(average_precision_score(y, p))
    assert auroc(1 - y, p) == pytest.approx(1.0 - auroc(y, p))


def test_auroc_accepts_scores_outside_unit_interval() -> None:
    news2 = np.array([9, 8, 4, 4, 7, 1])  # an integer early-warning score ordered like P6
    assert auroc(Y6, news2) == pytest.approx(6.5 / 9)


@pytest.mark.parametrize("metric", [auroc, auprc])
@pytest.mark.parametrize("y", [[0, 0, 0], [1, 1, 1]])
def test_ranking_metrics_nan_for_one_class(metric, y) -> None:
    assert np.isnan(metric(y, [0.1, 0.5, 0.9]))


def test_ece_and_curve_hand_example() -> None:
    y = [0, 1, 0, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.6, 0.8, 1.0]
    # Two bins [0, 0.5) and [0.5, 1]: means 0.2 and 0.8, event rates 1/3 and 1; ECE = (2/15 + 1/5) / 2.
    for strategy in ("uniform", "quantile"):  # the median edge (0.45) gives the same two bins
        curve = calibration_curve(y, p, n_bins=2, strategy=strategy)
        np.testing.assert_allclose(curve["mean_predicted"], [0.2, 0.8])
        np.testing.assert_allclose(curve["observed"], [1 / 3, 1.0])
        np.testing.assert_array_equal(curve["count"], [3, 3])
        assert expected_calibration_error(y, p, n_bins=2, strategy=strategy) == pytest.approx(1 / 6)


def test_calibration_curve_drops_empty_bins_and_puts_edges_in_the_upper_bin() -> None:
    curve = calibration_curve([0, 1, 1], [0.05, 0.5, 1.0], n_bins=10, strategy="uniform")
    np.testing.assert_allclose(curve["mean_predicted"], [0.05, 0.5, 1.0])
    np.testing.assert_array_equal(curve["count"], [1, 1, 1])
    assert curve["count"].dtype == np.int64
    # Bins are [lower, upper): 0.5 sits with 0.8 in [0.5, 1], not with 0.2 in [0, 0.5).
    halves = calibration_curve([0, 1, 1], [0.2, 0.5, 0.8], n_bins=2, strategy="uniform")
    np.testing.assert_array_equal(halves["count"], [1, 2])
    np.testing.assert_allclose(halves["mean_predicted"], [0.2, 0.65])


def test_ece_near_zero_when_calibrated_and_large_when_not() -> None:
    y, p = _calibrated(20_000, seed=0)
    for strategy in ("quantile", "uniform"):
        assert expected_calibration_error(y, p, strategy=strategy) < 0.02
        # Reporting p**2 for an event of probability p under-predicts by E|p - p**2| ~ 0.16.
        assert expected_calibration_error(y, p**2, strategy=strategy) > 0.1


def _nll(beta: np.ndarray, y: np.ndarray, x: np.ndarray, offset: np.ndarray) -> float:
    eta = offset + beta[0] + (beta[1] * x if beta.size > 1 else 0.0)
    return float(np.sum(np.logaddexp(0.0, eta) - y * eta))


def test_calibration_slope_intercept_match_direct_likelihood_optimisation() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.95, 300)
    y = (rng.random(300) < expit(0.4 + 0.6 * logit(p))).astype(int)
    lp = logit(p)
    slope_fit = minimize(_nll, x0=np.zeros(2), args=(y, lp, np.zeros_like(lp)), method="BFGS", tol=1e-10)
    citl_fit = minimize(_nll, x0=np.zeros(1), args=(y, lp, lp), method="BFGS", tol=1e-10)
    slope, intercept = calibration_slope_intercept(y, p)
    assert slope == pytest.approx(slope_fit.x[1], abs=1e-4)
    assert intercept == pytest.approx(citl_fit.x[0], abs=1e-4)
    # The calibration-in-the-large score equation: expected events match observed ones.
    assert np.sum(expit(intercept + lp)) == pytest.approx(y.sum(), rel=1e-8)


def test_calibration_slope_one_when_calibrated_below_one_when_overconfident() -> None:
    y, p = _calibrated(20_000, seed=1)
    slope, intercept = calibration_slope_intercept(y, p)
    assert slope == pytest.approx(1.0, abs=0.08)
    assert intercept == pytest.approx(0.0, abs=0.05)

    over_slope, _ = calibration_slope_intercept(y, expit(2.0 * logit(p)))  # too extreme
    assert over_slope == pytest.approx(0.5, abs=0.05)
    under_slope, _ = calibration_slope_intercept(y, expit(0.5 * logit(p)))  # too timid
    assert under_slope == pytest.approx(2.0, abs=0.2)

    _, shifted = calibration_slope_intercept(y, expit(logit(p) - 1.0))  # risk under-predicted
    assert shifted == pytest.approx(1.0, abs=0.06)


def test_calibration_slope_nan_where_the_fit_does_not_exist() -> None:
    assert all(np.isnan(v) for v in calibration_slope_intercept([1, 1, 1], [0.2, 0.5, 0.9]))
    slope, intercept = calibration_slope_intercept([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])  # separation
    assert np.isnan(slope)
    assert intercept == pytest.approx(0.0, abs=1e-9)
    slope, intercept = calibration_slope_intercept([0, 1, 1, 1], [0.5] * 4)  # constant p
    assert np.isnan(slope)
    assert intercept == pytest.approx(np.log(3.0))  # logit(3/4) - logit(1/2)


def test_calibration_slope_clips_extreme_probabilities() -> None:
    slope, intercept = calibration_slope_intercept([0, 1, 0, 1, 1, 0], [0.0, 1.0, 0.3, 0.6, 0.4, 0.7])
    assert np.isfinite(slope) and np.isfinite(intercept)


def test_observed_expected_ratio() -> None:
    assert observed_expected_ratio([1, 0, 1, 0], [0.5, 0.5, 0.25, 0.25]) == pytest.approx(2 / 1.5)
    assert np.isnan(observed_expected_ratio([1, 0], [0.0, 0.0]))


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 1, 1], [0.2, 0.3], r"y and p must have the same length; got 3 and 2"),
        ([0, 2, 1], [0.2, 0.3, 0.4], r"y must contain only 0 and 1; got 2"),
        ([0, 1, 1], [0.2, 1.3, 0.4], r"p must be in \[0, 1\]; got max 1.3"),
        ([0, 1, 1], [-0.1, 1.3, 0.4], r"p must be in \[0, 1\]; got min -0.1 and max 1.3"),
        ([0, 1, 1], [0.2, np.nan, 0.4], r"p must be finite; got 1 NaN or infinite value"),
        ([[0, 1]], [0.2, 0.3], r"y must be 1-dimensional; got shape \(1, 2\)"),
        ([], [], r"y must not be empty"),
        (["a", "b"], [0.2, 0.3], r"y must be numeric; got dtype <U1"),
    ],
)
def test_calibration_inputs_are_validated(y, p, match) -> None:
    with pytest.raises(InputValidationError, match=match):
        expected_calibration_error(y, p)


def test_validation_error_is_a_value_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match="p must be") as info:
        calibration_slope_intercept([0, 1], [0.5, 2.0])
    assert info.value.field == "p"


def test_ranking_metrics_validate_finiteness_and_length() -> None:
    with pytest.raises(InputValidationError, match="p must be finite"):
        auroc([0, 1], [0.1, np.inf])
    with pytest.raises(InputValidationError, match="same length"):
        auprc([0, 1, 1], [0.1, 0.2])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_bins": 0}, r"n_bins must be an integer >= 1; got 0"),
        ({"n_bins": 2.5}, r"n_bins must be an integer >= 1; got 2.5"),
        ({"strategy": "kmeans"}, r"strategy must be 'quantile' or 'uniform'; got 'kmeans'"),
    ],
)
def test_binning_arguments_are_validated(kwargs, match) -> None:
    with pytest.raises(InputValidationError, match=match):
        calibration_curve([0, 1], [0.2, 0.8], **kwargs)


def test_wilson_interval_matches_the_textbook_values():
    from evaluation.metrics.decision import wilson_interval

    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # Newcombe (1998), z = 1.96
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(InputValidationError, match="successes"):
        wilson_interval(11, 10)


def test_expected_auroc_is_the_pair_weighted_sum_and_what_calibrated_outcomes_reach():
    from evaluation.metrics.discrimination import auroc, expected_auroc

    rng = np.random.default_rng(3)
    p = np.round(rng.uniform(0, 1, 40), 1)  # rounded: many ties
    w = np.outer(p, 1 - p)
    np.fill_diagonal(w, 0.0)
    order = (p[:, None] > p[None, :]) + 0.5 * (p[:, None] == p[None, :])
    assert expected_auroc(p) == pytest.approx(float((w * order).sum() / w.sum()), abs=1e-12)
    big = rng.uniform(0, 1, 4000)
    simulated = np.mean([auroc(rng.random(big.size) < big, big) for _ in range(50)])
    assert expected_auroc(big) == pytest.approx(simulated, abs=0.005)
    assert math.isnan(expected_auroc([0.3])) and math.isnan(expected_auroc([0.0, 0.0]))
